"""Reading an experiment spec: YAML, then the schema (study.sweep.spec), then the checks
against the registries (study.sweep.resolve.check_spec). Every broken rule is reported at
once, naming the key, the rule and the value, before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from study.errors import ConfigError
from study.sweep.resolve import check_spec
from study.sweep.spec import Spec

__all__ = ["load_spec", "parse_spec", "spec_to_yaml"]


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid experiment spec {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            parent = _model_at(Spec, e["loc"][:-1])
            if parent is not None:
                msg += f"; valid keys: {', '.join(parent.model_fields)}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        value = e.get("input")
        shown = (
            ""
            if e["type"] in ("missing", "extra_forbidden") or isinstance(value, dict)
            else f" (got {value!r})"
        )
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class at `loc` inside `model`, if the path leads to one."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))
        found = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if found is None:
            return None
        model = found
    return model


def parse_spec(data: Any, source: str = "<dict>") -> Spec:
    """Validate a mapping (e.g. parsed YAML) into a Spec.

    Raises:
        ConfigError: listing every broken rule with its key and value.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid experiment spec {source}: expected a mapping at the top level,"
            f" got {type(data).__name__}"
        )
    try:
        spec = Spec.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None
    problems = check_spec(spec)
    if problems:
        lines = [f"invalid experiment spec {source}:"]
        lines += [f"  {where}: {msg}" for where, msg in problems]
        raise ConfigError("\n".join(lines))
    return spec


def load_spec(path: str | Path) -> Spec:
    """Read and validate an experiment YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment spec {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"experiment spec {path} is not valid YAML: {e}") from None
    return parse_spec(data, str(path))


def spec_to_yaml(spec: Spec) -> str:
    """The resolved spec (every default filled in), as written beside the results."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
