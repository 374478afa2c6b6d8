"""Weimann & Conrad's 1-D ResNets (Sci. Rep. 2021): `resnet18v2`, `resnet34v2`, `resnet50v2`.

A port of `transplant/modules/resnet1d.py` and `finetuning/utils.py: ecg_feature_extractor`
of github.com/kweimann/ecg-transfer-learning (TensorFlow/Keras), layer for layer:

- stem: conv k7 s2 (64 filters, no bias) -> batch norm -> ReLU -> max pool 3 s2;
- four stages of 64, 128, 256, 512 filters with kernel sizes 7, 5, 5, 3; the first block of
  every stage but the first has stride 2;
- blocks are *post-activation* (the original ResNet order, not He et al.'s pre-activation
  "v2"): conv -> BN -> ReLU -> conv -> BN -> add -> ReLU. The "v2" of the registry names only
  tells these models from the torchvision ports in `resnet1d.py`;
- a 1x1 projection (conv with the block's stride -> BN) wherever the channel count changes or
  the block strides; in a bottleneck block the stride sits on the k-tap middle conv and the
  output has 4x the filters;
- head: global average pool -> one linear layer (their `Dense(num_classes)`).

Faithful details that differ from a plain PyTorch port: every conv and the max pool pad like
Keras' `padding='same'` (asymmetric for stride 2 on an even length: one extra sample on the
right), so ported Keras weights give the same outputs; convs start from Keras'
`VarianceScaling()` (truncated normal, fan-in, scale 1) and the linear layer from
Glorot-uniform with zero bias; batch norm uses momentum 0.1 / eps 1e-5 (Keras' 0.9 / 1e-5).
They pretrain and fine-tune on one lead, hence `in_channels=1` by default.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Unpack

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError
from study.models._base import ECGModel, ModelSizes, positive_int
from study.models._factory import register_variant
from study.models._resnet import resnet_trunk

__all__ = [
    "KERNEL_SIZES",
    "ResidualBlock1d",
    "BottleneckBlock1d",
    "WeimannResNet1d",
    "resnet18v2",
    "resnet34v2",
    "resnet50v2",
]

#: Kernel size of the convs of each stage (their `kernel_size=(7, 5, 5, 3)`).
KERNEL_SIZES = (7, 5, 5, 3)


def _same_padding(length: int, kernel_size: int, stride: int) -> tuple[int, int]:
    # Keras/TensorFlow 'same': output ceil(L / stride); the odd sample of padding goes right.
    total = max((math.ceil(length / stride) - 1) * stride + kernel_size - length, 0)
    return total // 2, total - total // 2


class SameConv1d(nn.Conv1d):
    """`nn.Conv1d` (no bias) padded like Keras' `padding='same'`; same state-dict keys."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = _same_padding(x.shape[-1], self.kernel_size[0], self.stride[0])
        return super().forward(F.pad(x, pad))


