"""The data holder (worker/resident.py) on this CPU: a real holder process lends Fashion-MNIST's
images to other processes as shared memory, and a job trained on lent images ends exactly as the
same job on its own copy. On a GPU the same holder lends device memory (test_resident_cuda.py);
a worker starting, using and restarting its holder is tests/reliability/test_resident.py.
"""

import dataclasses
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from shared.spec import JobSpec, resolve_spec
from worker.datasets import SYSTEM_DATA_DIRS, LoadedData, load_dataset
from worker.resident import Lender, LentImages, borrow, lends, start_holder
from worker.runner import make_labels, prepare_data, run_job
from worker.sinks import LocalSink

CONTEXT = multiprocessing.get_context("forkserver")  # as a worker starts its holder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SYSTEM_DATA_DIRS[0] / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("the Debian package dataset-fashion-mnist is not installed: run scripts/setup.sh")
    folder = tmp_path_factory.mktemp("data")
    load_dataset("fashion-mnist", folder)  # writes the cache the holder reads
    return folder


@pytest.fixture(scope="module")
def fashion(data_dir: Path) -> LoadedData:
    return load_dataset("fashion-mnist", data_dir)


@pytest.fixture(scope="module")
def holder() -> Iterator[tuple[multiprocessing.process.BaseProcess, Lender]]:
    process, lender = start_holder(CONTEXT, "cpu")
    yield process, lender
    process.kill()
    process.join()


def borrowed_pixel(lender: Lender, data_dir: Path, replies: multiprocessing.connection.Connection,
                   write: int | None) -> None:
    """In another process: borrow Fashion-MNIST, write its first pixel when asked, say what it reads."""
    images = borrow(lender, "fashion-mnist", data_dir)
    if write is not None:
        images.x_train[0, 0, 0, 0] = write
    replies.send(int(images.x_train[0, 0, 0, 0]))


def in_another_process(*args: object) -> int:
    replies, reply = CONTEXT.Pipe(duplex=False)
    process = CONTEXT.Process(target=borrowed_pixel, args=(*args[:2], reply, *args[2:]))
    process.start()
    reply.close()
    value = replies.recv()
    process.join()
    return value


def test_the_holder_lends_the_data_sets_images_to_every_process_that_asks_as_one_shared_memory(holder, data_dir,
                                                                                            fashion):
    _, lender = holder
    lent = borrow(lender, "fashion-mnist", data_dir)
    assert isinstance(lent, LentImages) and lent.name == "fashion-mnist"
    assert torch.equal(lent.x_train, fashion.x_train) and torch.equal(lent.x_test, fashion.x_test)
    assert lent.x_train.is_shared() and lent.x_test.is_shared()
    # One memory for all: what one borrower writes (never done outside this test) another reads.
    original = int(fashion.x_train[0, 0, 0, 0])
    assert in_another_process(lender, data_dir, original + 1) == original + 1
    assert in_another_process(lender, data_dir, None) == original + 1
    assert int(lent.x_train[0, 0, 0, 0]) == original + 1
    in_another_process(lender, data_dir, original)


def test_without_a_holder_that_can_lend_a_job_is_told_none_and_copies_its_own(holder, data_dir, tmp_path, caplog):
    _, lender = holder
    assert borrow(None, "fashion-mnist", data_dir) is None
    assert borrow(lender, "ds_0123456789abcdef", data_dir) is None  # a user's data set: not lent
    assert borrow(lender, "cifar10", tmp_path) is None  # the holder cannot load it: it says why
    assert "the data holder cannot lend cifar10 (DatasetUnavailable: CIFAR-10 not found" in caplog.text
    stranger = Lender(lender.address, b"not the key")
    assert borrow(stranger, "fashion-mnist", data_dir) is None
    assert borrow(lender, "fashion-mnist", data_dir) is not None  # the holder still serves after a stranger
    process, other = start_holder(CONTEXT, "cpu")
    process.kill()
    process.join()
    assert borrow(other, "fashion-mnist", data_dir) is None
    assert "the data holder could not be reached" in caplog.text


def test_which_workers_lend():
    assert lends("auto", "cuda") and not lends("auto", "cpu")
    assert lends("on", "cpu") and lends("on", "cuda")
    assert not lends("off", "cuda")


def spec_for(**fields: object):
    base = {"dataset": "fashion-mnist", "noise": {"type": "symmetric", "rate": 0.4}, "epochs": 1}
    return resolve_spec(JobSpec(**{**base, **fields}))


def test_a_job_on_lent_images_ends_bit_for_bit_as_the_job_on_its_own_copy(holder, data_dir, tmp_path):
    lent = borrow(holder[1], "fashion-mnist", data_dir)
    spec = spec_for(train_size=400, validation_split=0.25, loss="nce+rce")
    own = run_job(spec, LocalSink(tmp_path / "own"), data_dir, device="cpu")
    borrowed = run_job(spec, LocalSink(tmp_path / "lent"), data_dir, device="cpu", images=lent)
    assert borrowed["history"] == [{**epoch, "epoch_seconds": b["epoch_seconds"],
                                    "samples_per_second": b["samples_per_second"]}
                                   for epoch, b in zip(own["history"], borrowed["history"])]
    assert borrowed["final_test_accuracy"] == own["final_test_accuracy"]
    assert borrowed["final_val_accuracy"] == own["final_val_accuracy"]


def test_the_whole_training_set_is_the_lent_tensor_itself_and_trains_as_a_copy_does(fashion, tmp_path):
    small = dataclasses.replace(fashion, x_train=fashion.x_train[:600], y_train=fashion.y_train[:600],
                                x_test=fashion.x_test[:300], y_test=fashion.y_test[:300])
    lent = LentImages("fashion-mnist", small.x_train.clone().share_memory_(), small.x_test.clone().share_memory_())
    spec = spec_for(loss="ce")  # no train_size, no validation: every training sample
    data = prepare_data(small, make_labels(spec, small), lent)
    assert data.x_train is lent.x_train and data.x_test is lent.x_test
    subset = prepare_data(small, make_labels(spec_for(train_size=100), small), lent)
    assert subset.x_train.data_ptr() != lent.x_train.data_ptr()  # a subset is gathered, its own
    own = run_job(spec, LocalSink(tmp_path / "own"), None, device="cpu", dataset=small)
    borrowed = run_job(spec, LocalSink(tmp_path / "lent"), None, device="cpu", dataset=small, images=lent)
    assert [e["train_loss"] for e in borrowed["history"]] == [e["train_loss"] for e in own["history"]]
    assert borrowed["final_test_accuracy"] == own["final_test_accuracy"]
    assert torch.equal(lent.x_train, small.x_train)  # training left the lent images as they were


def test_lent_images_of_another_data_set_or_shape_are_not_used(fashion, tmp_path, caplog):
    spec = spec_for(train_size=100, loss="ce")
    wrong = LentImages("fashion-mnist", fashion.x_train[:10], fashion.x_test)
    result = run_job(spec, LocalSink(tmp_path), None, device="cpu", dataset=fashion, images=wrong)
    assert result["epochs_completed"] == 1
    assert "lent images of fashion-mnist do not match the data set fashion-mnist" in caplog.text
