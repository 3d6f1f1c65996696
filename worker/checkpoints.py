"""Checkpoints as bytes, for any artifact sink: resume points and the final model.

Both hold only tensors and plain containers, so they load with torch.load(weights_only=True),
which runs no code from the file.

    resume = read_resume(sink.get("resume.pt"))        # → train(spec, data, resume=resume)
    model, meta = load_model("runs/demo/checkpoint.pt")  # meta: spec, mean, std, ...
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch
from torch import nn

from worker.models import build_model
from worker.trainer import PreparedData, TrainState


def to_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes | str | os.PathLike[str], device: str | torch.device = "cpu") -> Any:
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    return torch.load(source, map_location=device, weights_only=True)


def resume_checkpoint(state: TrainState) -> bytes:
    """Model, optimizer and scheduler state, epoch, step, history, best accuracy and spec."""
    return to_bytes(state.state_dict())


def read_resume(data: bytes) -> dict[str, Any]:
    return from_bytes(data)


def final_checkpoint(state: TrainState, data: PreparedData) -> bytes:
    """The trained weights and what it takes to rebuild the model and feed it."""
    return to_bytes(
        {
            "model": {k: v.detach().cpu().contiguous() for k, v in state.model.state_dict().items()},
            "spec": state.spec.to_json(),
            "model_name": state.spec.model,
            "num_classes": data.num_classes,
            "in_channels": data.in_channels,
            "image_size": list(data.image_size),
            "mean": list(data.mean),
            "std": list(data.std),
        }
    )


def load_model(path_or_bytes: bytes | str | os.PathLike[str], device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model of a final checkpoint in eval mode, and the rest of the checkpoint as meta.

    Inputs are uint8-scale images normalized with meta["mean"], meta["std"]
    (worker.trainer.standardize does it)."""
    saved = from_bytes(path_or_bytes)
    meta = {k: v for k, v in saved.items() if k != "model"}
    model = build_model(meta["model_name"], meta["num_classes"], meta["in_channels"], meta["image_size"])
    model.load_state_dict(saved["model"])
    return model.to(device).eval(), meta
