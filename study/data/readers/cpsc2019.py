"""CPSC 2019 (the 2nd China Physiological Signal Challenge: QRS detection and heart rate
from single-lead ECG): 2,000 records of 10 s at 500 Hz with reference R-peak positions.

Layout of the root (the training set as released)::

    data/data_00001.mat   variable `ecg`: 5000 x 1 float, millivolts, 500 Hz
    ref/R_00001.mat       variable `R_peak`: n x 1 sample indices of the record's R peaks

Only `data/data_<n>.mat` and `ref/R_<n>.mat` are read; anything else under the root (notes,
archives, or other formats) is ignored on purpose. R_peak values are taken as 0-based
sample indices, as the challenge's Python scoring code compares them with detections
(at 500 Hz a 1-based reading would move each peak by 2 ms).

Leakage caveat: CPSC 2019 publishes no patient identifiers, so each record is its own
patient. Records of one patient can land in different folds; patient-level splits cannot be
guaranteed on this dataset (the caveat is also written into every prepared copy's report).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import scipy.io

from study.data.readers._base import (
    READERS,
    BadRecord,
    DatasetReader,
    Record,
    Signal,
    check_signal,
)
from study.errors import DataError

__all__ = ["Cpsc2019Reader"]

FS = 500.0
N_SAMPLES = 5000  # 10 s at 500 Hz, every record
LEADS = ("ecg",)  # the release does not name its single lead
_DATA = re.compile(r"data_(\d+)\.mat")


@READERS.register(name="cpsc2019")
class Cpsc2019Reader(DatasetReader):
    """CPSC 2019: one record per `data/data_<n>.mat`, its R peaks in `ref/R_<n>.mat`.

    The label set `qrs` is per-sample: the reference R peaks (`read_beats`) become a mask
    and a beat list per record (study.data.frames). Each record is its own patient (no
    patient ids are published: see the module docstring's leakage caveat).

    Raises:
        DataError: no data/ folder with data_<n>.mat files, a .mat in data/ of another name,
            or no ref/ folder.
    """

    name = "cpsc2019"
    source = "http://2019.icbeb.org/Challenge.html"
    licence = "not stated by the publisher (challenge data)"
    label_sets = {"qrs": ("qrs",)}
    label_kinds = {"qrs": "per_sample"}
    split_by = "record"
    split_basis = "CPSC 2019 publishes no patient ids"
    caveats = (
        "cpsc2019 publishes no patient ids: each record is its own patient, so records of "
        "one patient may fall into different splits (possible train/test leakage)",
    )

    def _check_layout(self) -> None:
        data, ref = self.root / "data", self.root / "ref"
        found = sorted(p.name for p in self.root.iterdir())[:8]
        if not data.is_dir() or not any(_DATA.fullmatch(p.name) for p in data.iterdir()):
            inside = sorted(p.name for p in data.iterdir())[:8] if data.is_dir() else []
            raise DataError(
                f"cpsc2019: expected data/data_<n>.mat and ref/R_<n>.mat under {self.root}, "
                f"found {found or 'nothing'}" + (f" (data/ holds {inside})" if inside else "")
            )
        for p in data.glob("*.mat"):
            if not _DATA.fullmatch(p.name):
                raise DataError(f"cpsc2019: {p} is not named data_<n>.mat")
        if not ref.is_dir():
            raise DataError(
                f"cpsc2019: the reference folder {ref} (R_<n>.mat with R_peak) is missing; "
                f"found {found}"
            )

    def records(self) -> list[Record]:
        """Every data/data_<n>.mat, by n; each its own patient."""
        numbered = sorted(
            (int(m.group(1)), p.stem)
            for p in (self.root / "data").iterdir()
            if (m := _DATA.fullmatch(p.name))
        )
        return [
            Record(
                record_id=stem,
                patient_id=stem,
                labels=("qrs",),
                fs=FS,
                n_samples=N_SAMPLES,
                lead_names=LEADS,
            )
            for _, stem in numbered
        ]

    def classes_of(self, record: Record, label_set: str) -> set[str]:
        """{"qrs"}: every record has reference QRS positions (the per-sample target)."""
        self.check_label_set(label_set)
        return {"qrs"}

    @staticmethod
    def _load(rid: str, path: Path, variable: str) -> np.ndarray:
        if not path.is_file():
            raise BadRecord(rid, f"file {path} is missing")
        try:
            mat = scipy.io.loadmat(str(path))
        except Exception as e:  # scipy raises ValueError, TypeError or OSError by case
            raise BadRecord(rid, f"unreadable file {path}: {e}") from e
        if variable not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise BadRecord(rid, f"{path.name} has no variable {variable!r} (found {found})")
        value = mat[variable]
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
            raise BadRecord(rid, f"{path.name}: {variable} is not a numeric array")
        return value

    def read(self, record: Record) -> Signal:
        """The single lead in mV at 500 Hz, (1, 5000).

        Raises:
            BadRecord: the .mat is missing or unreadable, has no numeric `ecg` of one column
                of 5000 samples, or the signal is NaN or flat.
        """
        rid = record.record_id
        ecg = self._load(rid, self.root / "data" / f"{rid}.mat", "ecg")
        if ecg.ndim != 2 or 1 not in ecg.shape:
            raise BadRecord(rid, f"ecg has shape {ecg.shape}, expected (samples, 1)")
        sig = Signal(data=ecg.reshape(1, -1).astype(np.float32), fs=FS, lead_names=LEADS)
        return check_signal(rid, sig, expect_fs=FS, expect_samples=record.n_samples)

    def read_beats(self, record: Record) -> np.ndarray:
        """The reference R peaks (0-based sample indices at 500 Hz), int64, increasing.

        Raises:
            BadRecord: ref/R_<n>.mat is missing or unreadable, has no numeric `R_peak`, or
                its values are not whole numbers, not increasing, or outside the record.
        """
        rid = record.record_id
        number = rid.removeprefix("data_")
        path = self.root / "ref" / f"R_{number}.mat"
        value = self._load(rid, path, "R_peak").reshape(-1).astype(np.float64)
        if not np.all(np.isfinite(value)) or np.any(value != np.round(value)):
            raise BadRecord(rid, f"{path.name}: R_peak holds values that are not sample indices")
        peaks = value.astype(np.int64)
        n = record.n_samples if record.n_samples is not None else N_SAMPLES
        outside = peaks[(peaks < 0) | (peaks >= n)]
        if outside.size:
            raise BadRecord(
                rid,
                f"R_peak {int(outside[0])} lies outside the record's {n} samples "
                f"({outside.size} outside)",
            )
        if np.any(np.diff(peaks) <= 0):
            raise BadRecord(rid, f"{path.name}: R_peak is not strictly increasing")
        return peaks
