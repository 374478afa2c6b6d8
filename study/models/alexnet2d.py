"""AlexNet on 2-D CWT scalograms (Huerta et al.): `alexnet2d`.

torchvision's AlexNet layout (`torchvision/models/alexnet.py`): five convs (64, 192, 384,
256, 256 filters; kernels 11/4, 5, 3, 3, 3), ReLU after each, 3x3/2 max pools after conv1,
conv2 and conv5, an adaptive average pool to 6x6, then dropout -> fc6 (4096) -> ReLU ->
dropout -> fc7 (4096) -> ReLU -> fc8 (classes). No local response normalisation and no
grouped convs (the 2012 original and MATLAB's `alexnet` have both, and 96 conv1 filters).

Input: (N, C, H, W) scalograms with C = 1 (grey) or 3 (the scalogram repeated or
colour-mapped to RGB, as for ImageNet weights). Natural size 224x224 (torchvision's); the
adaptive pool makes the parameter count independent of the size, and anything from 63x63
runs. MATLAB's `alexnet` takes 227x227; the stored copies of Huerta et al.'s papers (Entropy
2020, 22(7):733; CinC 2020) that we could read did not state their image size, so 224 is our
choice (`INPUT_SIZE`), not a verified one.

The paper's 8 learnable layers map onto the model contract as

    layer:   conv1  conv2     conv3     conv4     conv5     fc6       fc7       fc8
    module:  stem   stages.0  stages.1  stages.2  stages.3  stages.4  stages.5  head.fc

so `freeze_groups` has 7 entries and freeze depth k (0..7) freezes exactly layers 1..k, as
in the paper's table; fc8 is the classifier, replaced by `reset_head`, and always trains.
Each group carries the parameter-free layers that follow its learnable layer (ReLU, pool);
fc6's group starts with the adaptive pool, flatten and dropout that precede fc6.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Unpack

import torch
from torch import nn

from study.errors import ConfigError, DataError
from study.models._base import ECGModel, ModelSizes, positive_int
from study.models._factory import register_variant

__all__ = ["INPUT_SIZE", "MIN_INPUT_SIZE", "LAYERS", "AlexNet2d", "alexnet2d"]

#: Natural (height, width) of a scalogram: torchvision's AlexNet input size.
INPUT_SIZE = (224, 224)
#: Smallest height and width the conv/pool stack accepts.
MIN_INPUT_SIZE = 63
#: The paper's learnable layers, in order, with the module each one is.
LAYERS = OrderedDict(
    conv1="stem",
    conv2="stages.0",
    conv3="stages.1",
    conv4="stages.2",
    conv5="stages.3",
    fc6="stages.4",
    fc7="stages.5",
    fc8="head.fc",
)
# Filters of conv1..conv5 in units of base_width (64 -> 64, 192, 384, 256, 256).
_WIDTHS = (1, 3, 6, 4, 4)


class AlexNet2d(ECGModel):
    """AlexNet over (N, C, H, W) images; registered as `alexnet2d`.

    Args:
        base_width: conv1's filters; conv2..conv5 have 3, 6, 4, 4 times as many (64 in
            AlexNet; smaller values are for tests).
        hidden_size: units of fc6 and fc7 (4096 in AlexNet).
        dropout: drop probability before fc6 and before fc7 (0.5 in AlexNet).
        **sizes: name, in_channels (image channels, 1 or 3), num_classes (fc8's outputs) and
            input_length (`ModelSizes`); input_length is recorded in `config` only (any
            H, W >= 63 runs).

    Raises:
        ConfigError: in_channels is not 1 or 3, a size is not a positive int, or dropout is
            not in [0, 1).
    """

    #: The forward takes images (N, C, H, W), not signals (N, C, L).
    input_kind = "image"

    def __init__(
        self,
        *,
        base_width: int = 64,
        hidden_size: int = 4096,
        dropout: float = 0.5,
        **sizes: Unpack[ModelSizes],
    ) -> None:
        super().__init__(
            options={"base_width": base_width, "hidden_size": hidden_size, "dropout": dropout},
            **sizes,
        )
        name, in_channels = self.name, self.in_channels
        if in_channels not in (1, 3):
            raise ConfigError(
                f"in_channels must be 1 (grey) or 3 (RGB) for {name}, got {in_channels}"
            )
        positive_int(base_width, "base_width", name)
        positive_int(hidden_size, "hidden_size", name)
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, int | float)
            or not 0 <= dropout < 1
        ):
            raise ConfigError(f"dropout must be a number in [0, 1) for {name}, got {dropout!r}")
        c1, c2, c3, c4, c5 = (base_width * w for w in _WIDTHS)

        def conv(cin: int, cout: int, k: int, stride: int, pad: int, pool: bool) -> nn.Module:
            layers = OrderedDict(
                conv=nn.Conv2d(cin, cout, k, stride, pad), act=nn.ReLU(inplace=True)
            )
            if pool:
                layers["pool"] = nn.MaxPool2d(3, 2)
            return nn.Sequential(layers)

        self.stem = conv(in_channels, c1, 11, 4, 2, pool=True)  # conv1
        fc6 = OrderedDict(
            pool=nn.AdaptiveAvgPool2d((6, 6)),
            flatten=nn.Flatten(1),
            drop=nn.Dropout(dropout),
            fc=nn.Linear(c5 * 6 * 6, hidden_size),
            act=nn.ReLU(inplace=True),
        )
        fc7 = OrderedDict(
            drop=nn.Dropout(dropout),
            fc=nn.Linear(hidden_size, hidden_size),
            act=nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(
            conv(c1, c2, 5, 1, 2, pool=True),  # conv2
            conv(c2, c3, 3, 1, 1, pool=False),  # conv3
            conv(c3, c4, 3, 1, 1, pool=False),  # conv4
            conv(c4, c5, 3, 1, 1, pool=True),  # conv5
            nn.Sequential(fc6),
            nn.Sequential(fc7),
        )
        self.num_features = hidden_size
        self.head = nn.Sequential(OrderedDict(fc=nn.Linear(hidden_size, self.num_classes)))  # fc8

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise DataError(
                f"input must have shape (N, {self.in_channels}, H, W) for {self.name} "
                f"(in_channels={self.in_channels}), got {tuple(x.shape)}"
            )
        if min(x.shape[2:]) < MIN_INPUT_SIZE:
            raise DataError(
                f"input height and width must be >= {MIN_INPUT_SIZE} for {self.name}, "
                f"got {tuple(x.shape[2:])}"
            )

    def freeze(self, depth: int) -> None:
        """Freeze the paper's layers 1..depth (conv1..conv5, fc6, fc7); fc8 always trains.

        Raises:
            ConfigError: depth is not an int in 0..max_freeze_depth (7); the message states
                the rule.
        """
        if not isinstance(depth, bool) and isinstance(depth, int) and depth > self.max_freeze_depth:
            raise ConfigError(
                f"freeze_depth must be <= {self.max_freeze_depth} for {self.name}, got "
                f"{depth}: depth k freezes layers 1..k (conv1..conv5, fc6, fc7), and layer 8 "
                "(fc8) is the classifier, which always trains"
            )
        super().freeze(depth)


# Three channels by default: the scalogram as RGB, as ImageNet weights expect.
alexnet2d = register_variant(
    "alexnet2d",
    AlexNet2d,
    defaults={"in_channels": 3},
    doc="AlexNet (torchvision layout) on scalograms; 57,012,034 params (3 channels, 2 classes).",
)
