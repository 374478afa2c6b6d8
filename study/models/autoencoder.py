"""A 1-D convolutional autoencoder for lead-II segments (after Jang et al. 2021): `cae`.

Jang, Kim & Yoon (Healthc. Inform. Res. 2021;27(1):19-28) pretrain a convolutional
autoencoder on 8.2 s lead-II segments by reconstruction (MSE) and fine-tune its encoder with
a classifier on rhythm labels. Their layer list is not public in code, and the stored copy
of the paper only holds the abstract, so this is a reasonable CAE of that shape, not a
replica:

- encoder = stem + stages: stem conv (k, stride 1) -> BN -> ReLU at `base_width` filters;
  then `depth` stages, each a stride-2 conv (k) -> BN -> ReLU doubling the filters, so the
  code has `base_width * 2**depth` channels at L / 2**depth steps;
- decoder (pretext only, keys under "decoder."): the mirror image, a stride-2 transposed
  conv (k) -> BN -> ReLU halving the filters per stage, then a linear conv (k) back to
  `in_channels`;
- classification head: global average pool -> linear.

Pretraining minimises `mse(model.reconstruct(x), x)`; fine-tuning loads the encoder and
drops the keys under `pretext_prefixes` (build with `with_decoder=False` so no unused
parameters reach the optimiser or DDP).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Unpack

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError
from study.models._base import ECGModel, ModelSizes, positive_int
from study.models._factory import register_variant

__all__ = ["ConvAutoencoder1d", "cae"]


def _odd_kernel(value: object, name: str) -> int:
    k = positive_int(value, "kernel_size", name)
    if k % 2 == 0:
        raise ConfigError(f"kernel_size must be odd for {name} (symmetric padding), got {k}")
    return k


class ConvAutoencoder1d(ECGModel):
    """Conv encoder (stem + stages), transposed-conv decoder, pooled linear head.

    Args:
        base_width: filters of the stem; stage i has base_width * 2**(i + 1).
        depth: number of stride-2 stages (the code is 2**depth times shorter).
        kernel_size: taps of every conv (odd).
        with_decoder: build the decoder (needed for pretraining; fine-tuning may drop it).
        **sizes: name, in_channels (1: lead II in the paper), num_classes and input_length
            (`ModelSizes`); input_length is recorded in `config` only (any length runs;
            `reconstruct` pads to a multiple of 2**depth and crops back).

    Raises:
        ConfigError: a size is not a positive int, kernel_size is even, or with_decoder is
            not a bool.
    """

    #: The decoder is pretext-only: fine-tuning drops its keys.
    pretext_prefixes = ("decoder.",)

    def __init__(
        self,
        *,
        base_width: int = 16,
        depth: int = 4,
        kernel_size: int = 7,
        with_decoder: bool = True,
        **sizes: Unpack[ModelSizes],
    ) -> None:
        super().__init__(
            options={
                "base_width": base_width,
                "depth": depth,
                "kernel_size": kernel_size,
                "with_decoder": with_decoder,
            },
            **sizes,
        )
        name, in_channels = self.name, self.in_channels
        positive_int(base_width, "base_width", name)
        positive_int(depth, "depth", name)
        k = _odd_kernel(kernel_size, name)
        if not isinstance(with_decoder, bool):
            raise ConfigError(f"with_decoder must be a bool for {name}, got {with_decoder!r}")
        pad = k // 2
        widths = [base_width * 2**i for i in range(depth + 1)]

        def block(conv: nn.Module, c: int) -> nn.Sequential:
            return nn.Sequential(
                OrderedDict(conv=conv, bn=nn.BatchNorm1d(c), act=nn.ReLU(inplace=True))
            )

        self.stem = block(nn.Conv1d(in_channels, widths[0], k, 1, pad, bias=False), widths[0])
        self.stages = nn.Sequential(
            *(
                block(nn.Conv1d(widths[i], widths[i + 1], k, 2, pad, bias=False), widths[i + 1])
                for i in range(depth)
            )
        )
        self.num_features = widths[-1]
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool1d(1),
                flatten=nn.Flatten(1),
                fc=nn.Linear(widths[-1], self.num_classes),
            )
        )
        self.decoder: nn.Sequential | None = None
        if with_decoder:
            # output_padding=1 makes each transposed conv exactly double the length.
            ups = [
                block(
                    nn.ConvTranspose1d(widths[i + 1], widths[i], k, 2, pad, 1, bias=False),
                    widths[i],
                )
                for i in reversed(range(depth))
            ]
            out = nn.Conv1d(widths[0], in_channels, k, 1, pad)  # linear: signals are signed
            self.decoder = nn.Sequential(*ups, out)

    @property
    def can_reconstruct(self) -> bool:
        """True when built with its decoder (`with_decoder=True`)."""
        return self.decoder is not None

    def _require_decoder(self) -> nn.Sequential:
        if self.decoder is None:
            raise ConfigError(
                f"{self.name} was built with with_decoder=False and cannot decode; build it "
                "with with_decoder=True for pretraining"
            )
        return self.decoder

    @property
    def reduction(self) -> int:
        """How many times shorter the code is than the input (2**depth)."""
        return 2 ** self.options["depth"]

    def decode(self, features: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Map `forward_features` output (N, F, L') back to signals (N, in_channels, L).

        Args:
            features: the encoder's output.
            length: crop the output to this many samples (default: 2**depth * L').

        Raises:
            ConfigError: the model was built with with_decoder=False.
        """
        decoder = self._require_decoder()
        out = decoder(features)
        return out if length is None else out[..., :length]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Encode and decode `x` (N, C, L); the output has the shape of `x`.

        A length that is not a multiple of 2**depth is zero-padded at the end for the pass
        and the output cropped back, so every sample is reconstructed.

        Raises:
            ConfigError: the model was built with with_decoder=False.
            DataError: `x` does not have shape (N, in_channels, L).
        """
        self._require_decoder()
        self._check_input(x)
        length = x.shape[-1]
        padded = F.pad(x, (0, -length % self.reduction))
        return self.decode(self.forward_features(padded), length)


cae = register_variant(
    "cae",
    ConvAutoencoder1d,
    defaults={"in_channels": 1},  # lead II
    doc="Convolutional autoencoder over lead II (after Jang et al. 2021; not their exact layers).",
)
