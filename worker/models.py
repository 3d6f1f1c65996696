"""Networks of the paper: the 4- and 8-layer CNNs, CIFAR-style ResNets, ImageNet ResNet-50."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

Size = tuple[int, int]
Builder = Callable[[int, int, Size], nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    build: Builder
    in_channels: int
    image_size: Size


MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, in_channels: int = 3, image_size: int = 32) -> Callable[[Builder], Builder]:
    def register(build: Builder) -> Builder:
        MODELS[name] = ModelInfo(build, in_channels, (image_size, image_size))
        return build

    return register


def build_model(
    name: str,
    num_classes: int,
    in_channels: int | None = None,
    image_size: int | Sequence[int] | None = None,
) -> nn.Module:
    """A freshly initialised model; seed with torch.manual_seed before calling.

    in_channels and image_size default to the model's data set (cnn4: 1×28×28, others 3×32×32).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    info = MODELS[name]
    size = info.image_size if image_size is None else _as_size(image_size)
    channels = info.in_channels if in_channels is None else in_channels
    return info.build(num_classes, channels, size)


def _as_size(image_size: int | Sequence[int]) -> Size:
    if isinstance(image_size, int):
        return (image_size, image_size)
    height, width = image_size
    return (int(height), int(width))


# ---------------------------------------------------------------------------------------
# The paper's CNNs (layer by layer as the reference code)
# ---------------------------------------------------------------------------------------


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class PaperCNN(nn.Module):
    """Blocks of [conv3×3 + BN + ReLU]×n + max-pool 2, then FC + BN1d + ReLU, then FC."""

    def __init__(
        self, blocks: Sequence[Sequence[int]], hidden: int, num_classes: int, in_channels: int, image_size: Size
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        height, width = image_size
        for block in blocks:
            for out in block:
                layers += _conv_bn_relu(channels, out)
                channels = out
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        self.image_size = image_size
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * width, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        self.apply(_paper_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"this network was built for {self.image_size} inputs, got {tuple(x.shape[-2:])}; "
                "pass image_size= to build_model"
            )
        return self.classifier(self.features(x))


def _paper_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


@register_model("cnn4", in_channels=1, image_size=28)
def cnn4(num_classes: int, in_channels: int, image_size: Size) -> nn.Module:
    return PaperCNN([[32], [64]], 128, num_classes, in_channels, image_size)


@register_model("cnn8")
def cnn8(num_classes: int, in_channels: int, image_size: Size) -> nn.Module:
    return PaperCNN([[64, 64], [128, 128], [196, 196]], 256, num_classes, in_channels, image_size)


# ---------------------------------------------------------------------------------------
# ResNets
# ---------------------------------------------------------------------------------------


class GlobalAvgPool(nn.Module):
    """The mean over each channel's pixels, [N, C, H, W] → [N, C, 1, 1]: torchvision's
    AdaptiveAvgPool2d((1, 1)) as a plain mean, whose gradient on CUDA is deterministic (the
    pool's backward has no deterministic kernel, which a `deterministic` job would refuse)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def cifar_resnet(block: type[BasicBlock | Bottleneck], num_classes: int, in_channels: int) -> nn.Module:
    """torchvision's ResNet with the CIFAR stem: 3×3 stride-1 conv to 64 channels, no max-pool."""
    model = ResNet(block, [3, 4, 6, 3], num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
    model.maxpool = nn.Identity()
    model.avgpool = GlobalAvgPool()
    return model


@register_model("resnet34")
def resnet34_cifar(num_classes: int, in_channels: int, image_size: Size) -> nn.Module:
    return cifar_resnet(BasicBlock, num_classes, in_channels)


@register_model("resnet50")
def resnet50_cifar(num_classes: int, in_channels: int, image_size: Size) -> nn.Module:
    return cifar_resnet(Bottleneck, num_classes, in_channels)


@register_model("imagenet-resnet50", image_size=224)
def resnet50_imagenet(num_classes: int, in_channels: int, image_size: Size) -> nn.Module:
    model = resnet50(weights=None, num_classes=num_classes)
    model.avgpool = GlobalAvgPool()
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model
