"""/v1/datasets: uploads that can train are stored normalised; every other upload is a clear 400
(or 413) that leaves nothing behind; data sets are per user and jobs train on them by id."""

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from PIL import Image
from sqlmodel import Session, func, select

from api.main import create_app
from shared.dataset_service import dataset_key, fetch_dataset, prune_cache, stored_bytes
from shared.db import get_engine
from shared.models import DatasetRow
from shared.settings import Settings
from shared.store import get_store
from shared.errors import BadDataset, ObjectMissing, UploadTooLarge
from shared.uploads import UploadLimits, read_upload, unprintable

RNG = np.random.default_rng(0)


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def good_arrays(n: int = 30, classes: int = 3) -> dict[str, np.ndarray]:
    return {
        "x_train": RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8), "y_train": np.arange(n) % classes,
        "x_test": RNG.integers(0, 256, (6, 28, 28), dtype=np.uint8), "y_test": np.arange(6) % classes,
    }


def png(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_of(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def upload(client: TestClient, headers: dict, data: bytes, filename: str = "data.npz", name: str = "mine"):
    return client.post("/v1/datasets", data={"name": name}, files={"file": (filename, data)}, headers=headers)


@pytest.fixture
def leftovers(settings: Settings) -> Callable[[], tuple[int, int]]:
    """(rows in the dataset table, objects under datasets/) now: what an upload may leave behind."""
    def count() -> tuple[int, int]:
        with Session(get_engine(settings.database_url)) as session:
            rows = session.exec(select(func.count()).select_from(DatasetRow)).one()
        return rows, len(get_store(settings).list_prefix("datasets/"))

    return count


def test_a_good_npz_is_stored_normalised_and_described(client: TestClient, user_headers, settings):
    arrays = good_arrays()
    response = upload(client, user_headers, npz(**arrays))

    assert response.status_code == 201, response.text
    ds = response.json()
    assert ds["id"].startswith("ds_") and response.headers["location"] == f"/v1/datasets/{ds['id']}"
    assert {k: ds[k] for k in ("name", "num_classes", "channels", "size", "train_samples", "test_samples",
                               "has_clean_labels", "classes")} == {
        "name": "mine", "num_classes": 3, "channels": 1, "size": 28, "train_samples": 30, "test_samples": 6,
        "has_clean_labels": False, "classes": ["0", "1", "2"]}
    with np.load(io.BytesIO(get_store(settings).get_bytes(dataset_key(ds["id"]))), allow_pickle=False) as stored:
        assert stored["x_train"].dtype == np.uint8 and stored["x_train"].shape == (30, 1, 28, 28)
        assert np.array_equal(stored["x_train"][:, 0], arrays["x_train"])
        assert stored["y_train"].dtype == np.int64 and stored["y_test"].tolist() == arrays["y_test"].tolist()
    assert client.get(f"/v1/datasets/{ds['id']}", headers=user_headers).json() == ds


def test_float_nhwc_images_with_clean_labels_and_class_names(client: TestClient, user_headers, settings):
    x = RNG.random((20, 10, 10, 3)).astype(np.float32)
    y = np.arange(20) % 2
    response = upload(client, user_headers, npz(x_train=x, y_train=1 - y, y_train_clean=y, x_test=x[:4], y_test=y[:4],
                                                classes=np.array(["cat", "dog"])))
    assert response.status_code == 201, response.text
    ds = response.json()
    assert (ds["channels"], ds["size"], ds["has_clean_labels"], ds["classes"]) == (3, 10, True, ["cat", "dog"])
    with np.load(io.BytesIO(get_store(settings).get_bytes(dataset_key(ds["id"]))), allow_pickle=False) as stored:
        assert np.array_equal(stored["x_train"], np.rint(x.transpose(0, 3, 1, 2) * 255).astype(np.uint8))
        assert stored["y_train_clean"].tolist() == y.tolist()


def test_a_zip_of_class_folders_is_split_80_20_per_class(client: TestClient, user_headers):
    colours = {"red": (200, 10, 10), "green": (10, 200, 10), "blue": (10, 10, 200)}
    files = {f"mydata/{name}/{i}.png": png(c) for name, c in colours.items() for i in range(10)}
    files["mydata/.DS_Store"] = b"junk"
    response = upload(client, user_headers, zip_of(files), filename="mydata.zip")
    assert response.status_code == 201, response.text
    ds = response.json()
    assert (ds["num_classes"], ds["channels"], ds["size"]) == (3, 3, 16)
    assert (ds["train_samples"], ds["test_samples"]) == (24, 6)
    assert ds["classes"] == ["blue", "green", "red"], "alphabetical, as the labels"


def test_a_zip_with_train_and_test_folders_keeps_them_and_grey_images_have_one_channel(client: TestClient, user_headers):
    files = {f"{part}/{label}/{i}.png": png((v, v, v), size=12)
             for part, count in (("train", 5), ("test", 2)) for label, v in (("a", 30), ("b", 220)) for i in range(count)}
    ds = upload(client, user_headers, zip_of(files), filename="split.zip").json()
    assert (ds["channels"], ds["size"], ds["train_samples"], ds["test_samples"]) == (1, 12, 10, 4)


def test_the_split_is_seeded():
    files = {f"{label}/{i}.png": png((i * 20, 0, 0)) for label in "ab" for i in range(10)}
    data = zip_of(files)
    first, second = (read_upload(io.BytesIO(data), UploadLimits(10**7, 10**8)) for _ in range(2))
    assert all(np.array_equal(first[k], second[k]) for k in first)


def bomb() -> bytes:
    return zip_of({"x_train.npy": b"\0" * (20 * 1024 * 1024)})  # ~1000:1


REFUSED = {
    "object arrays (pickles)": (
        npz(**{**good_arrays(), "x_train": np.array([{"a": 1}] * 30, dtype=object)}), "data.npz", "object array"),
    "a 2-D image array": (npz(**{**good_arrays(), "x_train": np.zeros((30, 28), np.uint8)}), "data.npz", "[N, H, W]"),
    "5 channels": (npz(**{**good_arrays(), "x_train": np.zeros((30, 5, 28, 28), np.uint8)}), "data.npz", "C = 1"),
    "tiny images": (npz(**{**good_arrays(), "x_train": np.zeros((30, 4, 4), np.uint8)}), "data.npz", "8 to 256"),
    "train and test of other sizes": (
        npz(**{**good_arrays(), "x_test": np.zeros((6, 32, 32), np.uint8)}), "data.npz", "same channels and size"),
    "a label per image missing": (npz(**{**good_arrays(), "y_train": np.arange(29) % 3}), "data.npz", "shape (30,)"),
    "labels out of range": (
        npz(**good_arrays(), classes=np.array(["a", "b"])), "data.npz", "label 2, but there are 2 classes"),
    "a class without training samples": (
        npz(**{**good_arrays(), "y_test": np.array([0, 1, 2, 3, 0, 1])}), "data.npz", "no sample of class 3"),
    "float labels": (npz(**{**good_arrays(), "y_train": np.zeros(30)}), "data.npz", "integers"),
    "floats beyond [0, 1]": (
        npz(**{**good_arrays(), "x_train": np.full((30, 28, 28), 255.0)}), "data.npz", "outside [0, 1]"),
    "a missing array": (npz(x_train=np.zeros((3, 8, 8), np.uint8)), "data.npz", "lacks y_train, x_test, y_test"),
    "not an archive": (b"just some text", "data.npz", "neither an .npz"),
    "a truncated archive": (npz(**good_arrays())[:5000], "data.npz", "neither an .npz"),
    "a corrupt member": (None, "data.npz", "corrupt"),
    "a zip bomb": (bomb(), "data.npz", "zip bomb"),
    "images of two sizes": (zip_of({"a/1.png": png((1, 2, 3), 16), "b/1.png": png((1, 2, 3), 20)}), "x.zip",
                            "resize all images"),
    "a file that is no image": (zip_of({"a/1.png": png((1, 2, 3)), "a/notes.txt": b"hi"}), "x.zip", "not an image"),
    "a broken image": (zip_of({"a/1.png": b"\x89PNG broken", "b/1.png": png((1, 2, 3))}), "x.zip", "cannot be decoded"),
    "images outside class folders": (zip_of({"1.png": png((1, 2, 3))}), "x.zip", "one folder per class"),
}


def corrupt_member() -> bytes:
    data = bytearray(zip_of({k + ".npy": v for k, v in _npy_members(good_arrays()).items()}, zipfile.ZIP_STORED))
    data[200:260] = b"\xff" * 60  # inside the first member's data: its CRC no longer matches
    return bytes(data)


def _npy_members(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    out = {}
    for key, value in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, value)
        out[key] = buffer.getvalue()
    return out


@pytest.mark.parametrize("case", REFUSED)
def test_an_upload_that_cannot_train_is_a_400_naming_the_problem_and_leaves_nothing(
        client: TestClient, user_headers, leftovers, case):
    data, filename, words = REFUSED[case]
    before = leftovers()
    response = upload(client, user_headers, corrupt_member() if data is None else data, filename)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_dataset" and error["field"] == "file"
    assert words in error["message"], error["message"]
    assert leftovers() == before


def test_an_upload_over_the_limit_is_a_413_and_leaves_nothing(settings: Settings, make_user, leftovers):
    small = settings.model_copy(update={"max_upload_bytes": 20_000})
    headers = make_user("big")
    before = leftovers()
    with TestClient(create_app(small)) as client:
        response = upload(client, headers, npz(**good_arrays()))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert leftovers() == before
    with pytest.raises(UploadTooLarge, match="more than the 1000 allowed"):
        read_upload(io.BytesIO(npz(**good_arrays())), UploadLimits(1000, 10**8))


def test_archive_limits_refuse_before_decompressing():
    data = npz(**good_arrays())
    with pytest.raises(BadDataset, match="unpacks to .* more than the 1000 allowed"):
        read_upload(io.BytesIO(data), UploadLimits(10**7, 1000))
    with pytest.raises(BadDataset, match="holds 4 files, more than 3"):
        read_upload(io.BytesIO(data), UploadLimits(10**7, 10**8, max_members=3))


def test_a_name_and_a_file_are_required(client: TestClient, user_headers):
    no_name = client.post("/v1/datasets", files={"file": ("d.npz", npz(**good_arrays()))}, headers=user_headers)
    assert no_name.status_code == 422 and no_name.json()["error"]["field"] == "name"
    no_file = client.post("/v1/datasets", data={"name": "x"}, headers=user_headers)
    assert no_file.status_code == 422 and no_file.json()["error"]["field"] == "file"


def test_data_sets_are_per_user(client: TestClient, user_headers, other_user_headers):
    ds = upload(client, user_headers, npz(**good_arrays()), name="alice's").json()
    assert [d["id"] for d in client.get("/v1/datasets", headers=user_headers).json()["datasets"]] == [ds["id"]]
    assert client.get("/v1/datasets", headers=other_user_headers).json() == {"datasets": []}
    for method in ("GET", "DELETE"):
        response = client.request(method, f"/v1/datasets/{ds['id']}", headers=other_user_headers)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    spec = {"dataset": ds["id"], "loss": "ce", "epochs": 1}
    refused = client.post("/v1/jobs", json=spec, headers=other_user_headers)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "dataset"


def test_a_job_on_an_uploaded_data_set_resolves_with_its_classes(client: TestClient, user_headers):
    ds = upload(client, user_headers, npz(**good_arrays())).json()
    spec = {"dataset": ds["id"], "loss": "nce+rce", "noise": {"type": "pairflip", "rate": 0.2}, "epochs": 1}
    job = client.post("/v1/jobs", json=spec, headers=user_headers)
    assert job.status_code == 201, job.text
    assert job.json()["spec"]["num_classes"] == 3 and job.json()["spec"]["augment"] == "none"
    asym = client.post("/v1/jobs", json={**spec, "noise": {"type": "asymmetric", "rate": 0.2}}, headers=user_headers)
    assert asym.status_code == 422 and asym.json()["error"]["field"] == "noise.type"
    table3 = client.post("/v1/sweeps", json={"base": spec, "preset": "table3"}, headers=user_headers)
    assert table3.status_code == 422 and table3.json()["error"]["field"] == "dataset"


def test_delete_removes_row_and_object_but_not_while_a_job_uses_it(
        client: TestClient, user_headers, settings: Settings):
    ds = upload(client, user_headers, npz(**good_arrays())).json()
    job = client.post("/v1/jobs", json={"dataset": ds["id"], "loss": "ce", "epochs": 1}, headers=user_headers).json()
    busy = client.delete(f"/v1/datasets/{ds['id']}", headers=user_headers)
    assert busy.status_code == 409 and job["id"] in busy.json()["error"]["message"]
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=user_headers)

    assert client.delete(f"/v1/datasets/{ds['id']}", headers=user_headers).status_code == 204
    assert client.get(f"/v1/datasets/{ds['id']}", headers=user_headers).status_code == 404
    assert get_store(settings).list_prefix(f"datasets/{ds['id']}/") == []


def test_the_worker_fetches_an_upload_once_into_its_data_dir(client: TestClient, user_headers, settings, tmp_path: Path):
    ds = upload(client, user_headers, npz(**good_arrays())).json()
    target = tmp_path / "uploads" / f"{ds['id']}.npz"
    assert fetch_dataset(get_store(settings), ds["id"], target) == target
    with np.load(target, allow_pickle=False) as stored:
        assert stored["x_train"].shape == (30, 1, 28, 28)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name], "no partial file left"
    target.write_bytes(b"kept")
    fetch_dataset(get_store(settings), ds["id"], target)
    assert target.read_bytes() == b"kept", "a data set never changes: no second download"


