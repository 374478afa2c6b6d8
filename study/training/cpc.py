"""Weimann & Conrad's `future` pretraining task: their variant of contrastive predictive coding.

A port of the CPC task of github.com/kweimann/ecg-transfer-learning (TensorFlow/Keras) to a
wrapper around any record classifier of the model registry. The wrapper's `forward(x)`
returns the scalar loss, so the training loop calls `net(x)` (DDP's gradient hooks fire) and
treats the output as the loss; `cpc.encoder.state_dict()` is the pretrained backbone.

What their code does, and this module with it (file paths in their repository):

- Cutting (`transplant/datasets/icentia11k.py: cpc_data_generator`): a context of
  `context_size` frames of `frame_size` samples, consecutive frames `frame_size -
  context_overlap` apart, and one positive frame starting `context_size * (frame_size -
  context_overlap) + frame_size * positive_offset` samples after the context start (so with an
  overlap the positive overlaps the last context frame by `context_overlap` samples; kept as
  is). Here their "frame" is a *window* and the caller's input row is the whole span,
  `cpc_input_length(...)` samples long.
- Defaults (`pretraining/trainer.py` argparse): `--frame-size 2048`, `--context-size 8`,
  `--ns 1` (one negative), `--positive-offset 0`, `--context-overlap 0`. So by default a
  row is 9 * 2048 = 18,432 samples (73.7 s at Icentia11k's 250 Hz) and chance is 1 in 2.
- Encoder (`finetuning/utils.py: ecg_feature_extractor`, `transplant/tasks/utils.py:
  embed_frames`): the ResNet followed by global average pooling, applied to every frame on
  its own; context frames and candidate frames go through it in two separate calls (which
  matters for batch norm's batch statistics; kept). Here: the encoder's `stem -> stages ->
  head` without the classifier `head.fc`, i.e. the vector its classifier would see (global
  average pooling for `resnet*v2`, as theirs; `resnet1d*` adds its hidden layer, which the
  fine-tuning loader transfers too).
- Context network (`transplant/tasks/cpc.py: CPCSolver`, `transplant/modules/attn_pool.py`,
  `transplant/modules/transformer.py`, built in `pretraining/utils.py: task_solver`): not a
  GRU but a Transformer encoder that pools the context: a learned pool token (truncated
  normal) is prepended to the frame embeddings, the sequence is scaled by sqrt(d_model),
  sinusoidal positions (max 512) are added, then 3 post-norm layers with d_model = the
  encoder's feature width, 8 heads, feed-forward width 2 * d_model, ReLU, dropout 0; the
  pool token's output is the context vector. Their attention divides the logits by
  sqrt(d_model), not sqrt(d_model / heads) (kept); Keras' LayerNormalization eps is 1e-3 and
  its Dense layers start Glorot-uniform with zero bias (kept).
- Prediction and loss (`CPCSolver.call`, `pretraining/trainer.py`): no per-step predictor
  matrices and no projection: the score of a candidate is the dot product of the context
  vector with the candidate's embedding; softmax cross-entropy (`from_logits=True`) over the
  1 + ns candidates, and accuracy of the arg-max. One future frame is predicted, not several
  steps.
- Negatives (`cpc_data_generator`, `_choose_random_segment`): ns frames, each from a random
  segment of the ~16 buffered patients, at a random start.

What had to be chosen here (their data pipeline does not exist in a batch-wise loop):

- Negatives come from the batch: each one is a window at a uniformly random start (any
  sample offset, as theirs) in a *different* row of the batch, so a batch needs at least two
  rows. Excluding the own row stands in for their buffer of many segments, where drawing the
  positive's own segment is rare; in a batch it would be 1 in N and yield false negatives.
  Under DDP each rank draws from its own rows only (theirs were drawn per example, before
  batching, so the batch never mattered).
- The positive sits at candidate index 0 (theirs is inserted at a random index; the scores
  and the loss do not depend on the order). Accuracy counts a row only when the positive
  scores strictly above every negative, so constant scores give 0, not 1.
- In eval mode the negatives come from a generator seeded with `eval_seed` at every call, so
  a validation pass is repeatable and epochs compare on one scale (their validation set was
  drawn once and cached). In train mode they come from torch's global CPU generator.
- The encoder's classifier takes no part: its parameters get `requires_grad=False`, so DDP
  works without `find_unused_parameters` and the optimizer skips them. Fine-tuning replaces
  the classifier anyway (`classifier_prefixes`).
- Not reproduced here, belonging to the data and optimizer side: they normalise signals with
  Icentia11k's global mean 0.0018 and std 1.3711, and train with Adam(beta_1=0.9,
  beta_2=0.98, epsilon=1e-9) at Keras' default learning rate 1e-3, batch size 32.

State dict: the encoder under `encoder.`, everything else under `PRETEXT_PREFIXES`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError, DataError
from study.models._base import ECGModel, positive_int

__all__ = ["CPC", "ContextNetwork", "PRETEXT_PREFIXES", "cpc_input_length"]

#: State-dict key prefixes of the pretext-only parts (the context network); drop them, keep
#: `encoder.` (with `encoder.` stripped, that is `cpc.encoder.state_dict()`).
PRETEXT_PREFIXES: tuple[str, ...] = ("context.",)

MAX_CONTEXT = 511  # their positional table has 512 rows: the pool token plus the context
_NAME = "CPC"


def _non_negative_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{what} must be an int >= 0 for {_NAME}, got {value!r}")
    return value


def cpc_input_length(
    window_length: int = 2048,
    context_windows: int = 8,
    positive_offset: int = 0,
    context_overlap: int = 0,
) -> int:
    """Samples per input row that the CPC task with this layout needs.

    context_windows * (window_length - context_overlap) + window_length * (positive_offset + 1):
    the context, the windows skipped by the offset, and the positive window.

    Args:
        window_length: samples per window (their `--frame-size`, 2048).
        context_windows: windows in the context (their `--context-size`, 8).
        positive_offset: windows between the context and the positive (their
            `--positive-offset`, 0: the positive follows the context directly).
        context_overlap: samples shared by consecutive context windows (their
            `--context-overlap`, 0).

    Returns:
        The exact length L of the (N, C, L) rows `CPC.forward` accepts.

    Raises:
        ConfigError: a value breaks its rule; the message names it.
    """
    positive_int(window_length, "window_length", _NAME)
    positive_int(context_windows, "context_windows", _NAME)
    _non_negative_int(positive_offset, "positive_offset")
    _non_negative_int(context_overlap, "context_overlap")
    if context_windows > MAX_CONTEXT:
        raise ConfigError(
            f"context_windows must be <= {MAX_CONTEXT} for {_NAME} (their positional table "
            f"holds 512 positions, one for the pool token), got {context_windows}"
        )
    if context_overlap >= window_length:
        raise ConfigError(
            f"context_overlap must be < window_length={window_length} for {_NAME}, "
            f"got {context_overlap}"
        )
    return context_windows * (window_length - context_overlap) + window_length * (
        positive_offset + 1
    )


def _positions(length: int, d_model: int) -> torch.Tensor:
    # Their `positional_embedding`: sin on even feature indices, cos on odd ones.
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    i = torch.arange(d_model)[None, :]
    angles = pos / torch.pow(10000.0, (2 * (i // 2)).double() / d_model)
    table = torch.where(i % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float()


class _EncoderLayer(nn.Module):
    """Their `EncoderLayer`: post-norm self-attention and ReLU feed-forward, no dropout."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-3)  # Keras' default epsilon
        self.ff1 = nn.Linear(d_model, 2 * d_model)
        self.ff2 = nn.Linear(2 * d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-3)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        return x.view(n, t, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        # Their scaled_dot_product_attention divides by sqrt(d_model), not the head width.
        a = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(d))
        x = self.norm1(self.o(a.transpose(1, 2).reshape(n, t, d)) + x)
        return self.norm2(self.ff2(F.relu(self.ff1(x))) + x)


