"""Dataset sources: one interface over the built-in synthetic domains and the real datasets'
readers, and the one registry a spec's dataset names are looked up in.

A source knows what a spec may ask of it (label sets and their kinds, reader options, whether
it reads a downloaded folder), what of it enters the prepared cache's key (its version; for
a folder, a fingerprint of the folder's content), and how to stream its records as rows of
the prepared cache (`open`).

Every source says what its patient-level split really groups by (`split_by`): "patient"
where the dataset identifies patients, "record" where it publishes no patient ids, so each
record stands for its own patient and one patient's records may land in different splits.
`split_basis` says where the patient ids come from, or why there are none; the prepared
cache records both in meta.json and `study data prepare` prints `describe_split`.

The fingerprint (`folder_fingerprint`) hashes the relative path and the size of every file
under the folder, so moving or copying the folder keeps it, and adding, removing, renaming or
resizing a file changes it. Hidden names (".*": e.g. the downloader's index) and unfinished
downloads ("*.part") are left out. A change that keeps every size (a file rewritten in place
with other bytes of the same length) is not seen: the fingerprint does not read the data.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from tqdm.auto import tqdm

from study.data.config import DatasetConfig
from study.data.records import Rows, RowSource, Signal
from study.errors import ConfigError, DataError

__all__ = [
    "SPLIT_BY",
    "SplitBy",
    "describe_split",
    "DatasetSource",
    "SyntheticSource",
    "ReaderSource",
    "Fingerprint",
    "dataset_source",
    "list_datasets",
    "folder_fingerprint",
]


#: What a "patient-level" split groups by: patients, or records where there are no patient ids.
SplitBy = Literal["patient", "record"]
SPLIT_BY: tuple[str, ...] = get_args(SplitBy)


def describe_split(split_by: str, basis: str) -> str:
    """The one-line account of a split: "split by patient (patient_id of ...)" or
    "split by record: CinC 2017 publishes no patient ids"."""
    if split_by == "patient":
        return f"split by patient ({basis})"
    return f"split by {split_by}: {basis}"


def _declared_split(owner: type, name: str) -> tuple[SplitBy, str]:
    """`owner`'s (split_by, split_basis), checked: every source must declare them.

    Raises:
        ConfigError: one is missing, split_by is not one of SPLIT_BY, or the basis is empty.
    """
    split_by = getattr(owner, "split_by", None)
    basis = getattr(owner, "split_basis", None)
    if split_by not in SPLIT_BY or not isinstance(basis, str) or not basis.strip():
        raise ConfigError(
            f"dataset {name!r} ({owner.__name__}) must declare split_by, one of "
            f"{', '.join(SPLIT_BY)}, and a non-empty split_basis (where its patient ids come "
            f"from, or why it has none); got split_by={split_by!r}, split_basis={basis!r}"
        )
    return split_by, basis


@dataclass(frozen=True)
class Fingerprint:
    """What a dataset folder held when it was prepared.

    Attributes:
        digest: hex SHA-256 over every file's relative path and size (module docstring).
        files: how many files it covered.
        bytes: their total size.
    """

    digest: str
    files: int
    bytes: int

    @property
    def short(self) -> str:
        return self.digest[:12]

    def describe(self) -> str:
        return f"{self.short} ({self.files} files, {self.bytes / 1e6:.1f} MB)"


def folder_fingerprint(root: str | Path, progress: bool = False) -> Fingerprint:
    """The fingerprint of the folder `root` (rules: module docstring).

    Args:
        progress: show a count of the files read (Icentia11k has over half a million).

    Raises:
        DataError: `root` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist or is not a directory")
    h = hashlib.sha256()
    files = total = 0
    bar = tqdm(
        desc=f"fingerprinting {root.name}",
        unit="file",
        file=sys.stderr,
        disable=not progress,
        mininterval=2,
        delay=2,  # a small folder is done before any bar shows
    )
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith(".part"):
                continue
            size = os.stat(os.path.join(dirpath, name)).st_size
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            h.update(f"{rel}\0{size}\n".encode())
            files += 1
            total += size
        bar.update(len(filenames))
    bar.close()
    return Fingerprint(h.hexdigest(), files, total)


