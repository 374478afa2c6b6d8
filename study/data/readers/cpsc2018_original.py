"""Reader of the original CPSC 2018 release (China Physiological Signal Challenge 2018).

Layout: `A0001.mat` ... (at any depth: the release ships TrainingSet1/2/3) and one
`REFERENCE.csv` with columns Recording, First_label, Second_label, Third_label. Each .mat
holds a struct `ECG` with fields `sex`, `age` and `data` (12 x N, float, millivolts, 500 Hz,
leads I, II, III, aVR, aVL, aVF, V1-V6). Labels are the codes 1-9:

    1 Normal, 2 AF, 3 I-AVB, 4 LBBB, 5 RBBB, 6 PAC, 7 PVC, 8 STD, 9 STE

Records keep these codes as their native labels; label sets map them through their SNOMED-CT
codes (`snomed.LABEL_SETS`), so 'cpsc9' and 'snomed' mean here what they mean for the CinC
repack (`cinc.Cpsc2018Reader`). Each record is its own patient.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from study.data.readers._base import (
    READERS,
    STANDARD_LEADS,
    BadRecord,
    DatasetReader,
    Record,
    Signal,
    check_signal,
)
from study.data.snomed import HARMONISED, LABEL_SETS, map_codes
from study.errors import DataError

__all__ = ["Cpsc2018OriginalReader", "CPSC_CODES"]

# REFERENCE.csv code -> (CPSC name, SNOMED-CT code as CinC 2020 repacked the class).
CPSC_CODES: dict[str, tuple[str, str]] = {
    "1": ("Normal", "426783006"),
    "2": ("AF", "164889003"),
    "3": ("I-AVB", "270492004"),
    "4": ("LBBB", "164909002"),
    "5": ("RBBB", "59118001"),
    "6": ("PAC", "284470004"),
    "7": ("PVC", "164884008"),  # CinC codes CPSC's PVC as ventricular ectopics
    "8": ("STD", "429622005"),
    "9": ("STE", "164931005"),
}
_COLUMNS = ("Recording", "First_label", "Second_label", "Third_label")
_FS = 500.0


@READERS.register(name="cpsc2018_original")
class Cpsc2018OriginalReader(DatasetReader):
    """The original CPSC 2018 training set: .mat files and REFERENCE.csv.

    Args:
        root: the folder holding REFERENCE.csv and the A*.mat files (at any depth).

    Raises:
        DataError: no REFERENCE.csv, more than one, one without the expected columns or with
            a bad row (unknown code, repeated recording), or no .mat file.
    """

    name = "cpsc2018_original"
    # The same recordings (A0001-A6877) as the CinC 2020 copy, `cpsc2018`: never paired.
    recordings = "cpsc2018"
    source = "http://2018.icbeb.org/Challenge.html"
    licence = "free for research (challenge terms)"
    version = "1"
    label_sets = {"cpsc9": tuple(LABEL_SETS["cpsc9"]), "snomed": HARMONISED}
    split_by = "record"
    split_basis = "CPSC 2018 publishes no patient ids"

    def _check_layout(self) -> None:
        expected = f"REFERENCE.csv and A*.mat files (struct ECG) below {self.root}"
        refs = sorted(self.root.rglob("REFERENCE.csv"))
        mats: dict[str, Path] = {}
        for path in sorted(self.root.rglob("*.mat")):
            if path.stem in mats:
                raise DataError(
                    f"{self.name}: recording names must be unique below "
                    f"{self.root}, found {mats[path.stem]} and {path}"
                )
            mats[path.stem] = path
        if len(refs) != 1:
            found = (
                f"{len(refs)} REFERENCE.csv files ({', '.join(map(str, refs))})"
                if refs
                else "no REFERENCE.csv"
            )
            raise DataError(
                f"{self.name}: expected {expected}, found {found} and {len(mats)} .mat files"
            )
        if not mats:
            raise DataError(
                f"{self.name}: expected {expected}, found {refs[0].name} and no .mat file"
            )
        self._reference = refs[0]
        self._mats = mats
        self._labels = _read_reference(refs[0])
        # .mat files REFERENCE.csv does not list: not records (no labels), kept for a count.
        self.unreferenced: tuple[str, ...] = tuple(sorted(set(mats) - set(self._labels)))

    def records(self) -> list[Record]:
        """Every recording REFERENCE.csv lists, in its order (age and sex: `demographics`)."""
        return [
            Record(record_id=rid, patient_id=rid, labels=codes, fs=_FS, lead_names=STANDARD_LEADS)
            for rid, codes in self._labels.items()
        ]

    def read(self, record: Record) -> Signal:
        """The record's 12 x N signal in mV.

        Raises:
            BadRecord: the .mat is missing or unreadable, has no ECG.data of 12 leads, or the
                signal is NaN or flat.
        """
        data = self._ecg(record.record_id)["data"]
        rid = record.record_id
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.dtype.kind not in "iuf":
            raise BadRecord(
                rid,
                f"ECG.data is not a numeric matrix (got {type(data).__name__} "
                f"{getattr(data, 'shape', '')})",
            )
        if data.shape[0] != len(STANDARD_LEADS):
            raise BadRecord(
                rid,
                f"ECG.data has {data.shape[0]} rows, expected "
                f"{len(STANDARD_LEADS)} leads x samples",
            )
        signal = Signal(data=data.astype(np.float32), fs=_FS, lead_names=STANDARD_LEADS)
        return check_signal(rid, signal, expect_fs=_FS, expect_leads=STANDARD_LEADS)

    def demographics(self, record: Record) -> dict[str, object]:
        """Age (None if unknown) and sex as the record's .mat gives them."""
        ecg = self._ecg(record.record_id)
        try:
            age: float | None = float(ecg.get("age"))
        except (TypeError, ValueError):  # missing, empty or text: unknown
            age = None
        if age is not None and not np.isfinite(age):
            age = None
        sex = ecg.get("sex")
        return {"age": age, "sex": str(sex) if isinstance(sex, str) and sex else None}

    def classes_of(self, record: Record, label_set: str) -> set[str]:
        """The classes of `label_set` the record's CPSC codes give (via their SNOMED codes)."""
        self.check_label_set(label_set)
        snomed = [CPSC_CODES[c][1] for c in record.labels]
        return map_codes(snomed, LABEL_SETS[label_set])[0]

    def _ecg(self, rid: str) -> dict:
        path = self._mats.get(rid)
        if path is None:
            raise BadRecord(
                rid, f"REFERENCE.csv lists it but {rid}.mat is missing below {self.root}"
            )
        try:
            mat = scipy.io.loadmat(str(path), simplify_cells=True)
        except Exception as exc:  # scipy raises ValueError, TypeError or OSError by case
            raise BadRecord(rid, f"{path.name} cannot be read as a MATLAB file: {exc}") from exc
        ecg = mat.get("ECG")
        if not isinstance(ecg, dict) or "data" not in ecg:
            raise BadRecord(rid, f"{path.name} has no struct ECG with a field data")
        return ecg


