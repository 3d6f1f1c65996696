"""Checkpoints load only with weights_only=True: a checkpoint that would run code when
unpickled (a "pickle bomb") is refused by worker.checkpoints, and its code never runs."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from worker import checkpoints


class _Bomb:
    """Unpickling this runs a shell command (what a hostile checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _bomb_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint shaped like ours (model weights and meta) with the bomb inside its meta."""
    torch.save({"model": {"w": torch.zeros(2)}, "model_name": "cnn4", "num_classes": 10, "in_channels": 1,
                "image_size": [28, 28], "mean": [0.5], "std": [0.5], "spec": _Bomb(marker)}, path)
    return path


def test_the_bomb_is_real(tmp_path: Path) -> None:
    """Loaded the unsafe way, the file does run its code: the refusal below means something."""
    marker = tmp_path / "unsafe-ran"
    path = _bomb_checkpoint(tmp_path / "bomb.pt", marker)
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"], check=True)
    assert marker.exists()


@pytest.mark.parametrize("as_bytes", [False, True], ids=["path", "bytes"])
def test_pickle_bomb_checkpoint_is_refused(tmp_path: Path, as_bytes: bool) -> None:
    marker = tmp_path / "bomb-ran"
    path = _bomb_checkpoint(tmp_path / "checkpoint.pt", marker)
    source = path.read_bytes() if as_bytes else path
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        checkpoints.load_model(source)
    with pytest.raises(pickle.UnpicklingError):
        checkpoints.read_resume(path.read_bytes())
    assert not marker.exists(), "the checkpoint ran code while loading"


def test_a_plain_pickle_is_not_a_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "plain-ran"
    data = pickle.dumps(_Bomb(marker), protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        checkpoints.load_model(data)
    assert not marker.exists()