class DatasetSource:
    """Where a dataset's records come from (subclasses: synthetic domains, real readers).

    Attributes:
        name: the name a spec uses.
        kind: "synthetic" (built in, generated) or "real" (read from a downloaded folder).
        version: enters the cache key; bumped when what the source gives changes.
        label_sets: name -> classes of the label sets a spec may choose (the first is the
            default); empty where the classes are fixed (synthetic domains).
        frame_label_sets: the label sets whose rows are frames cut from each record.
        caveats: what a user of the prepared data must know (copied into its report).
        url, licence: where it comes from and on what terms.
        recordings: the collection of recordings it reads (its own name unless another
            source publishes the same recordings, e.g. cpsc2018_original and the CinC 2020
            copy of CPSC 2018, cpsc2018): two sources with the same recordings hold the same
            patients, so a study never pairs one as upstream of the other.
    """

    name: str
    kind: str
    version: str
    label_sets: Mapping[str, tuple[str, ...]] = {}
    frame_label_sets: tuple[str, ...] = ()
    caveats: tuple[str, ...] = ()
    url: str = ""
    licence: str = ""

    @property
    def recordings(self) -> str:
        return self.name

    @property
    def reads_folder(self) -> bool:
        """Whether preparing it reads a downloaded folder (`DatasetConfig.source`)."""
        return self.kind == "real"

    def default_label_set(self) -> str | None:
        return next(iter(self.label_sets), None)

    def describe_split(self) -> str:
        """`describe_split` of this source's split_by and split_basis."""
        return describe_split(self.split_by, self.split_basis)

    def label_kind(self, label_set: str | None) -> str:
        """The kind of `label_set` (study.data.records.LABEL_KINDS).

        Raises:
            ConfigError: a label set the source does not have (the message lists them).
        """
        return "multi_label"

    def key_config(self, config: DatasetConfig) -> dict:
        """What of `config` enters the cache key, with this source's defaults filled in, so
        that naming a default explicitly and leaving it out give one key."""
        return config.key()

    def problems(self, config: DatasetConfig) -> list[tuple[str, str]]:
        """What `config` asks that this source cannot give, as (option, message) pairs
        (found without reading any data)."""
        return []

    def check(self, config: DatasetConfig) -> None:
        """Raise ConfigError if `config` asks what this source cannot give."""
        found = self.problems(config)
        if found:
            raise ConfigError("; ".join(f"{option}: {msg}" for option, msg in found))

    def fingerprint(self, config: DatasetConfig, progress: bool = False) -> Fingerprint | None:
        """The content of what `config` reads (None: the version says it all)."""
        return None

    def open(self, config: DatasetConfig, progress: bool = False) -> RowSource:
        """The source's records as rows of the prepared cache, read lazily."""
        raise NotImplementedError


class SyntheticSource(DatasetSource):
    """A built-in synthetic domain (study.data.synthetic): generated, never downloaded."""

    kind = "synthetic"
    split_by = "patient"
    split_basis = "patient_id: the generator's patients"

    def __init__(self, name: str) -> None:
        from study.data import synthetic

        self.name = name
        self.version = f"synthetic-{synthetic.GENERATOR_VERSION}"

    def check(self, config: DatasetConfig) -> None:
        if config.source is not None or config.label_set is not None or config.options:
            raise ConfigError(f"{self.name} is synthetic: it takes no source, label_set or options")

    def open(self, config: DatasetConfig, progress: bool = False) -> RowSource:
        from study.data import synthetic

        self.check(config)
        data = synthetic.generate(self.name)
        pre = config.preprocessing
        fs = float(pre.fs or data.fs)
        leads = tuple(pre.leads or data.lead_names)

        def rows() -> Iterator[Rows]:
            for i, (x, rid) in enumerate(zip(data.signals, data.record_id, strict=True)):
                if not pre.is_identity:
                    x = pre.apply(Signal(x, data.fs, data.lead_names), record_id=str(rid))
                yield Rows(
                    record_id=str(rid),
                    patient_id=str(data.patient_id[i]),
                    x=np.asarray(x, dtype=np.float32)[None],
                    labels=data.labels[i : i + 1],
                    fs=fs,
                    lead_names=leads,
                )

        return RowSource(tuple(data.classes), "multi_label", len(data), rows())


