"""The one way in: `create_model(name, ...)` over the `MODELS` registry of model variants.

A variant is data over a builder class, as timm's `generate_default_cfgs` is: a name, the
builder arguments it fixes (block type, blocks per stage, ...), the defaults it changes and a
one-line doc; `register_variant` adds one. A variant's options are its builder's keyword-only
parameters (the sizes come as `**sizes: Unpack[ModelSizes]`) with their defaults, so an
unknown option fails here, naming it and the valid ones.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from study._registry import Registry
from study.errors import ConfigError
from study.models._base import SIZES, ECGModel

__all__ = [
    "MODELS",
    "ModelVariant",
    "create_model",
    "list_models",
    "model_info",
    "register_variant",
    "model_revision",
]


@dataclass(frozen=True)
class ModelVariant:
    """A registered architecture: `builder` with some arguments fixed and defaults resolved.

    Calling it builds the model: `resnet1d18(in_channels=12, num_classes=5, base_width=16)`.

    Attributes:
        name: the registry name, also the model's `name`.
        builder: the `ECGModel` subclass that builds it.
        fixed: builder arguments the variant sets and callers cannot (e.g. `layers`).
        option_names: the options callers may set, in the builder's order.
        defaults: the default of every option, and of every size that has one (the
            variant's, else `ECGModel`'s: input_length=None).
        doc: one line on what the variant is (its former factory's docstring).
        revision: bumped whenever the model a (name, options) builds changes; a unit's id
            includes it from revision 2 on, so a result of the earlier model is never taken
            for one of this model (a study planned before refuses to resume: its ids moved).
    """

    name: str
    builder: type[ECGModel]
    fixed: Mapping[str, Any]
    option_names: tuple[str, ...]
    defaults: Mapping[str, Any]
    doc: str
    revision: int = 1

    def resolve(
        self, options: Mapping[str, Any] | None, kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge options given as a mapping and as keywords, and fill in the defaults.

        Returns:
            Every option, in `option_names` order (a canonical form: equal settings give
            equal dicts in the same order).

        Raises:
            ConfigError: options is not a mapping, an option is given both ways, or an
                option is unknown (the message lists the valid ones).
        """
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError(f"options must be a mapping for model {self.name!r}, got {options!r}")
        merged = dict(options or {})
        both = sorted(set(merged) & set(kwargs))
        if both:
            raise ConfigError(
                f"option(s) {', '.join(both)} given both in options and as keywords "
                f"for model {self.name!r}; give each once"
            )
        merged.update(kwargs)
        unknown = sorted(set(merged) - set(self.option_names))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(repr(u) for u in unknown)} for model "
                f"{self.name!r}; valid options: {', '.join(self.option_names) or '(none)'}"
            )
        return {k: merged.get(k, self.defaults[k]) for k in self.option_names}

    def __call__(self, *, options: Mapping[str, Any] | None = None, **kwargs: Any) -> ECGModel:
        """Build the model from sizes and options given as keywords or as `options`.

        Raises:
            ConfigError: a size without default is missing, or as `resolve`, or an invalid
                value (raised by the builder).
        """
        sizes = {k: kwargs.pop(k) for k in SIZES if k in kwargs}
        resolved = self.resolve(options, kwargs)
        sizes = {k: self.defaults[k] for k in SIZES if k in self.defaults} | sizes
        missing = [k for k in SIZES if k not in sizes]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} must be given for model {self.name!r}: the variant has "
                "no default for it, got none"
            )
        return self.builder(**self.fixed, name=self.name, **sizes, **resolved)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Pickle by name, as the factory functions were (a Ray task may receive one).
        return _registered, (self.name,)


def _registered(name: str) -> ModelVariant:
    import study.models  # noqa: F401  (registers every variant)

    return MODELS.get(name)


MODELS: Registry[ModelVariant] = Registry("model")

# The sizes ECGModel gives a default (input_length=None); the others must be given.
_SIZE_DEFAULTS = {
    p.name: p.default
    for p in inspect.signature(ECGModel.__init__).parameters.values()
    if p.name in SIZES and p.default is not p.empty
}


