"""The prepared cache: a dataset read, split and written once, then memory-mapped by trials.

Layout of one prepared dataset (a folder named by its key):

    signals.npy     float32 (N, C, L) signals, or (N, C, H, W) images; read with mmap_mode="r"
    labels.npy      uint8 (N, K): multi-hot, one-hot, or all ones for a per-sample dataset
    targets.npy     uint8 (N, L), per-sample datasets only: 1 on QRS samples
                    (study.data.frames), read with mmap_mode="r"
    records.parquet one row per example: record_id, patient_id, fold, split, labels (class
                    names joined by ";"); frame datasets add frame_start (first sample of the
                    frame in its record, at the prepared rate; (record_id, frame_start) is
                    unique); per-sample datasets add beats (list<int64>: reference QRS
                    positions inside the example, at the prepared rate)
    meta.json       name, key, config, report (what was dropped and why, caveats, frames),
                    classes, label_kind, input_kind, input_shape, lead_names, fs, n_records
                    (= N), n_patients, split_rule, split_counts

meta.json's label_kind says what a row's label is: "multi_label" (any number of classes),
"single_label" (exactly one class: a one-hot row) or "per_sample" (the target is the row of
targets.npy; labels.npy holds the one class, e.g. ["qrs"], all ones, so stratified splits and
nested subsets work unchanged). Caches written before label_kind existed read as
"multi_label". input_kind is "signal" for (N, C, L) and "image" for (N, C, H, W); without it,
the rank of signals.npy decides.

Writing streams: each record's rows (one, or its frames) go straight into signals.npy and
targets.npy through numpy.lib.format.open_memmap, so memory holds one record's arrays plus
a few bytes of metadata per row, never the dataset's signals. The arrays are sized by the
source's upper bound on rows (records listed x frames per record) and cut to the rows
written at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.lib import format as npy_format

from study.data._sources import is_synthetic, load_raw, source_version
from study.data.config import DatasetConfig
from study.data.splits import SPLIT_OF_FOLD, assign_folds, nested_subset, split_rule
from study.errors import DataError

__all__ = [
    "PreparedDataset",
    "Rows",
    "RowSource",
    "prepare",
    "prepared_key",
    "default_cache_dir",
    "LABEL_KINDS",
    "INPUT_KINDS",
]

# Bump when the split rule or the cache layout changes: it is part of every cache key.
# (label_kind, input_kind, targets.npy and the frame columns were added without a bump: they
# leave the files of every dataset prepared before them as they were.)
CACHE_FORMAT = 1
LABEL_KINDS = ("multi_label", "single_label", "per_sample")
INPUT_KINDS = {2: "signal", 3: "image"}  # rank of one example -> input_kind


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


@dataclass
class Rows:
    """The rows of the cache that one source record gives: itself, or its frames.

    Attributes:
        record_id, patient_id: the source record and its patient (every row shares them).
        x: float32 (rows, C, L) or (rows, C, H, W).
        labels: uint8 (rows, classes).
        fs: the prepared sampling rate; lead_names: the prepared leads.
        fold: the record's official fold, or None.
        targets: uint8 (rows, L), per-sample datasets only.
        beats: per row, int64 positions of the reference beats inside it (per-sample only).
        frame_start: int64 (rows,) first sample of each frame in the record (frames only).
    """

    record_id: str
    patient_id: str
    x: np.ndarray
    labels: np.ndarray
    fs: float
    lead_names: tuple[str, ...]
    fold: int | None = None
    targets: np.ndarray | None = None
    beats: list[np.ndarray] | None = None
    frame_start: np.ndarray | None = None


@dataclass
class RowSource:
    """A dataset as a stream of Rows, read one record at a time.

    Attributes:
        classes: the label set's classes (labels' columns).
        label_kind: one of LABEL_KINDS.
        capacity: the most rows `rows` can yield (the writer sizes its arrays by it).
        rows: the stream; raises DataError at its end when it yielded nothing.
        report: what was kept, dropped and why; complete once `rows` is exhausted.
    """

    classes: tuple[str, ...]
    label_kind: str
    capacity: int
    rows: Iterator[Rows]
    report: dict = field(default_factory=dict)


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
        DataError: see `study.data.real.read_real`; records whose prepared shapes differ.
    """
    config = config or DatasetConfig()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache_dir / prepared_key(name, config)
    if (dest / "meta.json").exists():
        return dest
    source = _open_source(name, config, progress)
    tmp = cache_dir / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        _write(source, name, tmp, config)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _open_source(name: str, config: DatasetConfig, progress: bool) -> RowSource:
    if not is_synthetic(name):
        from study.data.real import read_real

        return read_real(name, config, progress=progress)
    if config.source is not None or config.label_set is not None or config.options:
        from study.errors import ConfigError

        raise ConfigError(f"{name} is synthetic: it takes no source, label_set or options")
    raw = load_raw(name)
    pre = None if config.preprocessing.is_identity else config.preprocessing.build()

    def rows() -> Iterator[Rows]:
        from study.data.readers import Signal

        for i, (x, rid) in enumerate(zip(raw.signals, raw.record_id, strict=True)):
            if pre is not None:
                x = pre.apply(Signal(x, raw.fs, raw.lead_names), record_id=str(rid))
            yield Rows(
                record_id=str(rid),
                patient_id=str(raw.patient_id[i]),
                x=np.asarray(x, dtype=np.float32)[None],
                labels=raw.labels[i : i + 1],
                fs=float(pre.fs if pre is not None and pre.fs else raw.fs),
                lead_names=tuple(pre.leads if pre is not None and pre.leads else raw.lead_names),
                fold=None if raw.folds is None else int(raw.folds[i]),
            )

    return RowSource(tuple(raw.classes), "multi_label", len(raw.signals), rows())


