"""Measure what each model keeps for its backward pass, per sample: the activation factors of
worker/device_memory.py's MODEL_MEMORY table (the memory a packing GPU worker admits a job by).

    python bench/activation_memory.py            # prints the table's rows; --check compares them

Method: the model is built as the trainer builds it (channels_last, train mode) at the image size
of its data set, and one forward pass runs on the CPU under torch.autograd.graph.saved_tensors_hooks
at batch 2 and at batch 4, in fp32 and under bf16 autocast. Every tensor autograd saves for the
backward pass is counted once (by its storage), the parameters themselves excepted (they are
counted as weights). Per sample = the growth from batch 2 to 4, halved; fixed = what is left at
batch 2 (batch-norm statistics; under bf16, the bf16 copies of the weights). Saved tensors are
what a training step holds at its peak, between forward and backward; what the GPU's allocator
adds on top (gradients of activations in flight, cuDNN workspace, rounding) is the table's
HEADROOM and WORKSPACE_BYTES, and a job's first epoch measures the real figure on the device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from shared.catalog import PRECISIONS  # noqa: E402
from worker.device_memory import MODEL_MEMORY, TABLE_CLASSES, ModelMemory  # noqa: E402
from worker.models import MODELS, build_model  # noqa: E402
from worker.trainer import autocast  # noqa: E402

BATCHES = (2, 4)


def saved_bytes(model: torch.nn.Module, x: torch.Tensor, precision: str) -> int:
    """Bytes of the distinct storages autograd saves in one forward pass, parameters excepted."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with autocast(torch.device("cpu"), precision):
            model(x)
    return sum(saved.values())


def measure(name: str) -> ModelMemory:
    info = MODELS[name]
    torch.manual_seed(0)
    model = build_model(name, TABLE_CLASSES[name]).to(memory_format=torch.channels_last).train()
    per_sample, fixed = {}, {}
    for precision in PRECISIONS:
        small, large = (saved_bytes(model, torch.randn(n, info.in_channels, *info.image_size)
                                    .contiguous(memory_format=torch.channels_last), precision) for n in BATCHES)
        per_sample[precision] = (large - small) // (BATCHES[1] - BATCHES[0])
        fixed[precision] = small - BATCHES[0] * per_sample[precision]
    return ModelMemory(sum(p.numel() for p in model.parameters()), info.image_size[0] * info.image_size[1],
                       per_sample, fixed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 unless the table holds these figures")
    parser.add_argument("--models", nargs="*", default=list(MODEL_MEMORY))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    wrong = []
    for name in args.models:
        measured = measure(name)
        print(f'    "{name}": {measured!r},')
        mib = {p: f"{measured.per_sample[p] / 2**20:.2f}" for p in PRECISIONS}
        print(f"    # {measured.params:,} parameters; saved activations MiB per sample: {mib}", file=sys.stderr)
        if measured != MODEL_MEMORY[name]:
            wrong.append(name)
    if args.check and wrong:
        print(f"MODEL_MEMORY differs from the measurement for: {', '.join(wrong)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
