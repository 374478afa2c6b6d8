"""The row types of the data layer: what a reader lists and reads, and what the prepared cache
is written from. A leaf module: it imports nothing else of `study.data`, so every reader, the
preprocessing and the cache can share these types without importing each other.

Label kinds (`LABEL_KINDS`) say what one row's label is:

- "multi_label": any number of classes (a multi-hot row);
- "single_label": exactly one class (a one-hot row);
- "per_sample": a target per sample (QRS masks); the row's label is the one class.

Input kinds (`INPUT_KINDS`, by the rank of one example) say what a row's input is: "signal"
(leads, samples) or "image" (channels, height, width).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from study.errors import DataError

__all__ = [
    "STANDARD_LEADS",
    "LABEL_KINDS",
    "INPUT_KINDS",
    "BadRecord",
    "Record",
    "Signal",
    "Rows",
    "RowSource",
]

# Standard 12-lead names, in the conventional order; readers map their own spellings here.
STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LABEL_KINDS = ("multi_label", "single_label", "per_sample")
INPUT_KINDS = {2: "signal", 3: "image"}  # rank of one example -> input_kind


class BadRecord(DataError):
    """One record that cannot be used: missing, truncated, unreadable, flat, NaN, or not
    what its header promises. The message names the record and the reason."""

    def __init__(self, record_id: str, reason: str) -> None:
        super().__init__(f"record {record_id}: {reason}")
        self.record_id = record_id
        self.reason = reason


@dataclass(frozen=True)
class Record:
    """One record as listed by a reader (no signal read yet)."""

    record_id: str
    patient_id: str  # the record id again where a dataset has no patient identifiers
    labels: tuple[str, ...]  # in the reader's native label vocabulary (e.g. SNOMED codes)
    fs: float  # sampling rate the header promises
    n_samples: int | None = None  # as the header promises (None if unknown before reading)
    lead_names: tuple[str, ...] = ()
    fold: int | None = None  # official fold where the dataset has one (PTB-XL strat_fold)
    meta: dict = field(default_factory=dict)  # age, sex, ... as given by the source


@dataclass(frozen=True)
class Signal:
    data: np.ndarray  # float32 (leads, samples), millivolts
    fs: float
    lead_names: tuple[str, ...]


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

    def __post_init__(self) -> None:
        if self.label_kind not in LABEL_KINDS:
            raise DataError(f"label_kind must be one of {LABEL_KINDS}, got {self.label_kind!r}")
