"""Checkpoints and pretrained weights as bytes, so any store can hold them."""

from __future__ import annotations

import io

import torch

from study.errors import TrainingError

__all__ = ["state_to_bytes", "load_state_bytes", "load_backbone"]


def state_to_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def load_state_bytes(data: bytes) -> dict:
    # weights_only: a checkpoint is data, never code to execute.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_backbone(model: torch.nn.Module, weights: dict, head_prefixes: tuple[str, ...]) -> None:
    """Load pretrained weights into every part of `model` except its head, strictly.

    Raises:
        TrainingError: a backbone key is missing or unexpected, or a shape differs (e.g.
            12-lead weights into a 1-lead model); the message names the keys.
    """
    own = model.state_dict()
    backbone = {k: v for k, v in weights.items() if not k.startswith(head_prefixes)}
    wanted = {k for k in own if not k.startswith(head_prefixes)}
    missing, unexpected = wanted - backbone.keys(), backbone.keys() - wanted
    if missing or unexpected:
        raise TrainingError(
            f"pretrained weights do not fit the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    bad = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in backbone.items()
        if v.shape != own[k].shape
    ]
    if bad:
        raise TrainingError(f"pretrained weight shapes differ from the model: {bad[:5]}")
    model.load_state_dict(backbone, strict=False)