class SameMaxPool1d(nn.Module):
    """Max pool padded like Keras' `MaxPooling1D(padding='same')` (padding never wins)."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = _same_padding(x.shape[-1], self.kernel_size, self.stride)
        x = F.pad(x, pad, value=float("-inf"))
        return F.max_pool1d(x, self.kernel_size, self.stride)


def _projection(in_planes: int, out: int, stride: int) -> tuple[nn.Module | None, ...]:
    # Their rule: project when the channel count changes or the block strides.
    if in_planes == out and stride == 1:
        return None, None
    return SameConv1d(in_planes, out, 1, stride), nn.BatchNorm1d(out)


class ResidualBlock1d(nn.Module):
    """Their `ResidualBlock` (ResNet-18/34): two k-tap convs, post-activation."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = SameConv1d(in_planes, planes, kernel_size, stride)
        self.bn1 = nn.BatchNorm1d(planes)
        self.conv2 = SameConv1d(planes, planes, kernel_size)
        self.bn2 = nn.BatchNorm1d(planes)
        self.act = nn.ReLU(inplace=True)
        self.proj_conv, self.proj_bn = _projection(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.proj_conv is None else self.proj_bn(self.proj_conv(x))
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(y + shortcut)


class BottleneckBlock1d(nn.Module):
    """Their `BottleneckBlock` (ResNet-50): 1x1, k-tap (strided), 1x1 to 4x, post-activation."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = SameConv1d(in_planes, planes, 1)
        self.bn1 = nn.BatchNorm1d(planes)
        self.conv2 = SameConv1d(planes, planes, kernel_size, stride)
        self.bn2 = nn.BatchNorm1d(planes)
        self.conv3 = SameConv1d(planes, out, 1)
        self.bn3 = nn.BatchNorm1d(out)
        self.act = nn.ReLU(inplace=True)
        self.proj_conv, self.proj_bn = _projection(in_planes, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.proj_conv is None else self.proj_bn(self.proj_conv(x))
        y = self.act(self.bn1(self.conv1(x)))
        y = self.act(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.act(y + shortcut)


class WeimannResNet1d(ECGModel):
    """Weimann & Conrad's ResNet; the registered `resnet*v2` variants fix `block`, `layers`.

    Args:
        block: `ResidualBlock1d` or `BottleneckBlock1d`.
        layers: blocks per stage (four stages).
        base_width: filters of the stem and first stage (64 in the paper); stage i has
            base_width * 2**i; smaller values are for tests.
        **sizes: name, in_channels (1 in the paper), num_classes and input_length
            (`ModelSizes`); the global pool accepts any length, so input_length is recorded
            in `config` only.

    Raises:
        ConfigError: a size or base_width is not a positive int.
    """

    def __init__(
        self,
        block: type[ResidualBlock1d | BottleneckBlock1d],
        layers: tuple[int, ...],
        *,
        base_width: int = 64,
        **sizes: Unpack[ModelSizes],
    ) -> None:
        super().__init__(options={"base_width": base_width}, **sizes)
        positive_int(base_width, "base_width", self.name)
        if len(layers) != len(KERNEL_SIZES):
            raise ConfigError(
                f"layers must have one entry per kernel size {KERNEL_SIZES} for {self.name}, "
                f"got {layers}"
            )
        self.stem, self.stages, features = resnet_trunk(
            lambda cin, planes, stride, stage: block(cin, planes, KERNEL_SIZES[stage], stride),
            block.expansion,
            layers,
            in_channels=self.in_channels,
            base_width=base_width,
            conv=SameConv1d,
            pool=SameMaxPool1d(3, 2),
        )
        self.num_features = features
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool1d(1),
                flatten=nn.Flatten(1),
                fc=nn.Linear(features, self.num_classes),
            )
        )
        self._keras_init()

    def _keras_init(self) -> None:
        # The authors' initialisers: VarianceScaling() for convs, Glorot-uniform for Dense.
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                fan_in = m.in_channels * m.kernel_size[0]
                std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # Keras' truncation fix
                nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)


# They train on one lead, hence in_channels=1 by default (create_model still needs it named).
resnet18v2 = register_variant(
    "resnet18v2",
    WeimannResNet1d,
    fixed={"block": ResidualBlock1d, "layers": (2, 2, 2, 2)},
    defaults={"in_channels": 1},
    doc="Their `resnet18`: ResidualBlock, (2, 2, 2, 2); 4,483,906 parameters (1 lead, 2 classes).",
)
resnet34v2 = register_variant(
    "resnet34v2",
    WeimannResNet1d,
    fixed={"block": ResidualBlock1d, "layers": (3, 4, 6, 3)},
    defaults={"in_channels": 1},
    doc="Their `resnet34`: ResidualBlock, (3, 4, 6, 3); 9,070,658 parameters (1 lead, 2 classes).",
)
resnet50v2 = register_variant(
    "resnet50v2",
    WeimannResNet1d,
    fixed={"block": BottleneckBlock1d, "layers": (3, 4, 6, 3)},
    defaults={"in_channels": 1},
    doc="Their `resnet50`: BottleneckBlock, (3, 4, 6, 3); 16,924,994 params (1 lead, 2 classes).",
)
