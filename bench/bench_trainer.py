"""Training throughput: a plain DataLoader loop, as the paper's authors train, against our trainer.

Both train the same model on the same samples with the same optimizer, schedule, gradient
clipping, loss and batch size, in fp32. The baseline reads samples one by one through
torchvision's dataset code (uint8 array → PIL image → per-sample transforms → collate); ours keeps
the data set on the device and augments whole batches (worker/trainer.py). Only the training
passes are timed; both evaluate nothing in between (ours evaluates, untimed).

    python bench/bench_trainer.py                                   # Fashion-MNIST, cnn4, CPU
    python bench/bench_trainer.py --dataset cifar10-synthetic --device cuda --train-size 50000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
import torchvision.transforms as T
from torch import nn
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.settings import get_settings  # noqa: E402
from shared.spec import JobSpec, ResolvedSpec, resolve_spec  # noqa: E402
from worker.datasets import load_dataset  # noqa: E402
from worker.losses import loss_for  # noqa: E402
from worker.models import build_model  # noqa: E402
from worker.trainer import SCHEDULES, PreparedData, train  # noqa: E402

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def torchvision_dataset(images: torch.Tensor, labels: torch.Tensor, transform: T.Compose) -> Dataset:
    """torchvision's own FashionMNIST / CIFAR10 dataset over our arrays: their per-item code
    (array → PIL image → transform), without their files."""
    if images.shape[1] == 1:
        dataset = object.__new__(torchvision.datasets.FashionMNIST)
        dataset.data, dataset.targets = images[:, 0], labels  # as torchvision keeps them
    else:
        dataset = object.__new__(torchvision.datasets.CIFAR10)
        dataset.data, dataset.targets = images.permute(0, 2, 3, 1).numpy(), labels.tolist()
    dataset.transform, dataset.target_transform = transform, None
    return dataset


def baseline_transform(spec: ResolvedSpec, mean: tuple, std: tuple) -> T.Compose:
    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if spec.augment == "crop-flip" else []
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def baseline(spec: ResolvedSpec, data: PreparedData, device: str, workers: int) -> list[float]:
    """Images per second of each epoch of the plain loop."""
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, data.num_classes, data.in_channels, data.image_size).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=spec.lr, momentum=spec.momentum,
        nesterov=spec.nesterov, weight_decay=spec.weight_decay,
    )  # fmt: skip
    scheduler = SCHEDULES[spec.schedule](optimizer, spec)
    loss_fn = loss_for(spec)
    dataset = torchvision_dataset(data.x_train, data.y_train, baseline_transform(spec, data.mean, data.std))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=spec.batch_size, shuffle=True, num_workers=workers, pin_memory=device == "cuda"
    )
    rates, meters = [], []
    for _ in range(spec.epochs):
        model.train()
        started = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            optimizer.step()
            meters.append((loss.item(), top1(logits, y)))  # the authors log loss and accuracy per step
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(len(dataset) / (time.perf_counter() - started))
        scheduler.step()
    return rates


def ours(spec: ResolvedSpec, data: PreparedData, device: str) -> list[float]:
    return [m["samples_per_second"] for m in train(spec, data, device=device).history]


def bench_data(name: str, train_size: int) -> tuple[dict, PreparedData]:
    if name == "fashion-mnist":
        ds = load_dataset("fashion-mnist", get_settings().data_dir)
        x, y, x_test, y_test, mean, std = ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.mean, ds.std
        dataset = "fashion-mnist"
    else:  # random images of CIFAR-10's shape: the throughput of cnn8 does not depend on them
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (train_size, 3, 32, 32), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (train_size,), generator=g)
        x_test, y_test, mean, std = x[:1000], y[:1000], CIFAR10_MEAN, CIFAR10_STD
        dataset = "cifar10"
    data = PreparedData(x[:train_size], y[:train_size], x_test, y_test, 10, tuple(mean), tuple(std))
    return {"dataset": dataset}, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["fashion-mnist", "cifar10-synthetic"], default="fashion-mnist")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=5_000)
    parser.add_argument("--loss", default="ce")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the baseline")
    parser.add_argument("--rounds", type=int, default=5, help="alternate the two this many times (shared machines)")
    args = parser.parse_args()

    fields, data = bench_data(args.dataset, args.train_size)
    spec = resolve_spec(JobSpec(**fields, loss=args.loss, epochs=args.epochs, precision="fp32"))
    print(
        f"{args.dataset}: {spec.model}, {len(data.y_train)} samples, batch {spec.batch_size}, "
        f"augment {spec.augment}, loss {spec.loss}, {args.epochs} epochs × {args.rounds} rounds, "
        f"device {args.device}, {torch.get_num_threads()} threads"
    )
    rates: dict[str, list[float]] = {"dataloader": [], "noisyfit": []}
    for _ in range(args.rounds):
        rates["dataloader"] += baseline(spec, data, args.device, args.workers)
        rates["noisyfit"] += ours(spec, data, args.device)
    for name, values in rates.items():
        print(f"{name:>10}: median {statistics.median(values):8.0f} img/s, best {max(values):8.0f} img/s  "
              f"(epochs: {' '.join(f'{v:.0f}' for v in values)})")  # fmt: skip
    ratio = statistics.median(rates["noisyfit"]) / statistics.median(rates["dataloader"])
    best = max(rates["noisyfit"]) / max(rates["dataloader"])
    print(f"speed-up: {ratio:.2f}× (medians), {best:.2f}× (bests)")


if __name__ == "__main__":
    main()
