"""One-layer recurrent classifiers: `gru`, `lstm`, `bilstm`.

The input (N, C, L) is read as a sequence of L steps of C leads. The default head,
"flatten", is the authors' design: the outputs at all time steps, flattened, feed one linear
layer, so the model is tied to one input length. "pooled" averages over time instead and
accepts any length.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Unpack

import torch
from torch import nn

from study.errors import ConfigError
from study.models._base import ECGModel, ModelSizes, one_of, positive_int
from study.models._factory import register_variant

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
    """Identity stem, one recurrent stage, linear head; the registered variants fix the cell.

    Args:
        cell: `nn.GRU` or `nn.LSTM`.
        bidirectional: run the layer both ways (outputs concatenated).
        hidden_size: units per direction.
        head: "flatten" (all steps -> Linear) or "pooled" (mean over time -> Linear).
        **sizes: name, in_channels, num_classes and input_length (`ModelSizes`);
            input_length is required with head="flatten".

    Raises:
        ConfigError: a size or option is invalid, or head="flatten" without input_length.
    """

    def __init__(
        self,
        cell: type[nn.GRU | nn.LSTM],
        bidirectional: bool,
        *,
        hidden_size: int = 100,
        head: str = "flatten",
        **sizes: Unpack[ModelSizes],
    ) -> None:
        super().__init__(options={"hidden_size": hidden_size, "head": head}, **sizes)
        name, input_length = self.name, self.input_length
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
                cell(self.in_channels, hidden_size, batch_first=True, bidirectional=bidirectional)
            )
        )
        if head == "flatten":
            self.requires_input_length = True
            self.num_features = input_length * features
            self.head = nn.Sequential(
                OrderedDict(
                    flatten=nn.Flatten(1), fc=nn.Linear(self.num_features, self.num_classes)
                )
            )
        else:
            self.num_features = features
            self.head = nn.Sequential(
                OrderedDict(pool=TimeMean(), fc=nn.Linear(features, self.num_classes))
            )


gru = register_variant(
    "gru",
    RecurrentNet,
    fixed={"cell": nn.GRU, "bidirectional": False},
    doc="One unidirectional GRU layer.",
)
lstm = register_variant(
    "lstm",
    RecurrentNet,
    fixed={"cell": nn.LSTM, "bidirectional": False},
    doc="One unidirectional LSTM layer.",
)
bilstm = register_variant(
    "bilstm",
    RecurrentNet,
    fixed={"cell": nn.LSTM, "bidirectional": True},
    doc="One bidirectional LSTM layer (hidden_size units per direction).",
)