def test_images_that_decode_beyond_the_budget_are_refused():
    files = {f"{label}/{i}.png": png((0, 0, 0), size=64) for label in "ab" for i in range(3)}  # 12 KiB each decoded
    with pytest.raises(BadDataset, match="decode to more than 50000 bytes"):
        read_upload(io.BytesIO(zip_of(files)), UploadLimits(10**7, 50_000))


def grey16_png(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_16_bit_grey_images_are_scaled_to_8_bits_not_clipped(client: TestClient, user_headers, settings):
    """A 16-bit PNG's 0..65535 becomes 0..255 (value / 257, rounded); Pillow's own conversion clips at 255."""
    ramp = (np.arange(16 * 16).reshape(16, 16) * 257 + np.arange(16)[:, None] * 7).clip(0, 65535)
    files = {f"{label}/{i}.png": grey16_png(ramp if i == 0 else np.full((16, 16), 1000 * (i + 1) + 40000 * (label == "b")))
             for label in "ab" for i in range(5)}
    ds = upload(client, user_headers, zip_of(files), filename="deep.zip")
    assert ds.status_code == 201, ds.text
    assert ds.json()["channels"] == 1
    with np.load(io.BytesIO(get_store(settings).get_bytes(dataset_key(ds.json()["id"]))), allow_pickle=False) as stored:
        images = np.concatenate([stored["x_train"], stored["x_test"]])[:, 0]
    assert any(np.array_equal(image, np.rint(ramp / 257).astype(np.uint8)) for image in images)
    assert images.max() == 255 and len(np.unique(images)) > 200, "the ramp keeps its levels"


def test_an_upload_that_needs_more_memory_than_the_sandbox_is_a_413_and_the_api_lives(
        settings: Settings, make_user, leftovers):
    """The checker runs out of address space (RLIMIT_AS) on a 96 MiB array, not the API."""
    tight = settings.model_copy(update={"upload_check_memory_bytes": 256 * 2**20})
    headers = make_user("bigmem")
    n = 96 * 2**20 // (32 * 32 * 3)
    x = np.zeros((n, 32, 32, 3), np.uint8)
    x[:, ::4, ::8, 0] = RNG.integers(0, 256, (n, 8, 4), dtype=np.uint8)  # compresses about 50:1
    data = _savez_compressed(x_train=x, y_train=np.arange(n) % 3, x_test=x[:6], y_test=np.arange(6) % 3)
    before = leftovers()
    with TestClient(create_app(tight)) as client:
        response = upload(client, headers, data)
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "request_too_large" and "memory" in error["message"], error
        assert upload(client, headers, npz(**good_arrays())).status_code == 201, "the API and the checker live on"
    assert leftovers()[0] == before[0] + 1


def test_an_upload_that_needs_more_cpu_time_than_the_sandbox_is_a_413(settings: Settings, make_user, leftovers):
    """RLIMIT_CPU stops the checker (1 s here) that inflates and converts 400 MiB."""
    slow = settings.model_copy(update={"upload_check_cpu_s": 1})
    headers = make_user("bigcpu")
    n = 400 * 2**20 // (64 * 64)
    x = np.zeros((n // 4, 64, 64), np.float32)  # float: every pixel is checked and converted
    x[:, ::8, ::8] = RNG.random((n // 4, 8, 8), dtype=np.float32)
    data = _savez_compressed(x_train=x, y_train=np.arange(len(x)) % 3, x_test=x[:6], y_test=np.arange(6) % 3)
    before = leftovers()
    with TestClient(create_app(slow)) as client:
        response = upload(client, headers, data)
    assert response.status_code == 413, response.text
    assert "CPU" in response.json()["error"]["message"]
    assert leftovers() == before


def _savez_compressed(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_a_user_may_store_data_sets_up_to_the_quota(settings: Settings, make_user, leftovers):
    one = stored_bytes(30, 6, 1, 28, False)  # good_arrays(): 30 + 6 images of 28×28, grey
    quota = settings.model_copy(update={"storage_quota_bytes": 2 * one + 100})
    headers, other = make_user("quota"), make_user("quota-other")
    with TestClient(create_app(quota)) as client:
        first, second = (upload(client, headers, npz(**good_arrays()), name=n).json()["id"] for n in ("one", "two"))
        before = leftovers()
        refused = upload(client, headers, npz(**good_arrays()), name="three")
        assert refused.status_code == 413, refused.text
        error = refused.json()["error"]
        assert error["code"] == "storage_quota_exceeded" and error["field"] == "file"
        assert f"{2 * one / 2**20:.1f} MiB of your {(2 * one + 100) / 2**20:.1f} MiB" in error["message"]
        assert first in error["message"] and second in error["message"] and "DELETE /v1/datasets" in error["message"]
        assert leftovers() == before, "nothing stored"
        assert upload(client, other, npz(**good_arrays())).status_code == 201, "per user"
        assert client.delete(f"/v1/datasets/{first}", headers=headers).status_code == 204
        assert upload(client, headers, npz(**good_arrays()), name="three").status_code == 201


def test_the_quota_counts_what_is_stored(client: TestClient, user_headers, settings):
    ds = upload(client, user_headers, npz(**good_arrays(), y_train_clean=np.arange(30) % 3)).json()
    stored = get_store(settings).stat(dataset_key(ds["id"])).size
    counted = stored_bytes(ds["train_samples"], ds["test_samples"], ds["channels"], ds["size"], ds["has_clean_labels"])
    assert counted <= stored <= counted + 2048, "the .npz adds only its headers"


def test_a_worker_drops_its_cached_copies_of_deleted_uploads(client: TestClient, user_headers, settings, tmp_path):
    store = get_store(settings)
    kept, deleted, other = (upload(client, user_headers, npz(**good_arrays())).json()["id"] for _ in range(3))
    folder = tmp_path / "uploads"
    for ds_id in (kept, deleted, other):
        fetch_dataset(store, ds_id, folder / f"{ds_id}.npz")
    for ds_id in (deleted, other):
        assert client.delete(f"/v1/datasets/{ds_id}", headers=user_headers).status_code == 204

    with pytest.raises(ObjectMissing):
        fetch_dataset(store, deleted, folder / f"{deleted}.npz")
    assert sorted(p.name for p in folder.iterdir()) == [f"{kept}.npz"], "both deleted copies are gone"
    assert fetch_dataset(store, kept, folder / f"{kept}.npz").is_file()
    assert prune_cache(store, folder) == []


@settings_(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.text(min_size=1, max_size=30).filter(lambda t: unprintable(t) is not None))
def test_a_data_set_name_with_a_control_character_is_a_422(client: TestClient, user_headers, name: str):
    response = upload(client, user_headers, b"not even looked at", name=name)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "name" and "control character" in error["message"]
