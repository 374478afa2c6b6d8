"""A 1-D U-Net for QRS detection: `unet1d`, and `qrs_positions` to turn its output into beats.

Unlike every other registered model, `unet1d`'s forward returns *per-sample* logits
(N, num_classes, L) with the input's length L, not one row per record: with num_classes=1
it gives one QRS logit per sample (`output_kind = "per_sample"`). `qrs_positions` turns the
sigmoid of one record's trace into QRS sample positions.

The layout is Ronneberger et al.'s U-Net in 1-D:

- encoder: stem = double conv (conv k -> BN -> ReLU, twice) at `base_width` filters; then
  `depth` stages, each max pool /2 -> double conv doubling the filters. The stem and the
  stages are the freeze groups;
- decoder (never frozen, keys under "decoder."): per level, a transposed conv x2 halving the
  filters, concatenation with the encoder output of the same length (skip connection),
  double conv;
- head: one linear layer per sample (a 1x1 conv) from `base_width` features to num_classes.

Any length runs: the forward zero-pads the end to a multiple of 2**depth and crops back.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Unpack

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import find_peaks
from torch import nn

from study.errors import ConfigError, DataError
from study.models._base import ECGModel, ModelSizes, positive_int
from study.models._factory import register_variant

__all__ = ["UNet1d", "unet1d", "qrs_positions"]


def _double_conv(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv1d(cin, cout, k, padding=k // 2, bias=False),
            bn1=nn.BatchNorm1d(cout),
            act1=nn.ReLU(inplace=True),
            conv2=nn.Conv1d(cout, cout, k, padding=k // 2, bias=False),
            bn2=nn.BatchNorm1d(cout),
            act2=nn.ReLU(inplace=True),
        )
    )


class UpBlock(nn.Module):
    """Transposed conv x2 (halving the filters), concatenate the skip, double conv."""

    def __init__(self, cin: int, k: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose1d(cin, cin // 2, 2, stride=2)
        self.conv = _double_conv(cin, cin // 2, k)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class Transpose(nn.Module):
    """Swap the channel and time axes: (N, C, L) <-> (N, L, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class UNet1d(ECGModel):
    """1-D U-Net with per-sample logits; registered as `unet1d`.

    Args:
        base_width: filters of the stem; encoder stage i has base_width * 2**(i + 1).
        depth: number of pooling stages.
        kernel_size: taps of every conv (odd).
        **sizes: name, in_channels, num_classes (logits per sample, 1 for QRS detection)
            and input_length (`ModelSizes`); input_length is recorded in `config` only (any
            length runs).

    Raises:
        ConfigError: a size is not a positive int or kernel_size is even.
    """

    #: The forward returns (N, num_classes, L): one row of logits per sample, not per record.
    output_kind = "per_sample"

    def __init__(
        self,
        *,
        base_width: int = 16,
        depth: int = 4,
        kernel_size: int = 9,
        **sizes: Unpack[ModelSizes],
    ) -> None:
        super().__init__(
            options={"base_width": base_width, "depth": depth, "kernel_size": kernel_size},
            **sizes,
        )
        name = self.name
        positive_int(base_width, "base_width", name)
        positive_int(depth, "depth", name)
        k = positive_int(kernel_size, "kernel_size", name)
        if k % 2 == 0:
            raise ConfigError(f"kernel_size must be odd for {name} (same-length convs), got {k}")
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.stem = _double_conv(self.in_channels, widths[0], k)
        self.stages = nn.Sequential(
            *(
                nn.Sequential(
                    OrderedDict(
                        pool=nn.MaxPool1d(2), conv=_double_conv(widths[i], widths[i + 1], k)
                    )
                )
                for i in range(depth)
            )
        )
        self.decoder = nn.Sequential(*(UpBlock(widths[i + 1], k) for i in reversed(range(depth))))
        self.num_features = widths[0]
        self.head = nn.Sequential(
            OrderedDict(
                to_time=Transpose(),
                fc=nn.Linear(widths[0], self.num_classes),
                to_channels=Transpose(),
            )
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return per-sample decoder features (N, base_width, L) for `x` of shape (N, C, L)."""
        self._check_input(x)
        length = x.shape[-1]
        y = self.stem(F.pad(x, (0, -length % 2 ** len(self.stages))))
        skips = [y]
        for stage in self.stages:
            y = stage(y)
            skips.append(y)
        for up, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            y = up(y, skip)
        return y[..., :length]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Return per-sample logits (N, num_classes, L) from `forward_features`' output."""
        return self.head(features)


unet1d = register_variant(
    "unet1d",
    UNet1d,
    defaults={"num_classes": 1},  # one QRS logit per sample
    doc="1-D U-Net giving per-sample logits (N, num_classes, L); num_classes=1 for QRS.",
)


def qrs_positions(
    prob: np.ndarray | torch.Tensor,
    fs: float,
    min_distance_s: float = 0.2,
    threshold: float = 0.5,
) -> np.ndarray:
    """QRS sample positions from one record's per-sample QRS probability.

    The peaks of `prob` that reach `threshold`, at least `min_distance_s` apart (the taller
    one wins; 0.2 s is the physiological refractory period), found with
    `scipy.signal.find_peaks`. A flat-topped peak counts once, at its middle.

    Args:
        prob: probabilities (the sigmoid of `unet1d`'s logits) of one record, shape (L,) or
            (1, L).
        fs: sampling rate in Hz.
        min_distance_s: smallest distance between two QRS complexes, in seconds.
        threshold: smallest probability of a QRS peak.

    Returns:
        Sorted sample indices (int64).

    Raises:
        ConfigError: fs or min_distance_s is not > 0.
        DataError: prob is not one trace.
    """
    if isinstance(prob, torch.Tensor):
        prob = prob.detach().cpu().numpy()
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim == 2 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 1:
        raise DataError(f"prob must be one trace, shape (L,) or (1, L), got {p.shape}")
    if not fs > 0:
        raise ConfigError(f"fs must be > 0, got {fs}")
    if not min_distance_s > 0:
        raise ConfigError(f"min_distance_s must be > 0, got {min_distance_s}")
    distance = max(1, round(min_distance_s * fs))
    peaks, _ = find_peaks(p, height=threshold, distance=distance)
    return peaks.astype(np.int64)