class ContextNetwork(nn.Module):
    """Their `AttentionPooling(Encoder(...))`: (N, K, d_model) context embeddings -> (N, d_model).

    Args:
        d_model: feature width (the encoder's).
        num_layers: Transformer layers (3 in their `task_solver`).
        num_heads: attention heads (8); must divide d_model.
    """

    def __init__(self, d_model: int, num_layers: int = 3, num_heads: int = 8) -> None:
        super().__init__()
        self.d_model = d_model
        self.pool_token = nn.Parameter(torch.empty(d_model))
        self.layers = nn.ModuleList(_EncoderLayer(d_model, num_heads) for _ in range(num_layers))
        # A fixed table (a constant in theirs, not a weight): kept out of the state dict.
        self.register_buffer("positions", _positions(MAX_CONTEXT + 1, d_model), persistent=False)
        nn.init.trunc_normal_(self.pool_token, 0.0, 1.0, -2.0, 2.0)  # tf.random.truncated_normal
        for m in self.modules():
            if isinstance(m, nn.Linear):  # Keras Dense: Glorot-uniform, zero bias
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, k, _ = z.shape
        token = self.pool_token.to(z.dtype).expand(n, 1, -1)
        x = torch.cat([token, z], dim=1) * math.sqrt(self.d_model)
        x = x + self.positions[: k + 1].to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return x[:, 0]


