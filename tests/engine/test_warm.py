"""The fork server's warm-up (worker/warm.py): the data sets a worker has on disk are kept in memory,
and a process forked from it trains on them without loading them again."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from worker.datasets import _kept, keep, load_dataset


def test_a_kept_data_set_is_not_read_again_for_its_data_dir(tmp_path: Path) -> None:
    data = load_dataset("fashion-mnist", tmp_path)  # the system copy (Debian's dataset-fashion-mnist)
    assert load_dataset("fashion-mnist", tmp_path) is not data
    keep(data, tmp_path)
    try:
        assert load_dataset("fashion-mnist", tmp_path) is data
        assert load_dataset("fashion-mnist", tmp_path / "elsewhere") is not data
    finally:
        _kept.clear()


def test_importing_the_warm_up_keeps_the_data_sets_on_disk_and_starts_no_torch_work(tmp_path: Path) -> None:
    code = ("import torch, worker.warm, worker.datasets as d\n"
            "print(sorted(name for name, _ in d._kept), torch.cuda.is_initialized())")
    env = {**os.environ, "NOISYFIT_DATA_DIR": str(tmp_path), "NOISYFIT_ALLOW_DOWNLOAD": "false",
           "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[0] == "['fashion-mnist'] False", run.stdout + run.stderr
