"""The contract every real-dataset reader follows.

A reader opens a dataset root as downloaded from its public source, checks the layout at
once (a root that is not the expected layout fails, saying what was expected and what was
found), lists its records with patient and labels, and reads one record's signal.

Signals come back as float32 (leads, samples) in millivolts, at the record's own sampling
rate, with lead names in the dataset's own order; resampling, lead selection and length
fixing are preprocessing (study/data/preprocess.py), not the reader's business.

Each label set has a kind (`label_kinds`, LABEL_KINDS): "multi_label" (any number of classes
per record, the default), "single_label" (exactly one) or "per_sample" (a target per sample:
QRS positions, from `read_beats`). Label sets in `frame_label_sets` label frames cut from a
record (study.data.frames) rather than the record itself.

Every reader declares what its patient-level split groups by (`split_by`, with
`split_basis`), readable from the class without opening any data: "patient" where the dataset
identifies patients (the basis names the field), "record" where it publishes no patient ids
(each record is then its own `patient_id`; the basis says so). There is no default: a new
reader that does not decide fails when the dataset registry is built
(study.data.sources.ReaderSource).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from study._registry import Registry
from study.data.records import LABEL_KINDS, STANDARD_LEADS, BadRecord, Record, Signal
from study.data.sources import SplitBy
from study.errors import ConfigError, DataError

__all__ = [
    "Record",
    "Signal",
    "DatasetReader",
    "READERS",
    "BadRecord",
    "LABEL_KINDS",
    "STANDARD_LEADS",
    "check_signal",
]


class DatasetReader:
    """Base class of the readers. Subclasses set the class attributes and implement
    `_check_layout`, `records` and `read`.

    Args:
        root: the dataset's folder as downloaded.

    Raises:
        DataError: the folder is not the layout this reader expects (checked at once).
    """

    name: str = ""
    version: str = "1"  # bump when what the reader returns changes: it is in the cache key
    source: str = ""  # where it comes from (URL of the PhysioNet page or publisher)
    licence: str = ""
    # The label sets the studies use: name -> ordered class names. The first is the default.
    label_sets: dict[str, tuple[str, ...]] = {}
    # label set -> one of LABEL_KINDS; a set not listed is multi_label.
    label_kinds: dict[str, str] = {}
    # Label sets whose rows are frames cut from each record (study.data.frames), not records.
    frame_label_sets: tuple[str, ...] = ()
    # What a user of the prepared data must know (e.g. no patient ids): copied into its report.
    caveats: tuple[str, ...] = ()
    # What the patient-level split groups by; no default, every registered reader declares it.
    split_by: ClassVar[SplitBy]
    # "patient": where the patient ids come from; "record": why there are none.
    split_basis: ClassVar[str]

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.name}: dataset root {self.root} is not a directory")
        self._check_layout()

    def _check_layout(self) -> None:
        raise NotImplementedError

    def records(self) -> list[Record]:
        """Every record the dataset lists, in a stable order."""
        raise NotImplementedError

    def read(self, record: Record) -> Signal:
        """The record's signal; raises BadRecord with the reason when it cannot be used."""
        raise NotImplementedError

    def check_label_set(self, label_set: str) -> None:
        """Raise ConfigError, listing this reader's sets, when `label_set` is not one."""
        if label_set not in self.label_sets:
            raise ConfigError(
                f"{self.name} has no label set {label_set!r}; known: {', '.join(self.label_sets)}"
            )

    def label_kind(self, label_set: str) -> str:
        """The kind of `label_set` (one of LABEL_KINDS).

        Raises:
            ConfigError: an unknown label set.
        """
        self.check_label_set(label_set)
        return self.label_kinds.get(label_set, "multi_label")

    def classes_of(self, record: Record, label_set: str) -> set[str]:
        """The classes of `label_set` that `record` has (its native labels mapped)."""
        raise NotImplementedError

    def read_beats(self, record: Record) -> np.ndarray:
        """Reference beat (QRS / R-peak) positions of a record of a per-sample label set:
        int64 sample indices at the record's own rate, sorted, inside the record.

        Raises:
            BadRecord: the reference is missing, unreadable or outside the record.
        """
        raise NotImplementedError(f"{self.name} has no per-sample beat references")

    def label_matrix(self, records: list[Record], label_set: str | None = None) -> np.ndarray:
        """Multi-hot uint8 (records, classes) of `label_set` (default: the first one).

        Raises:
            ConfigError: an unknown label set (the message lists this reader's sets).
        """
        label_set = label_set or next(iter(self.label_sets))
        self.check_label_set(label_set)
        classes = self.label_sets[label_set]
        index = {c: i for i, c in enumerate(classes)}
        out = np.zeros((len(records), len(classes)), dtype=np.uint8)
        for r, rec in enumerate(records):
            for c in self.classes_of(rec, label_set):
                out[r, index[c]] = 1
        return out


READERS: Registry = Registry("dataset reader")


def check_signal(
    record_id: str,
    sig: Signal,
    expect_fs: float | None = None,
    expect_leads: tuple[str, ...] | None = None,
    expect_samples: int | None = None,
) -> Signal:
    """The shared bad-record checks: shape, NaN/inf, flat, and header promises.

    Raises:
        BadRecord: naming the record and the reason.
    """
    x = sig.data
    if x.ndim != 2 or x.shape[1] == 0:
        raise BadRecord(record_id, f"signal shape {x.shape} is not (leads, samples)")
    if not np.isfinite(x).all():
        raise BadRecord(record_id, f"{int((~np.isfinite(x)).sum())} NaN or infinite samples")
    if expect_fs is not None and abs(sig.fs - expect_fs) > 1e-6:
        raise BadRecord(record_id, f"sampling rate {sig.fs} Hz, header promises {expect_fs} Hz")
    if expect_leads and tuple(sig.lead_names) != tuple(expect_leads):
        raise BadRecord(record_id, f"leads {list(sig.lead_names)}, expected {list(expect_leads)}")
    if expect_samples is not None and x.shape[1] != expect_samples:
        raise BadRecord(
            record_id, f"{x.shape[1]} samples, header promises {expect_samples} (truncated?)"
        )
    flat = np.ptp(x, axis=1) < 1e-6
    if flat.all():
        raise BadRecord(record_id, "every lead is flat (constant)")
    return sig
