"""One-layer recurrent classifiers: `gru`, `lstm`, `bilstm`.

The input (N, C, L) is read as a sequence of L steps of C leads. The default head,
"flatten", is the authors' design: the outputs at all time steps, flattened, feed one linear
layer, so the model is tied to one input length. "pooled" averages over time instead and
accepts any length.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from study.errors import ConfigError
from study.models._base import ECGModel, one_of, positive_int
from study.models._factory import MODELS

__all__ = ["HEADS", "RecurrentNet", "gru", "lstm", "bilstm"]

HEADS = ("flatten", "pooled")


class RecurrentStage(nn.Module):
    """One recurrent layer: (N, C, L) -> outputs at every step (N, L, hidden * directions)."""

    def __init__(self, rnn: nn.GRU | nn.LSTM) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.transpose(1, 2))
        return out


class TimeMean(nn.Module):
    """Mean over the time axis of (N, L, F) -> (N, F)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class RecurrentNet(ECGModel):
    """Identity stem, one recurrent stage, linear head; use the registered factories.

    Args:
        cell: `nn.GRU` or `nn.LSTM`.
        bidirectional: run the layer both ways (outputs concatenated).
        name: registry name.
        in_channels: number of leads.
        num_classes: number of logits.
        input_length: samples per record; required with head="flatten".
        hidden_size: units per direction.
        head: "flatten" (all steps -> Linear) or "pooled" (mean over time -> Linear).

    Raises:
        ConfigError: a size or option is invalid, or head="flatten" without input_length.
    """

    def __init__(
        self,
        cell: type[nn.GRU | nn.LSTM],
        bidirectional: bool,
        *,
        name: str,
        in_channels: int,
        num_classes: int,
        input_length: int | None = None,
        hidden_size: int = 100,
        head: str = "flatten",
    ) -> None:
        super().__init__(
            name=name,
            in_channels=in_channels,
            num_classes=num_classes,
            input_length=input_length,
            options={"hidden_size": hidden_size, "head": head},
        )
        positive_int(hidden_size, "hidden_size", name)
        one_of(head, HEADS, "head", name)
        if head == "flatten" and input_length is None:
            raise ConfigError(
                f"input_length is required for {name} with head='flatten' (the classifier "
                "sees every time step), got None; pass input_length or use head='pooled'"
            )
        features = hidden_size * (2 if bidirectional else 1)
        self.stem = nn.Identity()
        self.stages = nn.Sequential(
            RecurrentStage(
                cell(in_channels, hidden_size, batch_first=True, bidirectional=bidirectional)
            )
        )
        if head == "flatten":
            self.requires_input_length = True
            self.num_features = input_length * features
            self.head = nn.Sequential(
                OrderedDict(flatten=nn.Flatten(1), fc=nn.Linear(self.num_features, num_classes))
            )
        else:
            self.num_features = features
            self.head = nn.Sequential(
                OrderedDict(pool=TimeMean(), fc=nn.Linear(features, num_classes))
            )


@MODELS.register
def gru(
    *,
    in_channels: int,
    num_classes: int,
    input_length: int | None = None,
    hidden_size: int = 100,
    head: str = "flatten",
) -> RecurrentNet:
    """One unidirectional GRU layer."""
    return RecurrentNet(
        nn.GRU,
        False,
        name="gru",
        in_channels=in_channels,
        num_classes=num_classes,
        input_length=input_length,
        hidden_size=hidden_size,
        head=head,
    )


@MODELS.register
def lstm(
    *,
    in_channels: int,
    num_classes: int,
    input_length: int | None = None,
    hidden_size: int = 100,
    head: str = "flatten",
) -> RecurrentNet:
    """One unidirectional LSTM layer."""
    return RecurrentNet(
        nn.LSTM,
        False,
        name="lstm",
        in_channels=in_channels,
        num_classes=num_classes,
        input_length=input_length,
        hidden_size=hidden_size,
        head=head,
    )


@MODELS.register
def bilstm(
    *,
    in_channels: int,
    num_classes: int,
    input_length: int | None = None,
    hidden_size: int = 100,
    head: str = "flatten",
) -> RecurrentNet:
    """One bidirectional LSTM layer (hidden_size units per direction)."""
    return RecurrentNet(
        nn.LSTM,
        True,
        name="bilstm",
        in_channels=in_channels,
        num_classes=num_classes,
        input_length=input_length,
        hidden_size=hidden_size,
        head=head,
    )
