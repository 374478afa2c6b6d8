"""The prepared cache: a dataset read, split and written once, then memory-mapped by trials.

Layout of one prepared dataset (a folder named by its key):

    signals.npy     float32 (N, leads, samples), read with mmap_mode="r"
    labels.npy      uint8 (N, classes), multi-hot
    records.parquet record_id, patient_id, fold, split, labels (names joined by ";")
    meta.json       name, key, classes, lead names, sampling rate, split rule, counts
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from study.data._sources import (
    RawDataset,
    is_synthetic,
    load_raw,
    source_version,
)
from study.data.config import DatasetConfig
from study.data.splits import SPLIT_OF_FOLD, assign_folds, nested_subset, split_rule
from study.errors import DataError

__all__ = ["PreparedDataset", "prepare", "prepared_key", "default_cache_dir"]

# Bump when the split rule or the cache layout changes: it is part of every cache key.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """Where prepared datasets live on this machine (ECG_STUDY_CACHE overrides)."""
    return Path(os.environ.get("ECG_STUDY_CACHE", "~/.cache/ecg-study")).expanduser()


def prepared_key(name: str, config: DatasetConfig | None = None) -> str:
    """The cache key of a dataset: its name plus a hash of everything that shapes the cache
    (source version, label set, reader options, preprocessing, bad-record policy, format)."""
    config = config or DatasetConfig()
    ident = json.dumps(
        {
            "name": name,
            "source": source_version(name),
            "format": CACHE_FORMAT,
            "config": config.key_fields(),
        },
        sort_keys=True,
    )
    return f"{name}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"


def _split_seed(name: str) -> int:
    # Fixed per dataset, independent of any study seed: the split never moves.
    return int(hashlib.sha256(f"split:{name}".encode()).hexdigest()[:8], 16)


def prepare(
    name: str,
    cache_dir: Path | None = None,
    config: DatasetConfig | None = None,
    progress: bool = False,
) -> Path:
    """Prepare dataset `name` into `cache_dir` once; return its folder.

    The folder is built under a temporary name and renamed into place, so a crash never
    leaves a half-prepared cache that a later run would trust, and two processes preparing
    the same dataset at once both end with the same complete folder.

    Raises:
        ConfigError: an unknown dataset, or a real dataset without `config.source`.
        DataError: see `study.data.real.read_real`.
    """
    config = config or DatasetConfig()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache_dir / prepared_key(name, config)
    if (dest / "meta.json").exists():
        return dest
    raw = _load(name, config, progress)
    tmp = cache_dir / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        _write(raw, name, tmp, config)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _load(name: str, config: DatasetConfig, progress: bool) -> RawDataset:
    if not is_synthetic(name):
        from study.data.real import read_real

        return read_real(name, config, progress=progress)
    raw = load_raw(name)
    if config.source is not None or config.label_set is not None or config.options:
        from study.errors import ConfigError

        raise ConfigError(f"{name} is synthetic: it takes no source, label_set or options")
    if config.preprocessing.is_identity:
        return raw
    from study.data.readers import Signal

    pre = config.preprocessing.build()
    out = np.stack(
        [
            pre.apply(Signal(x, raw.fs, raw.lead_names), record_id=str(rid))
            for x, rid in zip(raw.signals, raw.record_id, strict=True)
        ]
    )
    return RawDataset(
        out,
        raw.labels,
        raw.patient_id,
        raw.record_id,
        raw.classes,
        pre.leads or raw.lead_names,
        pre.fs or raw.fs,
    )


def _write(raw: RawDataset, name: str, out: Path, config: DatasetConfig) -> None:
    if raw.folds is not None:
        folds = raw.folds  # the dataset's official folds (PTB-XL strat_fold)
    else:
        folds = assign_folds(raw.labels, raw.patient_id, _split_seed(name))
    np.save(out / "signals.npy", np.ascontiguousarray(raw.signals, dtype=np.float32))
    np.save(out / "labels.npy", raw.labels.astype(np.uint8))
    names = np.array(raw.classes, dtype=object)
    table = pd.DataFrame(
        {
            "record_id": raw.record_id,
            "patient_id": raw.patient_id.astype(str),
            "fold": folds,
            "split": [SPLIT_OF_FOLD[int(f)] for f in folds],
            "labels": [";".join(names[row.astype(bool)]) for row in raw.labels],
        }
    )
    table.to_parquet(out / "records.parquet", index=False)
    meta = {
        "name": name,
        "key": prepared_key(name, config),
        "config": config.model_dump(mode="json"),
        "report": raw.report or {},
        "classes": list(raw.classes),
        "lead_names": list(raw.lead_names),
        "fs": raw.fs,
        "n_records": int(len(table)),
        "n_patients": int(table.patient_id.nunique()),
        "split_rule": "official folds; 1-8/9/10"
        if raw.folds is not None
        else split_rule(raw.labels),
        "split_counts": table.split.value_counts().to_dict(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


@dataclass
class PreparedDataset:
    """A prepared dataset opened for training: memory-mapped signals and its record table."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not (self.path / "meta.json").exists():
            raise DataError(f"{self.path} is not a prepared dataset (no meta.json)")
        self.meta = json.loads((self.path / "meta.json").read_text())

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @cached_property
    def signals(self) -> np.ndarray:
        return np.load(self.path / "signals.npy", mmap_mode="r")

    @cached_property
    def labels(self) -> np.ndarray:
        return np.load(self.path / "labels.npy")

    @cached_property
    def records(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "records.parquet")

    @property
    def in_channels(self) -> int:
        return int(self.signals.shape[1])

    @property
    def n_samples(self) -> int:
        return int(self.signals.shape[2])

    def split_indices(self, split: str, folds: list[int] | None = None) -> np.ndarray:
        """Indices of the records in `split` ("train", "val" or "test"), optionally only
        those of `folds` (a patient-disjoint part of the split)."""
        if split not in ("train", "val", "test"):
            raise DataError(f"split must be train, val or test, got {split!r}")
        mask = self.records.split.to_numpy() == split
        if folds is not None:
            mask &= np.isin(self.records.fold.to_numpy(), folds)
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            where = f" in folds {folds}" if folds is not None else ""
            raise DataError(f"dataset {self.name} has no {split} records{where}")
        return idx

    def train_subset(
        self, fraction: float, repeat: int, folds: list[int] | None = None
    ) -> np.ndarray:
        """The nested, stratified training subset of (fraction, repeat), within `folds`."""
        train = self.split_indices("train", folds)
        return nested_subset(train, self.labels, fraction, repeat, self.name)

    def arrays(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(signals, labels) of `idx`, copied into memory as float32."""
        idx = np.sort(np.asarray(idx))
        return np.asarray(self.signals[idx], dtype=np.float32), self.labels[idx].astype(np.float32)
