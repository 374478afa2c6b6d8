"""The contract every architecture keeps: named stem, stages and head; freezing; head reset.

A model is `stem -> stages -> head`. Freeze depth k freezes the first k entries of
`freeze_groups` (the stem and the stages that hold parameters, in forward order); the head is
always trained. Frozen batch-norm layers keep their pretrained running statistics, also after
`model.train()`.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, NotRequired, Self, TypedDict

import torch
from torch import nn

from study.errors import ConfigError, DataError

__all__ = ["ECGModel", "ModelSizes", "SIZES", "positive_int", "one_of"]


class ModelSizes(TypedDict):
    """The registry name and the sizes every architecture takes, passed on to `ECGModel`.

    Builders take them as `**sizes: Unpack[ModelSizes]` after their own keyword-only options,
    so the sizes are declared here once and a builder's signature lists only its options.
    """

    name: str
    #: number of leads C of the input (image channels for image models)
    in_channels: int
    #: number of logits
    num_classes: int
    #: samples per record L, or None where the architecture does not need it
    input_length: NotRequired[int | None]


#: The size arguments of every architecture, in the order `create_model` takes them.
SIZES: tuple[str, ...] = tuple(k for k in ModelSizes.__annotations__ if k != "name")


def positive_int(value: Any, what: str, model: str) -> int:
    """Return `value` if it is an int >= 1 (bools excluded), else raise.

    Raises:
        ConfigError: the value is not a positive int; the message names `what` and `model`.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive int for {model}, got {value!r}")
    return value


def one_of(value: Any, choices: tuple[str, ...], what: str, model: str) -> str:
    """Return `value` if it is one of `choices`, else raise listing them.

    Raises:
        ConfigError: the value is not one of the choices.
    """
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{what} must be one of {valid} for {model}, got {value!r}")
    return value


