"""1-D ports of torchvision's ResNets: `resnet1d18`, `resnet1d50`, `resnet1d101`.

Same layout as torchvision (stem conv k7 s2 + max pool, four stages, stride 2 from the second
stage on, 1x1 projection shortcut where the shape changes, stride on the 3-tap conv of a
bottleneck) with Conv1d/BatchNorm1d, and a two-layer head:
global average pool -> Linear(F, F) -> ReLU -> Linear(F, num_classes), F = 8 * base_width *
expansion (512 for resnet1d18 at the default width).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Unpack

import torch
from torch import nn

from study.models._base import ECGModel, ModelSizes, positive_int
from study.models._factory import register_variant
from study.models._resnet import resnet_trunk

__all__ = ["BasicBlock1d", "Bottleneck1d", "ResNet1d", "resnet1d18", "resnet1d50", "resnet1d101"]


class BasicBlock1d(nn.Module):
    """Two 3-tap convs with a residual shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv1d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm1d(planes)
        self.conv2 = nn.Conv1d(planes, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(out)
        self.act = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(y + identity)


class Bottleneck1d(nn.Module):
    """1x1 reduce, 3-tap (strided), 1x1 expand by 4, with a residual shortcut (ResNet-50+)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv1d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm1d(planes)
        self.conv2 = nn.Conv1d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(planes)
        self.conv3 = nn.Conv1d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm1d(out)
        self.act = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.act(self.bn1(self.conv1(x)))
        y = self.act(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.act(y + identity)


def _shortcut(in_planes: int, out: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_planes == out:
        return None
    return nn.Sequential(nn.Conv1d(in_planes, out, 1, stride, bias=False), nn.BatchNorm1d(out))


class ResNet1d(ECGModel):
    """Generic 1-D ResNet; the registered `resnet1d*` variants fix `block` and `layers`.

    Args:
        block: `BasicBlock1d` or `Bottleneck1d`.
        layers: blocks per stage (four stages).
        base_width: width of the stem and first stage; stage i has base_width * 2**i planes.
        **sizes: name, in_channels, num_classes and input_length (`ModelSizes`); the global
            pool accepts any length, so input_length is recorded in `config` only.

    Raises:
        ConfigError: a size or base_width is not a positive int.
    """

    def __init__(
        self,
        block: type[BasicBlock1d | Bottleneck1d],
        layers: tuple[int, ...],
        *,
        base_width: int = 64,
        **sizes: Unpack[ModelSizes],
    ) -> None:
        super().__init__(options={"base_width": base_width}, **sizes)
        positive_int(base_width, "base_width", self.name)
        self.stem, self.stages, features = resnet_trunk(
            lambda cin, planes, stride, _stage: block(cin, planes, stride),
            block.expansion,
            layers,
            in_channels=self.in_channels,
            base_width=base_width,
            conv=lambda cin, cout, k, stride: nn.Conv1d(cin, cout, k, stride, k // 2, bias=False),
            pool=nn.MaxPool1d(3, 2, 1),
        )
        self.num_features = features  # = 8 * base_width * expansion
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool1d(1),
                flatten=nn.Flatten(1),
                hidden=nn.Linear(features, features),
                act=nn.ReLU(inplace=True),
                fc=nn.Linear(features, self.num_classes),
            )
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


resnet1d18 = register_variant(
    "resnet1d18",
    ResNet1d,
    fixed={"block": BasicBlock1d, "layers": (2, 2, 2, 2)},
    doc="ResNet-18 in 1-D: BasicBlock, [2, 2, 2, 2]; ~4.1M parameters at base_width=64, 12 leads.",
)
resnet1d50 = register_variant(
    "resnet1d50",
    ResNet1d,
    fixed={"block": Bottleneck1d, "layers": (3, 4, 6, 3)},
    doc="ResNet-50 in 1-D: Bottleneck (expansion 4), [3, 4, 6, 3].",
)
resnet1d101 = register_variant(
    "resnet1d101",
    ResNet1d,
    fixed={"block": Bottleneck1d, "layers": (3, 4, 23, 3)},
    doc="ResNet-101 in 1-D: Bottleneck (expansion 4), [3, 4, 23, 3].",
)
