import pytest
import torch
from torch import nn

from worker.models import MODELS, build_model


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_names_are_the_design_ones():
    assert set(MODELS) == {"cnn4", "cnn8", "resnet34", "resnet50", "imagenet-resnet50"}


@pytest.mark.parametrize(
    ("name", "num_classes", "params"),
    [
        ("cnn4", 10, 422_090),  # paper's MNIST CNN
        ("cnn8", 10, 1_639_794),  # paper's CIFAR-10 CNN
        ("resnet34", 100, 21_328_292),  # paper's CIFAR-100 ResNet-34 ("21.3M")
        ("resnet50", 100, 23_705_252),
        ("resnet50", 10, 23_520_842),
        ("imagenet-resnet50", 1000, 25_557_032),  # torchvision's resnet50
    ],
)
def test_parameter_counts_match_the_papers_networks(name, num_classes, params):
    assert count(build_model(name, num_classes)) == params


def test_cnn_layers_are_the_reference_ones():
    model = build_model("cnn4", 10, in_channels=1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 32, (3, 3)), (32, 64, (3, 3))]
    assert all(c.bias is not None for c in convs)
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(3136, 128), (128, 10)]
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    cnn8 = build_model("cnn8", 10)
    assert [m.in_features for m in cnn8.modules() if isinstance(m, nn.Linear)] == [196 * 4 * 4, 256]


def test_init_is_seeded_by_the_caller():
    torch.manual_seed(0)
    a = build_model("cnn4", 10)
    torch.manual_seed(0)
    b = build_model("cnn4", 10)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert all(torch.count_nonzero(m.bias) == 0 for m in a.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


@pytest.mark.parametrize(
    ("name", "num_classes", "shape"),
    [
        ("cnn4", 10, (2, 1, 28, 28)),
        ("cnn8", 10, (2, 3, 32, 32)),
        ("resnet34", 100, (2, 3, 32, 32)),
        ("resnet50", 100, (2, 3, 32, 32)),
        ("imagenet-resnet50", 50, (2, 3, 64, 64)),
    ],
)
def test_forward_gives_logits_in_both_memory_formats(name, num_classes, shape):
    torch.manual_seed(0)
    model = build_model(name, num_classes, in_channels=shape[1], image_size=shape[2:]).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        plain = model(x)
        model = model.to(memory_format=torch.channels_last)
        last = model(x.to(memory_format=torch.channels_last))
    assert plain.shape == (shape[0], num_classes)
    assert torch.allclose(plain, last, atol=1e-4)


@pytest.mark.parametrize(("name", "in_channels", "size"), [("cnn4", 3, 32), ("cnn8", 1, 28)])
def test_cnns_fit_the_other_family_input_size(name, in_channels, size):
    model = build_model(name, 10, in_channels=in_channels, image_size=size)
    assert model(torch.randn(2, in_channels, size, size)).shape == (2, 10)


def test_cnn_fed_the_wrong_size_says_so():
    with pytest.raises(ValueError, match="image_size"):
        build_model("cnn4", 10)(torch.randn(2, 1, 32, 32))


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="cnn4"):
        build_model("vgg16", 10)
