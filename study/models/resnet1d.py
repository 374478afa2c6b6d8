"""1-D ports of torchvision's ResNets: `resnet1d18`, `resnet1d50`, `resnet1d101`.

Same layout as torchvision (stem conv k7 s2 + max pool, four stages, stride 2 from the second
stage on, 1x1 projection shortcut where the shape changes, stride on the 3-tap conv of a
bottleneck) with Conv1d/BatchNorm1d, and the two-layer head of Nguyen & Do's models
(cuongvng/transfer-learning-ecg-diagnosis: pretrain/resnet50.py, downstream/resnet1d18.py,
downstream/resnet1d101.py): global average pool -> Linear(F, E) -> ReLU -> Linear(E,
num_classes), F = 8 * base_width * expansion (512 for resnet1d18, 2048 for resnet1d50/101 at
the default width), E = embedding_size (512, theirs, whatever the depth).

Parameters at 12 leads and 5 classes (PTB-XL superdiagnostic), the defaults, equal to the
authors' models: resnet1d18 4,114,053; resnet1d50 17,010,821; resnet1d101 29,318,277
(tests/models/test_paper_models.py counts them by hand from their layer list).
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
        embedding_size: width of the head's hidden layer (the authors' `embedding_size`: 512
            for every depth, so 2048 -> 512 for the bottleneck variants).
        **sizes: name, in_channels, num_classes and input_length (`ModelSizes`); the global
            pool accepts any length, so input_length is recorded in `config` only.

    Raises:
        ConfigError: a size, base_width or embedding_size is not a positive int.
    """

    def __init__(
        self,
        block: type[BasicBlock1d | Bottleneck1d],
        layers: tuple[int, ...],
        *,
        base_width: int = 64,
        embedding_size: int = 512,
        **sizes: Unpack[ModelSizes],
    ) -> None:
        super().__init__(
            options={"base_width": base_width, "embedding_size": embedding_size}, **sizes
        )
        positive_int(base_width, "base_width", self.name)
        positive_int(embedding_size, "embedding_size", self.name)
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
                hidden=nn.Linear(features, embedding_size),
                act=nn.ReLU(inplace=True),
                fc=nn.Linear(embedding_size, self.num_classes),
            )
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


# Revision 2: the head's hidden layer is embedding_size (512) wide, as the authors' models,
# not F wide (revision 1 built Linear(F, F): 3.2M parameters too many at ResNet-50, and at
# base_width < 64 a narrower ResNet-18 head). Results of revision 1 are not these models'.
_HEAD_REVISION = 2

resnet1d18 = register_variant(
    "resnet1d18",
    ResNet1d,
    fixed={"block": BasicBlock1d, "layers": (2, 2, 2, 2)},
    doc="ResNet-18 in 1-D: BasicBlock, [2, 2, 2, 2]; ~4.1M parameters at base_width=64, 12 leads.",
    revision=_HEAD_REVISION,
)
resnet1d50 = register_variant(
    "resnet1d50",
    ResNet1d,
    fixed={"block": Bottleneck1d, "layers": (3, 4, 6, 3)},
    doc="ResNet-50 in 1-D: Bottleneck, [3, 4, 6, 3]; ~17.0M parameters at 12 leads.",
    revision=_HEAD_REVISION,
)
resnet1d101 = register_variant(
    "resnet1d101",
    ResNet1d,
    fixed={"block": Bottleneck1d, "layers": (3, 4, 23, 3)},
    doc="ResNet-101 in 1-D: Bottleneck, [3, 4, 23, 3]; ~29.3M parameters at 12 leads.",
    revision=_HEAD_REVISION,
)