def register_variant(
    name: str,
    builder: type[ECGModel],
    *,
    fixed: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    doc: str,
    revision: int = 1,
) -> ModelVariant:
    """Register `builder` with `fixed` arguments as model `name`.

    Args:
        name: the registry name.
        builder: an `ECGModel` subclass whose signature is its structural arguments
            (positional), then its options (keyword-only, each with a default), then
            `**sizes: Unpack[ModelSizes]`.
        fixed: a value for every structural argument without default.
        defaults: options or sizes whose default differs from the builder's (e.g. one lead).
        doc: one line on what the variant is; kept on the variant.
        revision: the model's revision (`ModelVariant.revision`); bump it when what the
            variant builds changes.

    Returns:
        The variant (callable: it builds the model).

    Raises:
        ConfigError: the name is taken, `fixed` does not name exactly the structural
            arguments, `defaults` names something that is not an option or size, or an
            option has no default.
    """
    fixed = dict(fixed or {})
    defaults = dict(defaults or {})
    params = list(inspect.signature(builder).parameters.values())
    options = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}
    structural = {p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD}
    required = {
        p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty
    }
    where = f"model variant {name!r} over {builder.__name__}"
    if not required <= set(fixed) <= structural:
        raise ConfigError(
            f"fixed must set the structural arguments {sorted(required)} (at most "
            f"{sorted(structural)}) for {where}, got {sorted(fixed)}"
        )
    stray = sorted(set(defaults) - set(options) - set(SIZES))
    if stray:
        raise ConfigError(
            f"defaults may only name options ({', '.join(options)}) or sizes "
            f"({', '.join(SIZES)}) for {where}, got {stray}"
        )
    resolved = {k: defaults.get(k, v) for k, v in options.items()}
    no_default = [k for k, v in resolved.items() if v is inspect.Parameter.empty]
    if no_default:
        raise ConfigError(f"every option needs a default for {where}; none for {no_default}")
    variant = ModelVariant(
        name=name,
        builder=builder,
        fixed=MappingProxyType(fixed),
        option_names=tuple(options),
        defaults=MappingProxyType(
            resolved | _SIZE_DEFAULTS | {k: defaults[k] for k in SIZES if k in defaults}
        ),
        doc=doc,
        revision=revision,
    )
    MODELS.register(variant, name=name)
    return variant


def model_revision(name: str) -> int:
    """The revision of model `name` (`ModelVariant.revision`).

    Raises:
        ConfigError: unknown name.
    """
    return MODELS.get(name).revision


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
    return MODELS.get(name)(
        in_channels=in_channels,
        num_classes=num_classes,
        input_length=input_length,
        options=options,
        **kwargs,
    )


def model_info(name: str, **options: Any) -> dict[str, Any]:
    """Describe model `name` with `options` without real input sizes or memory.

    Builds the model on the meta device (no storage), with placeholder sizes, once per
    (name, resolved options): later calls answer from a cache, each with its own copy.

    Returns:
        A dict with "name", "options" (resolved, defaults included), "freeze_groups",
        "max_freeze_depth", "head_prefixes", "classifier_prefixes", "requires_input_length",
        "input_kind", "output_kind", "pretext_prefixes", "can_reconstruct", and what trains
        at the largest freeze depth: "head_trainable", "body_trainable" and "probe_kind"
        (see `ECGModel`).

    Raises:
        ConfigError: as `create_model`.
    """
    resolved = MODELS.get(name).resolve(options.pop("options", None), options)
    if all(isinstance(v, _SCALARS) for v in resolved.values()):
        # The type goes into the key: True == 1 and 64.0 == 64 hash alike, but an option
        # given as 1.0 must fail validation rather than answer from 1's cache entry.
        info = _describe_cached(name, tuple((k, type(v), v) for k, v in resolved.items()))
    else:  # not hashable as a whole: describe without the cache (the builder will judge it)
        info = _describe(name, resolved)
    return copy.deepcopy(info)


_SCALARS = (bool, int, float, str, type(None))


# Bounded: a search over option values would otherwise keep every meta model description.
@functools.lru_cache(maxsize=256)
def _describe_cached(name: str, key: tuple[tuple[str, type, Any], ...]) -> dict[str, Any]:
    return _describe(name, {k: v for k, _, v in key})


def _describe(name: str, options: dict[str, Any]) -> dict[str, Any]:
    with torch.device("meta"):
        # input_length is a placeholder: it changes sizes, never groups or prefixes.
        model = MODELS.get(name)(in_channels=1, num_classes=2, input_length=16, options=options)
    return {
        "name": name,
        "options": model.config["options"],
        "freeze_groups": model.freeze_groups,
        "max_freeze_depth": model.max_freeze_depth,
        "head_prefixes": model.head_prefixes,
        "classifier_prefixes": model.classifier_prefixes,
        "requires_input_length": model.requires_input_length,
        "input_kind": model.input_kind,
        "output_kind": model.output_kind,
        "pretext_prefixes": model.pretext_prefixes,
        "can_reconstruct": model.can_reconstruct,
        "head_trainable": model.head_trainable,
        "body_trainable": model.body_trainable,
        "probe_kind": model.probe_kind,
    }