class CPC(nn.Module):
    """The `future` task around `encoder`: pick the window that follows a context.

    Each input row (N, C, L) with L = `cpc_input_length(...)` holds `context_windows` context
    windows, then (after `positive_offset` skipped windows) the positive window. The context
    is embedded window by window and pooled by the context network; each of the
    1 + `num_negatives` candidates (the positive and windows of other rows) is scored by the
    dot product of its embedding with the context vector.

    Args:
        encoder: a record classifier on signals from the model registry (resnet18v2,
            resnet34v2, resnet50v2, resnet1d18, ...); its classifier `head.fc` is set to
            `requires_grad=False` because it takes no part.
        window_length: samples per window (their `--frame-size` 2048).
        context_windows: windows in the context (their `--context-size` 8).
        num_negatives: negatives per row (their `--ns` 1).
        positive_offset: windows between the context and the positive (their 0).
        context_overlap: samples shared by consecutive context windows (their 0).
        num_layers: Transformer layers of the context network (their 3).
        num_heads: attention heads (their 8); must divide the encoder's feature width.
        eval_seed: seed of the negatives drawn in eval mode (repeatable validation).

    Raises:
        ConfigError: the encoder does not fit (not an ECGModel, image input, per-sample
            output, a head that needs another input length, a width the heads do not
            divide) or a layout value breaks its rule.
    """

    def __init__(
        self,
        encoder: ECGModel,
        *,
        window_length: int = 2048,
        context_windows: int = 8,
        num_negatives: int = 1,
        positive_offset: int = 0,
        context_overlap: int = 0,
        num_layers: int = 3,
        num_heads: int = 8,
        eval_seed: int = 0,
    ) -> None:
        super().__init__()
        self.input_length = cpc_input_length(
            window_length, context_windows, positive_offset, context_overlap
        )
        _check_encoder(encoder, window_length)
        positive_int(num_negatives, "num_negatives", _NAME)
        positive_int(num_layers, "num_layers", _NAME)
        positive_int(num_heads, "num_heads", _NAME)
        _non_negative_int(eval_seed, "eval_seed")
        d_model = encoder.head.fc.in_features
        if d_model % num_heads:
            raise ConfigError(
                f"num_heads must divide the encoder's feature width for {_NAME}: "
                f"{encoder.name} gives {d_model} features, num_heads={num_heads}"
            )
        self.window_length = window_length
        self.context_windows = context_windows
        self.num_negatives = num_negatives
        self.positive_offset = positive_offset
        self.context_overlap = context_overlap
        self.eval_seed = eval_seed
        self.encoder = encoder
        self.context = ContextNetwork(d_model, num_layers, num_heads)
        self._options = {
            "window_length": window_length,
            "context_windows": context_windows,
            "num_negatives": num_negatives,
            "positive_offset": positive_offset,
            "context_overlap": context_overlap,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "eval_seed": eval_seed,
        }
        for p in encoder.head.fc.parameters():
            p.requires_grad_(False)

    @property
    def options(self) -> dict[str, Any]:
        """The resolved task options (defaults included), as plain data."""
        return dict(self._options)

    @property
    def num_candidates(self) -> int:
        """Candidates per row (positive + negatives); chance loss is log of this."""
        return 1 + self.num_negatives

    # ---- forward -----------------------------------------------------------------------

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """Encoder features (M, d_model) of windows (M, C, window_length)."""
        h = self.encoder.forward_features(windows)
        for module in self.encoder.head.children():
            if module is not self.encoder.head.fc:  # the classifier is last (ECGModel contract)
                h = module(h)
        return h

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (N, 1 + num_negatives) of rows `x` (N, C, L); the positive is column 0.

        Raises:
            DataError: `x` is not (N, encoder.in_channels, input_length) with N >= 2.
        """
        self._check_input(x)
        n, c, _ = x.shape
        w, k = self.window_length, self.context_windows
        stride = w - self.context_overlap
        context = x.unfold(2, w, stride)[:, :, :k]  # (N, C, K, W)
        context = context.permute(0, 2, 1, 3).reshape(n * k, c, w)
        start = k * stride + w * self.positive_offset
        positive = x[:, None, :, start : start + w]  # (N, 1, C, W)
        candidates = torch.cat([positive, self._negatives(x)], dim=1)
        m = candidates.shape[1]
        # Two encoder calls, as theirs: batch norm sees context and candidates apart.
        z_context = self.embed(context).view(n, k, -1)
        z_candidates = self.embed(candidates.reshape(n * m, c, w)).view(n, m, -1)
        pooled = self.context(z_context)
        return torch.einsum("nd,nmd->nm", pooled, z_candidates)

    def loss_and_accuracy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(InfoNCE loss, accuracy) on rows `x` (N, C, L), both 0-dim tensors.

        The loss is the softmax cross-entropy of the positive among the candidates (chance
        level log(num_candidates)); accuracy is the share of rows whose positive scores
        strictly above every negative (detached).
        """
        scores = self.logits(x).float()
        target = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
        loss = F.cross_entropy(scores, target)
        with torch.no_grad():
            acc = (scores[:, 0] > scores[:, 1:].amax(dim=1)).float().mean()
        return loss, acc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The scalar InfoNCE loss of rows `x` (N, C, L): what the training loop minimises."""
        return self.loss_and_accuracy(x)[0]

    # ---- helpers -----------------------------------------------------------------------

    def _negatives(self, x: torch.Tensor) -> torch.Tensor:
        """(N, num_negatives, C, W): windows at random starts in other rows of the batch."""
        n, _, length = x.shape
        w, ns = self.window_length, self.num_negatives
        # Drawn on the CPU, so a seed gives the same negatives on any device.
        gen = None if self.training else torch.Generator().manual_seed(self.eval_seed)
        other = (torch.arange(n)[:, None] + torch.randint(1, n, (n, ns), generator=gen)) % n
        start = torch.randint(0, length - w + 1, (n, ns), generator=gen)
        # unfold is a view; indexing copies only the chosen windows: (N, ns, C, W).
        return x.unfold(2, w, 1)[other.to(x.device), :, start.to(x.device)]

    def _check_input(self, x: torch.Tensor) -> None:
        c = self.encoder.in_channels
        if x.ndim != 3 or x.shape[1] != c or x.shape[2] != self.input_length:
            raise DataError(
                f"CPC input must have shape (N, {c}, {self.input_length}): "
                f"{self.context_windows} context windows of {self.window_length} samples "
                f"(overlap {self.context_overlap}), {self.positive_offset} skipped, 1 positive "
                f"(see cpc_input_length), got {tuple(x.shape)}"
            )
        if x.shape[0] < 2:
            raise DataError(
                f"CPC needs at least 2 rows per batch (negatives come from other rows), "
                f"got {x.shape[0]}; drop or merge a last batch of 1"
            )


def _check_encoder(encoder: Any, window_length: int) -> None:
    if not isinstance(encoder, ECGModel):
        raise ConfigError(
            f"encoder must be an ECGModel from create_model for {_NAME}, "
            f"got {type(encoder).__name__}"
        )
    input_kind = getattr(encoder, "input_kind", "signal")
    output_kind = getattr(encoder, "output_kind", "record")
    if input_kind != "signal" or output_kind != "record":
        raise ConfigError(
            f"encoder must be a record classifier on signals for {_NAME} (one feature vector "
            f"per window); {encoder.name} takes {input_kind} input and gives {output_kind} "
            "output"
        )
    if encoder.requires_input_length and encoder.input_length != window_length:
        raise ConfigError(
            f"{encoder.name} with options {encoder.options} only accepts inputs of "
            f"input_length={encoder.input_length} samples, but CPC feeds it windows of "
            f"window_length={window_length}; build it with input_length={window_length}"
        )
