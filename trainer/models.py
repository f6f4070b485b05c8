"""Models of the paper and of the field, behind one name -> constructor table."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from store import choices


def _conv_bn(cin: int, cout: int, k: int = 3, padding: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CNN4(nn.Module):
    """MNIST CNN of the authors' code: Conv32-BN-ReLU-Pool, Conv64-BN-ReLU-Pool, Dense128-ReLU, Dense10
    (3x3 'same' convolutions, 2x2 pools: 28 -> 14 -> 7)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(in_channels, 32), nn.MaxPool2d(2),
            *_conv_bn(32, 64), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(inplace=True),
                                        nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class CNN8(nn.Module):
    """CIFAR-10 CNN of the paper: [Conv64]x2-Pool, [Conv128]x2-Pool, [Conv196]x2-Pool (each conv
    BN-ReLU), Dense256-BN-ReLU, Dense10."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in (64, 128, 196):
            layers += _conv_bn(cin, cout) + _conv_bn(cout, cout) + [nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        side = image_size // 8
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(196 * side * side, 256), nn.BatchNorm1d(256),
                                        nn.ReLU(inplace=True), nn.Linear(256, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class _WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WideResNet-depth-widen (Zagoruyko & Komodakis 2016), as in Madry's CIFAR-10 baseline (34-10)."""

    def __init__(self, depth: int = 34, widen: int = 10, in_channels: int = 3, num_classes: int = 10, **_):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks = []
        for i, stride in enumerate((1, 2, 2)):
            for j in range(n):
                blocks.append(_WideBlock(widths[i] if j == 0 else widths[i + 1], widths[i + 1], stride if j == 0 else 1))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x):
        o = F.relu(self.bn(self.blocks(self.conv(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(o, 1), 1))


class _PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        sc = x if self.shortcut is None else self.shortcut(o)
        return self.conv2(F.relu(self.bn2(self.conv1(o)))) + sc


class PreActResNet18(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, **_):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_PreActBlock(cin, cout, stride), _PreActBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        o = F.relu(self.bn(self.layers(self.conv(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(o, 1), 1))


MODELS = {
    "cnn4": CNN4,
    "cnn8": CNN8,
    "wrn34_10": lambda **kw: WideResNet(34, 10, **kw),
    "preact_resnet18": PreActResNet18,
}
assert tuple(MODELS) == tuple(choices.MODELS), "store/choices.py names every model built here"


def build_model(name: str, in_channels: int, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    if name in ("cnn4", "cnn8"):
        return MODELS[name](in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    return MODELS[name](in_channels=in_channels, num_classes=num_classes)
