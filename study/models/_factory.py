"""The one way in: `create_model(name, ...)` over the `MODELS` registry.

A model factory is a function registered with `@MODELS.register`, whose keyword-only
parameters are `in_channels`, `num_classes`, `input_length` and then the architecture's
options (each with a default). The options are read from that signature, so an unknown option
fails here, naming it and the valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch

from study._registry import Registry
from study.errors import ConfigError
from study.models._base import ECGModel

__all__ = ["MODELS", "create_model", "list_models", "model_info"]

MODELS: Registry[Callable[..., ECGModel]] = Registry("model")

_SIZES = frozenset({"in_channels", "num_classes", "input_length"})


def list_models() -> list[str]:
    """Return the registered model names, sorted."""
    return MODELS.names()


def create_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    input_length: int | None = None,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> ECGModel:
    """Build the registered model `name`.

    Options may come as keywords, as the `options` mapping, or both, so a saved
    `model.config` rebuilds the model with `create_model(**config)`.

    Args:
        name: a name from `list_models()`.
        in_channels: number of leads of the input.
        num_classes: number of logits.
        input_length: samples per record; required by architectures whose head sees every
            time step (e.g. `gru` with `head="flatten"`).
        options: architecture options as a mapping (what `model.config["options"]` holds).
        **kwargs: architecture options as keywords (e.g. `base_width=16`).

    Returns:
        The model, with nothing frozen.

    Raises:
        ConfigError: unknown name (the message lists the known ones), unknown or duplicated
            option (the message lists the valid ones), or an invalid value.
    """
    factory = MODELS.get(name)
    merged = _merge_options(name, options, kwargs)
    return factory(
        in_channels=in_channels, num_classes=num_classes, input_length=input_length, **merged
    )


def model_info(name: str, **options: Any) -> dict[str, Any]:
    """Describe model `name` with `options` without real input sizes or memory.

    Builds the model on the meta device (no storage), with placeholder sizes.

    Returns:
        A dict with "name", "options" (resolved, defaults included), "freeze_groups",
        "max_freeze_depth", "head_prefixes", "classifier_prefixes" and
        "requires_input_length".

    Raises:
        ConfigError: as `create_model`.
    """
    extra = options.pop("options", None)
    with torch.device("meta"):
        # input_length is a placeholder: it changes sizes, never groups or prefixes.
        model = create_model(
            name, in_channels=1, num_classes=2, input_length=16, options=extra, **options
        )
    return {
        "name": name,
        "options": model.config["options"],
        "freeze_groups": model.freeze_groups,
        "max_freeze_depth": model.max_freeze_depth,
        "head_prefixes": model.head_prefixes,
        "classifier_prefixes": model.classifier_prefixes,
        "requires_input_length": model.requires_input_length,
        # "signal" (N, leads, samples) or "image" (N, channels, H, W)
        "input_kind": getattr(model, "input_kind", "signal"),
        # "record" (N, classes) or "per_sample" (N, classes, samples)
        "output_kind": getattr(model, "output_kind", "record"),
        # state-dict prefixes of pretext-only parts (an autoencoder's decoder)
        "pretext_prefixes": tuple(getattr(model, "pretext_prefixes", ())),
        # whether `reconstruct(x)` works: the "autoencoder" pretraining task needs it
        "can_reconstruct": hasattr(model, "reconstruct")
        and bool(model.config["options"].get("with_decoder", True)),
    }


def _option_names(factory: Callable[..., ECGModel]) -> list[str]:
    params = inspect.signature(factory).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _SIZES]


def _merge_options(
    name: str, options: Mapping[str, Any] | None, kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"options must be a mapping for model {name!r}, got {options!r}")
    merged = dict(options or {})
    both = sorted(set(merged) & set(kwargs))
    if both:
        raise ConfigError(
            f"option(s) {', '.join(both)} given both in options and as keywords "
            f"for model {name!r}; give each once"
        )
    merged.update(kwargs)
    valid = _option_names(MODELS.get(name))
    unknown = sorted(set(merged) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(repr(u) for u in unknown)} for model {name!r}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    return merged