class _GrowingNpy:
    """A .npy file of up to `capacity` rows written through open_memmap, cut to the rows
    written by `close` (rewriting its header in place: numpy pads .npy headers so that the
    first dimension can change without moving the data)."""

    def __init__(self, path: Path, dtype: np.dtype, capacity: int, row_shape: tuple) -> None:
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), tuple(row_shape)
        self.array = npy_format.open_memmap(
            path, mode="w+", dtype=self.dtype, shape=(capacity, *self.row_shape), version=(1, 0)
        )
        self.offset = int(self.array.offset)

    def close(self, n: int) -> None:
        self.array.flush()
        del self.array
        header = io.BytesIO()
        npy_format.write_array_header_1_0(
            header,
            {
                "descr": npy_format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (n, *self.row_shape),
            },
        )
        if len(header.getvalue()) != self.offset:
            raise DataError(
                f"cannot shrink {self.path.name}: its header would change size "
                f"({self.offset} -> {len(header.getvalue())} bytes)"
            )
        row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        with open(self.path, "r+b") as f:
            f.write(header.getvalue())
            f.truncate(self.offset + n * row_bytes)


class _Writer:
    """Appends Rows to the cache files in `out` (memory: one Rows, plus per-row metadata)."""

    def __init__(self, out: Path, source: RowSource, name: str) -> None:
        self.out, self.source, self.name = out, source, name
        self.capacity = source.capacity
        self.per_sample = source.label_kind == "per_sample"
        self.n = 0
        self.signals: _GrowingNpy | None = None
        self.targets: _GrowingNpy | None = None
        self.fs: float | None = None  # of the first record (its arrays are not kept)
        self.lead_names: tuple[str, ...] = ()
        self.labels = np.zeros((self.capacity, len(source.classes)), dtype=np.uint8)
        self.folds = np.zeros(self.capacity, dtype=np.int8)  # 0: no official fold
        self.frame_start = np.full(self.capacity, -1, dtype=np.int64)
        self.record_id: list[str] = []
        self.patient_id: list[str] = []
        self.beat_values = array("q")
        self.beat_offsets = array("q", [0])

    def add(self, rows: Rows) -> None:
        k = len(rows.x)
        if self.signals is None:
            self._open(rows)
        shape = self.signals.row_shape
        if tuple(rows.x.shape[1:]) != shape:
            raise DataError(
                f"{self.name}: record {rows.record_id} "
                f"prepares to shape {tuple(rows.x.shape[1:])}, earlier records to {shape}; set "
                f"preprocessing.length (and fs) so all records match"
            )
        if rows.labels.shape != (k, len(self.source.classes)):
            raise DataError(
                f"record {rows.record_id}: labels {rows.labels.shape} for {k} rows of "
                f"{len(self.source.classes)} classes"
            )
        if self.n + k > self.capacity:
            raise DataError(
                f"record {rows.record_id} gives rows beyond the source's bound of {self.capacity}"
            )
        if not np.isfinite(rows.x).all():
            raise DataError(f"record {rows.record_id}: prepared signal has NaN or infinite values")
        sl = slice(self.n, self.n + k)
        self.signals.array[sl] = rows.x
        self.labels[sl] = rows.labels
        self.folds[sl] = rows.fold or 0
        if rows.frame_start is not None:
            self.frame_start[sl] = rows.frame_start
        self.record_id.extend([rows.record_id] * k)
        self.patient_id.extend([rows.patient_id] * k)
        if self.per_sample:
            if rows.targets is None or rows.beats is None or len(rows.beats) != k:
                raise DataError(
                    f"record {rows.record_id}: a per-sample row needs targets and beats"
                )
            if rows.targets.shape != (k, shape[-1]):
                raise DataError(
                    f"record {rows.record_id}: targets {rows.targets.shape} for signals "
                    f"{rows.x.shape}"
                )
            self.targets.array[sl] = rows.targets
            for b in rows.beats:
                self.beat_values.extend(np.asarray(b, dtype=np.int64).tolist())
                self.beat_offsets.append(len(self.beat_values))
        self.n += k

    def _open(self, rows: Rows) -> None:
        shape = tuple(rows.x.shape[1:])
        if len(shape) not in INPUT_KINDS:
            raise DataError(
                f"record {rows.record_id} prepares to shape {shape}: expected (leads, samples) "
                "or (channels, height, width)"
            )
        if self.per_sample and len(shape) != 2:
            raise DataError(
                f"per-sample targets need (leads, samples) signals; record {rows.record_id} "
                f"prepares to {shape}"
            )
        self.fs, self.lead_names = rows.fs, tuple(rows.lead_names)
        self.signals = _GrowingNpy(self.out / "signals.npy", np.float32, self.capacity, shape)
        if self.per_sample:
            self.targets = _GrowingNpy(
                self.out / "targets.npy", np.uint8, self.capacity, (shape[-1],)
            )

    def close(self) -> None:
        if self.signals is not None:
            self.signals.close(self.n)
        if self.targets is not None:
            self.targets.close(self.n)