class ECGModel(nn.Module):
    """Base of every architecture: `stem -> stages -> head` on (N, C, L) signals.

    Subclasses call `super().__init__(...)` first, then set `stem` (any module), `stages` (an
    `nn.Sequential` whose children are named "0", "1", ...) and `head` (an `nn.Sequential`
    whose last child is the classifier `fc`, an `nn.Linear`). Everything else (freezing,
    head reset, config) lives here. What a model takes and gives is declared on its class
    (`input_kind`, `output_kind`, `pretext_prefixes`, `can_reconstruct`), so callers read it
    without building a forward pass.
    At `max_freeze_depth` what still trains is `head_trainable` plus `body_trainable` (parts
    outside the freeze groups, e.g. a U-Net decoder); `probe_kind` names the result.

    Args:
        name: the registry name; recorded in `config` so `create_model(**config)` rebuilds it.
        in_channels: number of leads C of the input.
        num_classes: number of logits.
        input_length: samples per record L, or None where the architecture does not need it.
        options: the architecture's resolved options (defaults included), as plain data.

    Raises:
        ConfigError: a size is not a positive int.
    """

    stem: nn.Module
    stages: nn.Sequential
    head: nn.Sequential

    #: State-dict key prefixes of the head: skip exactly these when loading pretrained
    #: weights for a different label set.
    head_prefixes: tuple[str, ...] = ("head.",)
    #: State-dict key prefixes of the layer `reset_head` replaces (a subset of the head).
    classifier_prefixes: tuple[str, ...] = ("head.fc.",)
    #: "signal": the forward takes (N, C, L); "image": (N, C, H, W).
    input_kind: ClassVar[str] = "signal"
    #: "record": the forward gives (N, num_classes); "per_sample": (N, num_classes, L).
    output_kind: ClassVar[str] = "record"
    #: State-dict prefixes of pretext-only parts (not in the classifier's forward); a
    #: fine-tuning run drops them when it loads pretrained weights.
    pretext_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        name: str,
        in_channels: int,
        num_classes: int,
        input_length: int | None = None,
        options: dict[str, Any],
    ) -> None:
        super().__init__()
        self.name = name
        self.in_channels = positive_int(in_channels, "in_channels", name)
        self.num_classes = positive_int(num_classes, "num_classes", name)
        if input_length is not None:
            positive_int(input_length, "input_length", name)
        self.input_length = input_length
        self.options = dict(options)
        #: True where the head only accepts inputs of exactly `input_length` samples.
        self.requires_input_length = False
        self._freeze_depth = 0

    # ---- description -------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """Plain-data description that rebuilds this architecture: `create_model(**config)`."""
        return {
            "name": self.name,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "input_length": self.input_length,
            "options": copy.deepcopy(self.options),
        }

    @property
    def freeze_groups(self) -> tuple[str, ...]:
        """Module names that freeze depth counts, in forward order; only those with parameters."""
        names = ("stem", *(f"stages.{i}" for i in range(len(self.stages))))
        return tuple(n for n in names if _has_parameters(self.get_submodule(n)))

    @property
    def max_freeze_depth(self) -> int:
        """The largest valid freeze depth (every group frozen, only the head trains)."""
        return len(self.freeze_groups)

    @property
    def freeze_depth(self) -> int:
        """The depth of the last `freeze` call (0 when never frozen)."""
        return self._freeze_depth

    @property
    def can_reconstruct(self) -> bool:
        """Whether `reconstruct(x)` works (the "autoencoder" pretraining task needs it)."""
        return False

    @property
    def head_trainable(self) -> tuple[str, ...]:
        """Module names of the head's layers with parameters, in order; they always train."""
        return tuple(
            f"head.{n}" for n, m in self.head.named_modules() if n and _has_parameters(m, False)
        )

    @property
    def body_trainable(self) -> tuple[str, ...]:
        """Top-level modules outside the freeze groups and the head, which always train.

        A U-Net's decoder is one. Pretext-only parts are left out: the classifier's forward
        does not reach them, so they get no gradient.
        """
        groups = self.freeze_groups
        names = []
        for key, _ in self.named_parameters():
            if key.startswith(("head.", *self.pretext_prefixes)) or _in_groups(key, groups):
                continue
            top = key.split(".")[0]
            if top not in names:
                names.append(top)
        return tuple(names)

    @property
    def probe_kind(self) -> str:
        """What trains at `max_freeze_depth`, in one word.

        "linear": only the classifier (a linear probe); "mlp": only the head, whose layers
        are all linear (hidden layers before the classifier); "head": only the head, with
        other layers; "partial": `body_trainable` parts train as well, so it is no probe.
        """
        if self.body_trainable:
            return "partial"
        classifier = tuple(p.rstrip(".") for p in self.classifier_prefixes)
        if self.head_trainable == classifier:
            return "linear"
        layers = (self.get_submodule(n) for n in self.head_trainable)
        return "mlp" if all(isinstance(m, nn.Linear) for m in layers) else "head"

    def trained_parts(self) -> tuple[str, ...]:
        """The parts that train as the model stands (frozen groups and parameters switched
        off by a zero learning rate left out): freeze groups, head layers and the other
        top-level parts, each named once if any of its parameters trains."""
        parts = (*self.freeze_groups, *self.head_trainable, *self.body_trainable)
        return tuple(
            name
            for name in parts
            if any(p.requires_grad for p in self.get_submodule(name).parameters())
        )

    # ---- forward -----------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return what the head consumes, from `x` of shape (N, C, L)."""
        self._check_input(x)
        return self.stages(self.stem(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Return logits (N, num_classes) from `forward_features`' output."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (N, num_classes) for `x` of shape (N, C, L)."""
        return self.forward_head(self.forward_features(x))

    def _check_input(self, x: torch.Tensor) -> None:
        # A wrong lead count or length otherwise fails deep inside a conv or linear layer.
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise DataError(
                f"input must have shape (N, {self.in_channels}, L) for {self.name} "
                f"(in_channels={self.in_channels}), got {tuple(x.shape)}"
            )
        if self.requires_input_length and x.shape[2] != self.input_length:
            raise DataError(
                f"input length must equal input_length={self.input_length} for {self.name} "
                f"with options {self.options}, got {x.shape[2]}"
            )

    # ---- transfer learning -------------------------------------------------------------

    def freeze(self, depth: int) -> None:
        """Freeze the first `depth` groups of `freeze_groups`; unfreeze everything else.

        Each call starts from scratch, so `freeze(0)` undoes any earlier freeze. Frozen
        parameters get `requires_grad=False` and lose any stale `.grad`; frozen batch-norm
        layers stay in eval mode (running statistics fixed) across later `train()` calls.

        Args:
            depth: 0 (full fine-tune) to `max_freeze_depth` (only the head trains).

        Raises:
            ConfigError: depth is not an int in 0..max_freeze_depth.
        """
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise ConfigError(f"freeze_depth must be an int for {self.name}, got {depth!r}")
        if depth < 0:
            raise ConfigError(f"freeze_depth must be >= 0 for {self.name}, got {depth}")
        if depth > self.max_freeze_depth:
            raise ConfigError(
                f"freeze_depth must be <= {self.max_freeze_depth} for {self.name}, got {depth}"
            )
        for p in self.parameters():
            p.requires_grad_(True)
        for group in self.freeze_groups[:depth]:
            for p in self.get_submodule(group).parameters():
                p.requires_grad_(False)
                p.grad = None
        self._freeze_depth = depth
        self.train(self.training)  # re-apply batch-norm modes for the new depth

    def train(self, mode: bool = True) -> Self:
        """Set train/eval mode; batch-norm layers of frozen groups always stay in eval mode."""
        super().train(mode)
        if mode:
            # Only batch norm, not the whole group: a cuDNN RNN in eval mode cannot backward.
            for group in self.freeze_groups[: self._freeze_depth]:
                for m in self.get_submodule(group).modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with `requires_grad` (build the optimizer from these)."""
        return [p for p in self.parameters() if p.requires_grad]

    def reset_head(self, num_classes: int) -> None:
        """Replace the classifier `head.fc` by a fresh one with `num_classes` outputs.

        The rest of the head keeps its structure and weights.

        Raises:
            ConfigError: num_classes is not a positive int.
        """
        positive_int(num_classes, "num_classes", self.name)
        old = self.head.fc
        self.head.fc = nn.Linear(
            old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype
        )
        self.num_classes = num_classes


def _has_parameters(module: nn.Module, recurse: bool = True) -> bool:
    return next(module.parameters(recurse), None) is not None


def _in_groups(key: str, groups: tuple[str, ...]) -> bool:
    return any(key.startswith(g + ".") for g in groups)