class ReaderSource(DatasetSource):
    """A real dataset, read from its downloaded folder by its reader
    (study.data.readers; preparation: study.data.real)."""

    kind = "real"

    def __init__(self, reader: type) -> None:
        self.reader = reader
        self.name = reader.name
        self.version = f"reader-{reader.name}-{reader.version}"
        self.label_sets = reader.label_sets
        self.frame_label_sets = tuple(reader.frame_label_sets)
        self.caveats = tuple(reader.caveats)
        self.split_by, self.split_basis = _declared_split(reader, reader.name)
        self.url = reader.source
        self.licence = reader.licence

    @property
    def recordings(self) -> str:
        return getattr(self.reader, "recordings", self.name)

    @property
    def option_defaults(self) -> dict[str, Any]:
        """The reader's options (keywords after `root`) and their defaults."""
        params = list(inspect.signature(self.reader.__init__).parameters.values())[2:]
        return {p.name: p.default for p in params}

    def label_kind(self, label_set: str | None) -> str:
        label_set = label_set or self.default_label_set()
        if label_set not in self.label_sets:
            raise ConfigError(
                f"{self.name} has no label set {label_set!r}; known: {', '.join(self.label_sets)}"
            )
        return self.reader.label_kinds.get(label_set, "multi_label")

    def key_config(self, config: DatasetConfig) -> dict:
        key = config.key()
        key["label_set"] = config.label_set or self.default_label_set()
        key["options"] = {**self.option_defaults, **config.options}
        return key

    def problems(self, config: DatasetConfig) -> list[tuple[str, str]]:
        out = []
        if config.source is None:
            out.append(
                (
                    "source",
                    f"{self.name} is a real dataset: give the folder it was downloaded to as "
                    f"datasets.{self.name}.source (or --source); `study data download "
                    f"{self.name} DIR` fetches it",
                )
            )
        valid = list(self.option_defaults)
        unknown = sorted(set(config.options) - set(valid))
        if unknown:
            out.append(("options", f"unknown reader options {unknown}; valid: {valid or 'none'}"))
        if config.label_set is not None and config.label_set not in self.label_sets:
            out.append(
                (
                    "label_set",
                    f"unknown label set {config.label_set!r}; known: {', '.join(self.label_sets)}",
                )
            )
        return out

    def fingerprint(self, config: DatasetConfig, progress: bool = False) -> Fingerprint:
        self.check(config)
        return folder_fingerprint(config.source, progress=progress)

    def open(self, config: DatasetConfig, progress: bool = False) -> RowSource:
        from study.data.real import read_real

        self.check(config)
        return read_real(self.reader, config, progress=progress)


@cache
def _sources() -> dict[str, DatasetSource]:
    """Every source by name (built on first use: importing the readers loads wfdb, h5py)."""
    from study.data import synthetic
    from study.data.readers import READERS

    out: dict[str, DatasetSource] = {name: SyntheticSource(name) for name in synthetic.DOMAINS}
    for name in READERS.names():
        if name in out:
            raise ConfigError(f"dataset {name!r} is both a synthetic domain and a reader")
        out[name] = ReaderSource(READERS.get(name))
    return dict(sorted(out.items()))


def list_datasets() -> list[str]:
    """Names of every dataset a spec may use: the synthetic domains and the real readers."""
    return list(_sources())


def dataset_source(name: str) -> DatasetSource:
    """The source of dataset `name`.

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
    """
    sources = _sources()
    if name not in sources:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sources)}")
    return sources[name]
