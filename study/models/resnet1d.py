"""1-D ports of torchvision's ResNets: `resnet1d18`, `resnet1d50`, `resnet1d101`.

Same layout as torchvision (stem conv k7 s2 + max pool, four stages, stride 2 from the second
stage on, 1x1 projection shortcut where the shape changes, stride on the 3-tap conv of a
bottleneck) with Conv1d/BatchNorm1d, and a two-layer head:
global average pool -> Linear(F, F) -> ReLU -> Linear(F, num_classes), F = 8 * base_width *
expansion (512 for resnet1d18 at the default width).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from study.models._base import ECGModel, positive_int
from study.models._factory import MODELS

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
    """Generic 1-D ResNet; use the registered `resnet1d*` factories.

    Args:
        block: `BasicBlock1d` or `Bottleneck1d`.
        layers: blocks per stage (four stages).
        name: registry name.
        in_channels: number of leads.
        num_classes: number of logits.
        input_length: recorded in `config` only (the global pool accepts any length).
        base_width: width of the stem and first stage; stage i has base_width * 2**i planes.

    Raises:
        ConfigError: a size or base_width is not a positive int.
    """

    def __init__(
        self,
        block: type[BasicBlock1d | Bottleneck1d],
        layers: tuple[int, ...],
        *,
        name: str,
        in_channels: int,
        num_classes: int,
        input_length: int | None = None,
        base_width: int = 64,
    ) -> None:
        super().__init__(
            name=name,
            in_channels=in_channels,
            num_classes=num_classes,
            input_length=input_length,
            options={"base_width": base_width},
        )
        positive_int(base_width, "base_width", name)
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv1d(in_channels, base_width, 7, 2, 3, bias=False),
                bn=nn.BatchNorm1d(base_width),
                act=nn.ReLU(inplace=True),
                pool=nn.MaxPool1d(3, 2, 1),
            )
        )
        stages = []
        in_planes = base_width
        for i, n_blocks in enumerate(layers):
            planes = base_width * 2**i
            blocks = [block(in_planes, planes, 1 if i == 0 else 2)]
            in_planes = planes * block.expansion
            blocks += [block(in_planes, planes) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_planes  # = 8 * base_width * expansion
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool1d(1),
                flatten=nn.Flatten(1),
                hidden=nn.Linear(in_planes, in_planes),
                act=nn.ReLU(inplace=True),
                fc=nn.Linear(in_planes, num_classes),
            )
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


@MODELS.register
def resnet1d18(
    *, in_channels: int, num_classes: int, input_length: int | None = None, base_width: int = 64
) -> ResNet1d:
    """ResNet-18 in 1-D: BasicBlock, [2, 2, 2, 2]; ~4.1M parameters at base_width=64, 12 leads."""
    return ResNet1d(
        BasicBlock1d,
        (2, 2, 2, 2),
        name="resnet1d18",
        in_channels=in_channels,
        num_classes=num_classes,
        input_length=input_length,
        base_width=base_width,
    )


@MODELS.register
def resnet1d50(
    *, in_channels: int, num_classes: int, input_length: int | None = None, base_width: int = 64
) -> ResNet1d:
    """ResNet-50 in 1-D: Bottleneck (expansion 4), [3, 4, 6, 3]."""
    return ResNet1d(
        Bottleneck1d,
        (3, 4, 6, 3),
        name="resnet1d50",
        in_channels=in_channels,
        num_classes=num_classes,
        input_length=input_length,
        base_width=base_width,
    )


@MODELS.register
def resnet1d101(
    *, in_channels: int, num_classes: int, input_length: int | None = None, base_width: int = 64
) -> ResNet1d:
    """ResNet-101 in 1-D: Bottleneck (expansion 4), [3, 4, 23, 3]."""
    return ResNet1d(
        Bottleneck1d,
        (3, 4, 23, 3),
        name="resnet1d101",
        in_channels=in_channels,
        num_classes=num_classes,
        input_length=input_length,
        base_width=base_width,
    )
