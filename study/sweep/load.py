"""Reading an experiment spec: YAML, then the schema (study.sweep.spec), then the checks
against the registries (study.sweep.resolve.check_spec). Every broken rule is reported at
once, naming the key, the rule and the value, before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from study.errors import ConfigError, StorageError
from study.sweep.resolve import check_spec
from study.sweep.spec import Spec

if TYPE_CHECKING:
    from study.store import Store

__all__ = [
    "load_spec",
    "parse_spec",
    "read_yaml",
    "read_stored_spec",
    "load_stored_spec",
    "check_study_name",
    "spec_to_yaml",
]


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


def read_yaml(data: bytes, source: str) -> Any:
    """Parse YAML bytes, with one-line errors that name `source`, the line and the problem.

    Raises:
        ConfigError: `data` is not text (a binary file) or not valid YAML.
    """
    try:
        return yaml.safe_load(data)
    except yaml.reader.ReaderError as e:
        if e.encoding == "unicode":  # decoded, but holds a control character
            what = f"character #x{e.character:04x} at offset {e.position} ({e.reason})"
        else:
            what = f"byte 0x{e.character:02x} at offset {e.position} is not {e.encoding}"
        raise ConfigError(f"{source} is not a YAML text file: {what}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = e.problem or e.context or "not YAML"
        context = e.context_mark
        if e.context and e.problem and context is not None and context.line != mark.line:
            problem += f" ({e.context} that starts at line {context.line + 1})"
        raise ConfigError(f"{source} is not valid YAML: {where}{problem}") from None
    except yaml.YAMLError as e:  # no position to name
        raise ConfigError(f"{source} is not valid YAML: {' '.join(str(e).split())}") from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate an experiment YAML file.

    Raises:
        ConfigError: the file is missing, not a YAML text file, not valid YAML, or breaks
            a rule of the spec.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment spec {path} does not exist")
    return parse_spec(read_yaml(path.read_bytes(), f"experiment spec {path}"), str(path))


def _restore_hint(store: Store) -> str:
    return (
        f"restore it from a backup, or copy the experiment file the study was run with to "
        f"{store.uri}/spec.yaml (the stored plan.parquet checks that it plans the same "
        "units); until then `study resume`, `status` and `report` refuse the study"
    )


def read_stored_spec(store: Store) -> Any:
    """The parsed YAML of a study's spec.yaml, not yet validated.

    Raises:
        StorageError: the store holds no study (no spec.yaml; an S3 bucket that does not
            exist is named), or its spec.yaml is damaged (not YAML: the line is named).
    """
    if not store.exists("spec.yaml"):
        raise StorageError(f"{store.uri} is not a study (no spec.yaml)")
    source = f"{store.uri}/spec.yaml"
    try:
        return read_yaml(store.read_bytes("spec.yaml"), source)
    except ConfigError as e:
        raise StorageError(
            f"the study's stored spec is damaged: {e}; {_restore_hint(store)}"
        ) from None


def load_stored_spec(store: Store) -> Spec:
    """A study's spec.yaml, validated.

    Raises:
        StorageError: as `read_stored_spec`.
        ConfigError: the stored spec breaks a rule of this code's spec (damaged, edited by
            hand, or written by a version of this code with other rules).
    """
    data = read_stored_spec(store)
    try:
        return parse_spec(data, f"{store.uri}/spec.yaml")
    except ConfigError as e:
        raise ConfigError(
            f"{e}\n(this is the study's stored spec: damaged, edited, or written by a version "
            f"of this code with other rules; {_restore_hint(store)})"
        ) from None


# A study name given on the command line obeys the spec's own `name` field (one rule).
_NAME_FIELD = Spec.model_fields["name"]
_NAME_ADAPTER = TypeAdapter(Annotated[_NAME_FIELD.annotation, _NAME_FIELD])


def check_study_name(name: str, flag: str = "--name") -> str:
    """Check a study name given on the command line by the rule of a spec's `name` (it
    becomes a folder under the storage, so it must not leave it).

    Raises:
        ConfigError: naming the rule and the value.
    """
    pattern = next(m.pattern for m in _NAME_FIELD.metadata if getattr(m, "pattern", None))
    try:
        _NAME_ADAPTER.validate_python(name)
    except ValidationError:
        raise ConfigError(
            f"{flag} must be a study name like a spec's name: letters, digits and _.- only, "
            f"starting with a letter or digit (no path separators, not . or ..; pattern "
            f"{pattern}), got {name!r}"
        ) from None
    return name


def spec_to_yaml(spec: Spec) -> str:
    """The resolved spec (every default filled in), as written beside the results."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
