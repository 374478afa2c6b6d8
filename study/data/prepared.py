"""The prepared cache: a dataset read, split and written once, then read batch by batch.

Layout of one prepared dataset (a folder named by its key, and in a machine's cache by the
fingerprint of its source folder too: `cache_folder`):

    signals.npy     float32 (N, C, L) signals, or (N, C, H, W) images; read with mmap_mode="r"
    labels.npy      uint8 (N, K): multi-hot, one-hot, or all ones for a per-sample dataset
    targets.npy     uint8 (N, L), per-sample datasets only: 1 on QRS samples
                    (study.data.frames), read with mmap_mode="r"
    records.parquet one row per example: record_id, patient_id, fold, split, labels (class
                    names joined by ";"); frame datasets add frame_start (first sample of the
                    frame in its record, at the prepared rate; (record_id, frame_start) is
                    unique); per-sample datasets add beats (list<int64>: reference QRS
                    positions inside the example, at the prepared rate)
    meta.json       name, key, config, source_fingerprint / source_files / source_bytes
                    (what the source folder held; null for synthetic data), report (what was
                    dropped and why, caveats, frames), classes, label_kind, input_kind,
                    input_shape, lead_names, fs, n_records (= N), n_patients, split_rule,
                    split_counts, split_by and split_basis (the source's: "patient" and
                    where the ids come from, or "record" and why there are none; absent from
                    caches written before they were added, which moved no cache key)

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

Reading streams too: a `Split` (rows of one split or subset) reads the rows a batch asks for
with positional reads (`os.preadv`) from signals.npy / targets.npy, so a training process
holds one batch, never the split; and since nothing is memory-mapped, the page cache that
reading fills is not counted in the process's resident memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.lib import format as npy_format

from study.data.config import DatasetConfig
from study.data.records import INPUT_KINDS, Rows, RowSource
from study.data.sources import Fingerprint, dataset_source
from study.data.splits import SPLIT_OF_FOLD, assign_folds, nested_subset, split_rule
from study.errors import DataError

__all__ = [
    "PreparedDataset",
    "Split",
    "prepare",
    "prepare_to",
    "prepared_key",
    "cache_folder",
    "default_cache_dir",
]

# Bump when the split rule or the cache layout changes: it is part of every cache key.
# (label_kind, input_kind, targets.npy and the frame columns were added without a bump: they
# leave the files of every dataset prepared before them as they were.)
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """Where prepared datasets live on this machine (ECG_STUDY_CACHE overrides)."""
    return Path(os.environ.get("ECG_STUDY_CACHE", "~/.cache/ecg-study")).expanduser()


def prepared_key(name: str, config: DatasetConfig | None = None) -> str:
    """The key of a preparation: the dataset's name plus a hash of everything the spec and
    the code decide about it (the source's version, the label set and reader options with
    their defaults filled in, the bad-record policy, `Preprocessing.key()` with the
    preprocessing code's own constants, and the cache format).

    It does not depend on the data folder, so a study's units (whose ids include it) are
    planned the same on every machine, with or without the raw data. What the folder holds
    enters `cache_folder` as its fingerprint, and a study records the fingerprint it was
    prepared from (see `prepare_to`).

    Raises:
        ConfigError: an unknown dataset.
    """
    config = config or DatasetConfig()
    source = dataset_source(name)
    ident = json.dumps(
        {
            "name": name,
            "source": source.version,
            "format": CACHE_FORMAT,
            "config": source.key_config(config),
        },
        sort_keys=True,
    )
    return f"{name}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"


def cache_folder(key: str, fingerprint: Fingerprint | str | None) -> str:
    """The folder name of a prepared dataset in a machine's cache: its key, and for a
    dataset read from a folder, the short fingerprint of that folder's content (so a cache
    prepared from one folder is never handed out for another)."""
    if fingerprint is None:
        return key
    digest = fingerprint.digest if isinstance(fingerprint, Fingerprint) else fingerprint
    return f"{key}-{digest[:12]}"


def _split_seed(name: str) -> int:
    # Fixed per dataset, independent of any study seed: the split never moves.
    return int(hashlib.sha256(f"split:{name}".encode()).hexdigest()[:8], 16)


def prepare(
    name: str,
    cache_dir: Path | None = None,
    config: DatasetConfig | None = None,
    progress: bool = False,
) -> Path:
    """Prepare dataset `name` into `cache_dir` once; return its folder
    (`cache_dir / cache_folder(prepared_key(...), fingerprint)`).

    A real dataset's folder is fingerprinted first (a walk over its file names and sizes),
    so another folder, or this one with changed content, is prepared anew, never served
    the arrays of an earlier one.

    Raises:
        ConfigError: an unknown dataset, or options the dataset does not take (e.g. a real
            dataset without `config.source`).
        DataError: the source folder is missing or not the reader's layout; see
            `study.data.real.read_real`; records whose prepared shapes differ.
    """
    config = config or DatasetConfig()
    source = dataset_source(name)
    source.check(config)
    fingerprint = source.fingerprint(config, progress=progress)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache_dir / cache_folder(prepared_key(name, config), fingerprint)
    return prepare_to(name, config, dest, fingerprint, progress=progress)


def prepare_to(
    name: str,
    config: DatasetConfig,
    dest: Path,
    fingerprint: Fingerprint | None,
    progress: bool = False,
) -> Path:
    """Prepare dataset `name` into the folder `dest`, unless a complete copy is there.

    The folder is built under a temporary name and renamed into place, so a crash never
    leaves a half-prepared cache that a later run would trust, and two processes preparing
    the same dataset at once both end with the same complete folder. Its meta.json records
    `fingerprint` (the source folder's content; None for a synthetic dataset).

    Raises:
        DataError: `dest` holds a copy prepared from a source with another fingerprint
            (another folder, or this one with changed content); see `prepare`.
    """
    dest = Path(dest)
    if (dest / "meta.json").exists():
        meta = json.loads((dest / "meta.json").read_text())
        check_fingerprint(meta, str(dest), fingerprint, config.source)
        return dest
    source = dataset_source(name).open(config, progress=progress)
    tmp = dest.parent / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        _write(source, name, tmp, config, fingerprint)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def check_fingerprint(
    meta: dict, where: str, fingerprint: Fingerprint | None, folder: str | None
) -> None:
    """Raise DataError unless the prepared copy at `where` (its meta.json: `meta`) was
    prepared from a source with `fingerprint`."""
    want = fingerprint.digest if fingerprint is not None else None
    have = meta.get("source_fingerprint")
    if have != want:
        then = meta.get("source_files")
        raise DataError(
            f"{where} was prepared from a {meta.get('name')} folder with other content "
            f"(fingerprint {str(have)[:12]}, {then} files) than {folder} holds now "
            f"({fingerprint.describe() if fingerprint else 'none'}): another version or a "
            "changed download. Prepare it into a new place (another study name or cache), "
            "or remove the old copy if nothing that used it is kept."
        )


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


def _write(
    source: RowSource,
    name: str,
    out: Path,
    config: DatasetConfig,
    fingerprint: Fingerprint | None,
) -> None:
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
        "source_fingerprint": fingerprint.digest if fingerprint else None,
        "source_files": fingerprint.files if fingerprint else None,
        "source_bytes": fingerprint.bytes if fingerprint else None,
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
        # What the patient_id the folds group by really is (not in the key: no cache moves).
        "split_by": dataset_source(name).split_by,
        "split_basis": dataset_source(name).split_basis,
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

    def split_indices(self, split: str, folds: Sequence[int] | None = None) -> np.ndarray:
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
        self, fraction: float, repeat: int, folds: Sequence[int] | None = None
    ) -> np.ndarray:
        """The nested, stratified training subset of (fraction, repeat), within `folds`."""
        train = self.split_indices("train", folds)
        return nested_subset(train, self.labels, fraction, repeat, self.name)

    @property
    def fingerprint(self) -> str | None:
        """The SHA-256 fingerprint of the source folder it was prepared from (None:
        synthetic data, or a cache written before fingerprints were recorded)."""
        return self.meta.get("source_fingerprint")

    def split(self, idx: np.ndarray) -> Split:
        """Rows `idx` (sorted) as a `Split` that reads batches from the files: x the signals
        or images, y the labels (N, K), or for a per-sample dataset the targets (N, L)."""
        if self.label_kind == "per_sample":
            self._targets()  # a per-sample cache without targets.npy fails here, not mid-epoch
        return Split(self.path, np.sort(np.asarray(idx, dtype=np.int64)), self.label_kind)

    def beats(self, idx: np.ndarray) -> list[np.ndarray]:
        """Reference QRS positions (int64 samples at the prepared rate, inside each example)
        of `idx`, in sorted order as `split` holds them.

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


class NpyRows:
    """Rows of a C-order .npy file, read with positional reads (never memory-mapped).

    Picklable (DataLoader workers, Ray): the file is opened on first read in each process.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = npy_format.read_array_header_2_0(f)
            self.offset = f.tell()
        if fortran:
            raise DataError(f"{self.path} is stored in Fortran order; rows cannot be streamed")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The rows `rows` (any order, repeats allowed), as an array of `len(rows)` rows.

        Runs of consecutive rows are read with one call each; sorted rows (as training's
        batches are: `Split.batch`) are read straight into the result, others through one
        more copy that puts them back in the asked order.
        """
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.shape[0]:
            raise DataError(f"row index out of range 0..{self.shape[0] - 1} of {self.path}")
        ordered = bool(np.all(np.diff(rows) >= 0))
        order = None if ordered else np.argsort(rows, kind="stable")
        sorted_rows = rows if order is None else rows[order]
        buf = out if order is None else np.empty_like(out)
        flat = buf.reshape(len(rows), -1).view(np.uint8)
        # runs of consecutive rows: [start, end) positions in `sorted_rows`
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        starts = np.concatenate([[0], breaks]).tolist()
        ends = np.concatenate([breaks, [len(sorted_rows)]]).tolist()
        fd = self._file()
        for a, b in zip(starts, ends, strict=True):
            want = (b - a) * self.row_bytes
            offset = self.offset + int(sorted_rows[a]) * self.row_bytes
            got = os.preadv(fd, [flat[a:b]], offset)
            if got != want:
                raise DataError(f"{self.path} is truncated: read {got} of {want} bytes")
        if order is not None:
            out[order] = buf
        return out


class Split:
    """Rows of a prepared dataset (a split or a training subset), read batch by batch.

    Attributes:
        indices: int64, sorted: the dataset rows, in the order positions count them.
        label_kind: the dataset's label kind ("per_sample": y are the targets).
    """

    def __init__(self, path: Path, indices: np.ndarray, label_kind: str) -> None:
        self.path = Path(path)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.label_kind = label_kind
        self._signals = NpyRows(self.path / "signals.npy")
        self._targets = NpyRows(self.path / "targets.npy") if label_kind == "per_sample" else None
        # labels (N, K) uint8 are small: a subset of them is kept in memory
        self.labels = np.load(self.path / "labels.npy")[self.indices].astype(np.float32)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def x_shape(self) -> tuple[int, ...]:
        """The shape of one input row: (C, L) or (C, H, W)."""
        return self._signals.row_shape

    def x(self, positions: np.ndarray) -> np.ndarray:
        """float32 inputs of the rows at `positions` (0..len-1) of this split."""
        return self._signals.read(self.indices[np.asarray(positions, dtype=np.int64)])

    def y(self, positions: np.ndarray) -> np.ndarray:
        """float32 labels (K per row), or per-sample targets (L per row), at `positions`."""
        positions = np.asarray(positions, dtype=np.int64)
        if self._targets is not None:
            return self._targets.read(self.indices[positions]).astype(np.float32)
        return self.labels[positions]

    def batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the rows at `positions`, in ascending order: one training batch (the
        order of a batch's rows changes nothing in training, and sorted rows are read in
        few, straight reads)."""
        pos = np.sort(np.asarray(positions, dtype=np.int64))
        return self.x(pos), self.y(pos)

    def batches(self, batch_size: int):
        """(x, y) of consecutive batches, in order (what evaluation reads)."""
        for start in range(0, len(self), batch_size):
            pos = np.arange(start, min(start + batch_size, len(self)))
            yield self.x(pos), self.y(pos)

    def targets_sum(self) -> tuple[float, int]:
        """(positives, samples) of the per-sample targets, read in chunks (class weights)."""
        if self._targets is None:
            raise DataError(f"{self.path.name} has no per-sample targets")
        pos = 0.0
        for start in range(0, len(self), 1024):
            pos += float(self._targets.read(self.indices[start : start + 1024]).sum())
        return pos, len(self) * int(np.prod(self._targets.row_shape))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole split as in-memory (x, y): for tests and small data only (training
        reads batches)."""
        every = np.arange(len(self))
        return self.x(every), self.y(every)