def _write(source: RowSource, name: str, out: Path, config: DatasetConfig) -> None:
    if source.label_kind not in LABEL_KINDS:
        raise DataError(f"label_kind must be one of {LABEL_KINDS}, got {source.label_kind!r}")
    writer = _Writer(out, source, name)
    try:
        for rows in source.rows:
            writer.add(rows)
            del rows  # not held while the next record is read
    finally:
        writer.close()
    n = writer.n
    if n == 0 or writer.signals is None:
        raise DataError(f"{name}: no usable record")
    labels = writer.labels[:n]
    np.save(out / "labels.npy", labels)
    official = writer.folds[:n]
    if (official > 0).all():
        folds = official  # the dataset's official folds (PTB-XL strat_fold)
    else:
        folds = assign_folds(labels, np.asarray(writer.patient_id), _split_seed(name))
    names = np.array(source.classes, dtype=object)
    table = pd.DataFrame(
        {
            "record_id": writer.record_id,
            "patient_id": writer.patient_id,
            "fold": folds,
            "split": [SPLIT_OF_FOLD[int(f)] for f in folds],
            "labels": [";".join(names[row.astype(bool)]) for row in labels],
        }
    )
    if (writer.frame_start[:n] >= 0).any():
        table["frame_start"] = writer.frame_start[:n]
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    if writer.per_sample:
        offsets = np.frombuffer(writer.beat_offsets, dtype=np.int64)
        values = pa.array(np.frombuffer(writer.beat_values, dtype=np.int64), type=pa.int64())
        if offsets[-1] < 2**31:
            beats = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
        else:
            beats = pa.LargeListArray.from_arrays(pa.array(offsets), values)
        arrow = arrow.append_column("beats", beats)
    pq.write_table(arrow, out / "records.parquet")
    meta = {
        "name": name,
        "key": prepared_key(name, config),
        "config": config.model_dump(mode="json"),
        "report": source.report,
        "classes": list(source.classes),
        "label_kind": source.label_kind,
        "input_kind": INPUT_KINDS[len(writer.signals.row_shape)],
        "input_shape": list(writer.signals.row_shape),
        "lead_names": list(writer.lead_names),
        "fs": writer.fs,
        "n_records": int(n),
        "n_patients": int(table.patient_id.nunique()),
        "split_rule": "official folds; 1-8/9/10" if (official > 0).all() else split_rule(labels),
        "split_counts": table.split.value_counts().to_dict(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


@dataclass
class PreparedDataset:
    """A prepared dataset opened for training: memory-mapped signals and its record table
    (contract: module docstring)."""

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

    @property
    def label_kind(self) -> str:
        """ "multi_label", "single_label" or "per_sample" (older caches: "multi_label")."""
        return self.meta.get("label_kind", "multi_label")

    @property
    def input_kind(self) -> str:
        """ "signal" for (N, C, L) signals, "image" for (N, C, H, W)."""
        if "input_kind" in self.meta:
            return self.meta["input_kind"]
        return INPUT_KINDS[self.signals.ndim - 1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example: (C, L) or (C, H, W)."""
        return tuple(int(d) for d in self.signals.shape[1:])

    @cached_property
    def signals(self) -> np.ndarray:
        return np.load(self.path / "signals.npy", mmap_mode="r")

    @cached_property
    def labels(self) -> np.ndarray:
        return np.load(self.path / "labels.npy")

    @cached_property
    def targets(self) -> np.ndarray | None:
        """uint8 (N, L) per-sample targets, memory-mapped; None unless per_sample."""
        path = self.path / "targets.npy"
        return np.load(path, mmap_mode="r") if path.exists() else None

    @cached_property
    def records(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "records.parquet")

    @property
    def in_channels(self) -> int:
        return int(self.signals.shape[1])

    @property
    def n_samples(self) -> int:
        """L of (N, C, L) signals; for (N, C, H, W) images the width W, a scalogram's time
        axis (input_shape gives the whole shape)."""
        return int(self.signals.shape[-1])

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
        """(x, y) of `idx` in sorted order, copied into memory as float32: x the signals or
        images, y the labels (N, K), or for a per-sample dataset the targets (N, L)."""
        idx = np.sort(np.asarray(idx))
        x = np.asarray(self.signals[idx], dtype=np.float32)
        if self.label_kind == "per_sample":
            return x, np.asarray(self._targets()[idx], dtype=np.float32)
        return x, self.labels[idx].astype(np.float32)

    def beats(self, idx: np.ndarray) -> list[np.ndarray]:
        """Reference QRS positions (int64 samples at the prepared rate, inside each example)
        of `idx`, in sorted order as `arrays` returns them.

        Raises:
            DataError: the dataset is not per-sample (it has no beats).
        """
        if "beats" not in self.records.columns:
            raise DataError(
                f"dataset {self.name} is {self.label_kind}: only per-sample datasets have beats"
            )
        column = self.records["beats"]
        return [np.asarray(column.iat[int(i)], dtype=np.int64) for i in np.sort(np.asarray(idx))]

    def _targets(self) -> np.ndarray:
        if self.targets is None:
            raise DataError(f"dataset {self.name} is per_sample but has no targets.npy")
        return self.targets