def _read_reference(path: Path) -> dict[str, tuple[str, ...]]:
    """REFERENCE.csv as recording -> its distinct label codes in column order."""
    try:
        table = pd.read_csv(path, dtype=str)
    except Exception as exc:  # pandas' parser errors have no common base class
        raise DataError(f"{path} cannot be read as CSV: {exc}") from exc
    missing = [c for c in _COLUMNS if c not in table.columns]
    if missing:
        raise DataError(
            f"{path} must have columns {', '.join(_COLUMNS)}; missing "
            f"{', '.join(missing)} (found {', '.join(map(str, table.columns))})"
        )
    out: dict[str, tuple[str, ...]] = {}
    for row in table.itertuples(index=False):
        rid = str(row.Recording).strip()
        if rid in out:
            raise DataError(f"{path}: recording {rid} is listed twice")
        codes: list[str] = []
        for value in (row.First_label, row.Second_label, row.Third_label):
            if pd.isna(value) or not str(value).strip():
                continue
            code = str(value).strip()
            if code not in CPSC_CODES:
                raise DataError(
                    f"{path}: recording {rid} has label {value!r}; labels must be "
                    f"1-9 ({', '.join(n for n, _ in CPSC_CODES.values())})"
                )
            if code not in codes:
                codes.append(code)
        if not codes:
            raise DataError(f"{path}: recording {rid} has no label (First_label is required)")
        out[rid] = tuple(codes)
    return out
