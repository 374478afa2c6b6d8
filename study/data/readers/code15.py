"""The CODE test set (Ribeiro et al. 2020, Nat Commun 11:1760): 827 12-lead ECGs of 827
patients from the Telehealth Network of Minas Gerais, annotated by cardiologists.

Not CODE-15% (Zenodo 4916206, 345,779 exams): this is the 827-exam test set of the
automatic-ecg-diagnosis paper (Zenodo 3765780 / 3625006, data.zip). Layout of the root, the
extracted data.zip::

    ecg_tracings.hdf5          dataset "tracings", shape (827, 4096, 12): exam, sample, lead
    attributes.csv             age and sex per exam, in the same order (optional here)
    annotations/gold_standard.csv
                               columns 1dAVb, RBBB, LBBB, SB, AF, ST (0/1), one row per exam

Facts taken from the authors' documentation, and where it contradicts itself:

- 400 Hz; 10 s (4000 samples) or 7 s (2800) exams, centred in 4096 samples with zeros on both
  sides. `read` trims the leading and trailing samples where all 12 leads are exactly 0, so
  a signal has its recorded length whatever it is (a third-party audit of CODE-15% found
  7.3 s exams and exams filling all 4096 samples); `trim_padding=False` keeps the 4096.
- Units: the authors' READMEs say the tracings are "at the scale 1e-4V: so if the signal is
  in V it should be multiplied by 1000". The halves disagree: a 1e-4 V scale would make the
  values tenths of a millivolt, V x 1000 makes them millivolts. Third-party measurements of
  this file read as millivolts give a median lead-II R wave of about 1.5 mV, which is
  physiological, so the values are taken as mV unchanged (`_TO_MV = 1.0`). Caveat: the
  authors' ecg-preprocessing README says CODE-15% and SaMi-Trop were written with
  `--scale 2`; nothing says whether this set was. Not verified here on the real file.
- Lead order: the main README says {DI, DII, DIII, AVR, AVL, AVF, V1-V6}, but the README
  inside the data folder says {DI, DII, DIII, AVL, AVF, AVR, V1-V6}, and a third-party check
  of the arrays against Einthoven's and Goldberger's relations agrees with the data README.
  The reader uses the data README's order and checks it on every record it reads
  (`check_lead_order`): columns 2-5 must equal II-I, (I-III)/2, (II+III)/2, -(I+II)/2 up to
  10% RMS, else the record is bad and the message says which order the columns fit.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from study.data.readers._base import (
    READERS,
    BadRecord,
    DatasetReader,
    Record,
    Signal,
    check_signal,
)
from study.data.readers.ptbxl import list_folder
from study.errors import DataError

__all__ = ["Code15TestReader", "STORED_LEADS", "ABNORMALITIES"]

FS = 400.0
STORED_SAMPLES = 4096
_TO_MV = 1.0  # the stored values are millivolts (see the module docstring)
# The order of the last axis of `tracings`, per the data README (DI, DII, DIII, AVL, AVF, AVR).
STORED_LEADS = ("I", "II", "III", "aVL", "aVF", "aVR", "V1", "V2", "V3", "V4", "V5", "V6")
ABNORMALITIES = ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")
_LIMB_TOLERANCE = 0.10  # relative RMS misfit allowed by the lead-order check
_FLAT_MV = 1e-3  # below this RMS the limb relations say nothing (and check_signal rules)


def _limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> dict[str, np.ndarray]:
    """III, aVR, aVL and aVF from I and II (Einthoven's and Goldberger's relations)."""
    return {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2,
        "aVL": lead_i - lead_ii / 2,
        "aVF": lead_ii - lead_i / 2,
    }


def _misfit(x: np.ndarray, reference: np.ndarray) -> float:
    scale = max(float(np.sqrt(np.mean(reference**2))), float(np.sqrt(np.mean(x**2))), _FLAT_MV)
    return float(np.sqrt(np.mean((x - reference) ** 2))) / scale


@READERS.register(name="code15_test")
class Code15TestReader(DatasetReader):
    """The CODE test set: 827 exams, six cardiologist-annotated abnormalities.

    Records come in file order with `record_id` and `patient_id` the row index ("0" to
    "826"; one exam per patient), `labels` the abnormalities marked 1 in gold_standard.csv,
    `fs` 400 and `meta` holding age and sex when attributes.csv is present. No official
    folds (the whole set is a test set).

    Label sets: "code6" (1dAVb, RBBB, LBBB, SB, AF, ST, multi-label) and "code7", which adds
    NORM for an exam with none of the six. NORM is "none of these six", not a normal ECG.

    An annotation row with a value other than 0 or 1 is still listed, without labels and
    with the reason in `meta["problem"]`; `read` raises BadRecord with it, and
    `listing_problems` holds one BadRecord per such record after `records()`.

    Args:
        root: the extracted data.zip (holding ecg_tracings.hdf5 and annotations/).
        trim_padding: drop the all-zero padding at both ends (the recorded length).
        check_lead_order: check the limb leads against I and II on every read.

    Raises:
        DataError: a missing file, a `tracings` dataset that is not (exams, 4096, 12), or
            annotation tables without the six columns or with another number of rows.
    """

    name = "code15_test"
    source = "https://doi.org/10.5281/zenodo.3765780"
    licence = "CC-BY-4.0"
    label_sets = {"code6": ABNORMALITIES, "code7": (*ABNORMALITIES, "NORM")}
    # No patient id column, but the publisher's 827 exams are of 827 patients.
    split_by = "patient"
    split_basis = "the exam's row: one exam per patient, as published"

    def __init__(
        self, root: str | Path, trim_padding: bool = True, check_lead_order: bool = True
    ) -> None:
        self.trim_padding = bool(trim_padding)
        self.check_lead_order = bool(check_lead_order)
        self.listing_problems: list[BadRecord] = []
        super().__init__(root)

    @property
    def tracings_path(self) -> Path:
        return self.root / "ecg_tracings.hdf5"

    def _check_layout(self) -> None:
        gold = self.root / "annotations" / "gold_standard.csv"
        if not (self.tracings_path.is_file() and gold.is_file()):
            raise DataError(
                f"code15_test: {self.root} is not the extracted CODE test set: expected "
                f"ecg_tracings.hdf5 and annotations/gold_standard.csv; found "
                f"{list_folder(self.root)}"
            )
        try:
            with h5py.File(self.tracings_path, "r") as f:
                if "tracings" not in f:
                    raise DataError(
                        f"code15_test: {self.tracings_path} must hold a dataset 'tracings', "
                        f"found {sorted(f.keys())}"
                    )
                shape = f["tracings"].shape
        except OSError as e:
            raise DataError(
                f"code15_test: {self.tracings_path} is not readable HDF5 ({e})"
            ) from None
        if len(shape) != 3 or shape[1] != STORED_SAMPLES or shape[2] != len(STORED_LEADS):
            raise DataError(
                f"code15_test: 'tracings' must have shape (exams, {STORED_SAMPLES}, "
                f"{len(STORED_LEADS)}), got {shape}"
            )
        self.n_exams = int(shape[0])
        self._gold = self._read_table(gold, ABNORMALITIES)
        attributes = self.root / "attributes.csv"
        self._attributes = self._read_table(attributes, ()) if attributes.is_file() else None

    def _read_table(self, path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
        try:
            table = pd.read_csv(path)
        except (ValueError, OSError) as e:
            raise DataError(f"code15_test: {path} is not a readable CSV ({e})") from None
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise DataError(
                f"code15_test: {path} must have the columns {list(columns)}; missing "
                f"{missing}, found {list(table.columns)}"
            )
        if len(table) != self.n_exams:
            raise DataError(
                f"code15_test: {path} must have one row per exam of 'tracings' "
                f"({self.n_exams}), got {len(table)}"
            )
        return table

    def records(self) -> list[Record]:
        """One record per exam, in file order."""
        self.listing_problems = []
        gold = self._gold[list(ABNORMALITIES)]
        out = []
        for i in range(self.n_exams):
            rid = str(i)
            row = gold.iloc[i]
            meta: dict = {"stored_samples": STORED_SAMPLES}
            if self._attributes is not None:
                for key in ("age", "sex"):
                    if key in self._attributes.columns:
                        meta[key] = _plain(self._attributes[key].iloc[i])
            odd = {k: _plain(v) for k, v in row.items() if not (v == 0 or v == 1)}
            labels: tuple[str, ...] = ()
            if odd:
                meta["problem"] = f"gold_standard.csv values must be 0 or 1, got {odd}"
                self.listing_problems.append(BadRecord(rid, meta["problem"]))
            else:
                labels = tuple(k for k in ABNORMALITIES if row[k] == 1)
            out.append(
                Record(
                    record_id=rid,
                    patient_id=rid,
                    labels=labels,
                    fs=FS,
                    n_samples=None if self.trim_padding else STORED_SAMPLES,
                    lead_names=STORED_LEADS,
                    meta=meta,
                )
            )
        return out

    def classes_of(self, record: Record, label_set: str) -> set[str]:
        """The record's abnormalities; under "code7", {"NORM"} when it has none of them.

        Raises:
            ConfigError: an unknown label set.
        """
        self.check_label_set(label_set)
        found = {c for c in record.labels if c in ABNORMALITIES}
        if label_set == "code7" and not found and not record.meta.get("problem"):
            return {"NORM"}
        return found

    def read(self, record: Record) -> Signal:
        """The exam's 12 leads in mV at 400 Hz, in the stored order (STORED_LEADS).

        Raises:
            BadRecord: a listing problem, an index outside the file, NaN samples, an all-zero
                exam, every lead flat, or limb leads that do not fit the stored order.
        """
        rid = record.record_id
        if record.meta.get("problem"):
            raise BadRecord(rid, record.meta["problem"])
        try:
            index = int(rid)
        except ValueError:
            raise BadRecord(rid, "record_id must be the exam's row index") from None
        if not 0 <= index < self.n_exams:
            raise BadRecord(rid, f"row index must be in [0, {self.n_exams}), got {index}")
        with h5py.File(self.tracings_path, "r") as f:
            x = np.asarray(f["tracings"][index], dtype=np.float64).T * _TO_MV
        if self.trim_padding:
            recorded = np.flatnonzero((x != 0).any(axis=0))
            if recorded.size == 0:
                raise BadRecord(rid, "every sample of every lead is 0 (an empty exam)")
            x = x[:, recorded[0] : recorded[-1] + 1]
        sig = check_signal(rid, Signal(x.astype(np.float32), FS, STORED_LEADS), expect_fs=FS)
        if self.check_lead_order:
            self._check_limb_leads(rid, x)
        return sig

    @staticmethod
    def _check_limb_leads(rid: str, x: np.ndarray) -> None:
        lead_i, lead_ii = x[0], x[1]
        if max(np.sqrt(np.mean(lead_i**2)), np.sqrt(np.mean(lead_ii**2))) < _FLAT_MV:
            return  # leads I and II carry no signal to check against
        derived = _limb_leads(lead_i, lead_ii)
        names = STORED_LEADS[2:6]
        misfits = [_misfit(x[2 + k], derived[name]) for k, name in enumerate(names)]
        if max(misfits) <= _LIMB_TOLERANCE:
            return
        fits = []
        for k in range(4):
            best = min(derived, key=lambda name: _misfit(x[2 + k], derived[name]))
            ok = _misfit(x[2 + k], derived[best]) <= _LIMB_TOLERANCE
            fits.append(best if ok else "none")
        raise BadRecord(
            rid,
            f"limb leads do not fit the stored order {list(names)} (misfit "
            f"{[round(m, 2) for m in misfits]}, allowed {_LIMB_TOLERANCE}); columns 2-5 "
            f"fit {fits}",
        )


def _plain(value: object) -> object:
    """A CSV cell as a plain Python value (numpy scalars do not print or compare well)."""
    return value.item() if isinstance(value, np.generic) else value
