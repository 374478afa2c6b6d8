"""PTB-XL (PhysioNet ptb-xl 1.0.3): 21,799 ten-second 12-lead records of 18,869 patients.

Layout of the root, as downloaded::

    ptbxl_database.csv    one row per record: ecg_id, patient_id, scp_codes, strat_fold,
                          filename_lr, filename_hr, age, sex, ...
    scp_statements.csv    one row per SCP statement (the index), with the columns diagnostic,
                          form, rhythm (1.0 or empty), diagnostic_class, diagnostic_subclass
    records100/           WFDB records at 100 Hz (filename_lr, e.g. records100/00000/00001_lr)
    records500/           WFDB records at 500 Hz (filename_hr)

Labels follow the PTB-XL benchmark (helme/ecg_ptbxl_benchmarking, `compute_label_aggregations`):
every statement in a record's scp_codes counts whatever its likelihood (0.0 included); the
diagnostic label sets use only statements with diagnostic == 1.0 and map them to their
subclass or class. The class lists are read from scp_statements.csv, sorted, so their sizes
follow the file (71 / 44 / 23 / 5 / 19 / 12 statements in release 1.0.3).

This module also holds `read_wfdb`, the WFDB reading shared by the PhysioNet readers.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb

from study.data.readers._base import (
    READERS,
    STANDARD_LEADS,
    BadRecord,
    DatasetReader,
    Record,
    Signal,
    check_signal,
)
from study.errors import ConfigError, DataError

__all__ = ["PtbXlReader", "read_wfdb", "list_folder"]

# Physical units a WFDB header may declare, and the factor that turns them into millivolts.
_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}

_DATABASE_COLUMNS = (
    "ecg_id",
    "patient_id",
    "scp_codes",
    "strat_fold",
    "filename_lr",
    "filename_hr",
)
_STATEMENT_COLUMNS = ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")
_RECORD_SECONDS = 10  # every PTB-XL record is 10 s long
_FILENAME_COLUMN = {100: "filename_lr", 500: "filename_hr"}


def list_folder(path: Path, limit: int = 12) -> str:
    """What a folder holds, for layout error messages ("a.csv, b/, ... (40 entries)")."""
    try:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if not entries:
        return "nothing (empty folder)"
    shown = ", ".join(entries[:limit])
    return shown + (f", ... ({len(entries)} entries)" if len(entries) > limit else "")


def read_wfdb(
    record_id: str,
    path: Path,
    *,
    expect_fs: float,
    leads: tuple[str, ...] | None = None,
    canonical: Callable[[str], str] = str,
) -> tuple[Signal, int]:
    """Read one WFDB record in millivolts, mapping every failure to a BadRecord.

    Args:
        record_id: the id named in errors.
        path: the record's path without extension (the header is `path`.hea).
        expect_fs: the sampling rate the dataset records at; another rate is a bad record.
        leads: the lead names to return, in this order (after `canonical`); None keeps all.
            Only the signal files that hold these leads are read.
        canonical: maps a header's lead name to the name used in `leads` and the result.

    Returns:
        The signal as float32 (leads, samples) in mV, and the sample count the header promises.

    Raises:
        BadRecord: a missing or unreadable header or signal file, a signal file shorter than
            its header says, another sampling rate, a missing lead, or an unknown unit.
    """
    try:
        header = wfdb.rdheader(str(path))
    except FileNotFoundError:
        raise BadRecord(record_id, f"header file {path}.hea is missing") from None
    except Exception as e:  # wfdb raises bare Exceptions and ValueErrors on bad headers
        raise BadRecord(
            record_id, f"unreadable header {path}.hea ({type(e).__name__}: {e})"
        ) from None
    if abs(float(header.fs) - expect_fs) > 1e-6:
        raise BadRecord(
            record_id, f"sampling rate {header.fs} Hz, the dataset records at {expect_fs} Hz"
        )
    names = [canonical(n) for n in header.sig_name or []]
    if leads is None:
        channels = list(range(len(names)))
    else:
        missing = [lead for lead in leads if lead not in names]
        if missing:
            raise BadRecord(
                record_id,
                f"leads {list(header.sig_name or [])} lack {missing} of the expected {list(leads)}",
            )
        channels = [names.index(lead) for lead in leads]
    try:
        rec = wfdb.rdrecord(str(path), channels=channels, physical=True)
    except FileNotFoundError as e:
        raise BadRecord(record_id, f"signal file {e.filename} is missing") from None
    except ValueError as e:  # wfdb: "Samples were not loaded correctly" on a short file
        raise BadRecord(
            record_id,
            f"signal file shorter than the header's {header.sig_len} samples (truncated?): {e}",
        ) from None
    except Exception as e:
        raise BadRecord(record_id, f"unreadable signal ({type(e).__name__}: {e})") from None
    if rec.p_signal is None:
        raise BadRecord(record_id, "the header lists no signal")
    data = rec.p_signal.T.astype(np.float64)
    for i, unit in enumerate(rec.units or ["mV"] * len(channels)):
        factor = _TO_MV.get(str(unit).strip().lower())
        if factor is None:
            raise BadRecord(
                record_id,
                f"lead {rec.sig_name[i]} is in unit {unit!r}; expected one of mV, uV, V",
            )
        data[i] *= factor
    out_names = tuple(names[c] for c in channels)
    return Signal(data.astype(np.float32), float(rec.fs), out_names), int(header.sig_len)


def _ptbxl_lead(name: str) -> str:
    """PTB-XL's spellings (AVR, AVL, AVF) to the standard ones (aVR, aVL, aVF)."""
    by_upper = {lead.upper(): lead for lead in STANDARD_LEADS}
    return by_upper.get(name.strip().upper(), name)


_LABEL_SET_ORDER = ("superdiagnostic", "subdiagnostic", "diagnostic", "form", "rhythm", "all")


@READERS.register(name="ptbxl")
class PtbXlReader(DatasetReader):
    """PTB-XL, with its official folds and the benchmark's six label sets.

    Records come in ecg_id order, with `record_id` the ecg_id, `patient_id` the integer
    patient_id, `fold` the strat_fold (1-10; the benchmark trains on 1-8, validates on 9 and
    tests on 10), `labels` the record's SCP statements and `meta` holding age, sex, the
    statements' likelihoods (`scp_codes`) and the record's file.

    A record whose scp_codes cannot be parsed, or names a statement that scp_statements.csv
    lacks, or whose patient_id or strat_fold is missing, is still listed, with no labels and
    the reason in `meta["problem"]`; `read` raises BadRecord with that reason, and
    `listing_problems` holds one BadRecord per such record after `records()`.

    Args:
        root: the PTB-XL folder as downloaded.
        sampling_rate: 100 (records100/, filename_lr) or 500 (records500/, filename_hr).

    Raises:
        ConfigError: a sampling rate other than 100 or 500.
        DataError: the folder lacks a file, folder or column of the layout above.
    """

    name = "ptbxl"
    source = "https://physionet.org/content/ptb-xl/1.0.3/"
    licence = "CC-BY-4.0"
    # The label sets' names; their classes come from the folder's scp_statements.csv, so an
    # opened reader's label_sets holds them (a spec and a cache key need only the names).
    label_sets = dict.fromkeys(_LABEL_SET_ORDER, ())
    # The official strat_fold folds keep each patient in one fold.
    split_by = "patient"
    split_basis = "patient_id of ptbxl_database.csv"

    def __init__(self, root: str | Path, sampling_rate: int = 100) -> None:
        if sampling_rate not in _FILENAME_COLUMN:
            raise ConfigError(f"ptbxl sampling_rate must be 100 or 500, got {sampling_rate!r}")
        self.sampling_rate = int(sampling_rate)
        self.listing_problems: list[BadRecord] = []
        super().__init__(root)

    # --- layout ---------------------------------------------------------------------------

    def _check_layout(self) -> None:
        folder = f"records{self.sampling_rate}"
        need = [
            (self.root / "ptbxl_database.csv").is_file(),
            (self.root / "scp_statements.csv").is_file(),
            (self.root / folder).is_dir(),
        ]
        if not all(need):
            raise DataError(
                f"ptbxl: {self.root} is not a PTB-XL folder for sampling_rate="
                f"{self.sampling_rate}: expected ptbxl_database.csv, scp_statements.csv and "
                f"{folder}/; found {list_folder(self.root)}"
            )
        database = self._read_csv("ptbxl_database.csv", _DATABASE_COLUMNS, index_col=None)
        ids = pd.to_numeric(database["ecg_id"], errors="coerce")
        if ids.isna().any() or (ids != ids.round()).any():
            raise DataError(
                f"ptbxl: ptbxl_database.csv ecg_id must be integers, got "
                f"{database['ecg_id'][ids.isna() | (ids != ids.round())].head(3).tolist()}"
            )
        if ids.duplicated().any():
            raise DataError(
                f"ptbxl: ptbxl_database.csv ecg_id must be unique, got duplicates "
                f"{sorted(ids[ids.duplicated()].astype(int).unique().tolist())[:5]}"
            )
        database["ecg_id"] = ids.astype(int)
        self._database = database
        statements = self._read_csv("scp_statements.csv", _STATEMENT_COLUMNS, index_col=0)
        statements.index = statements.index.astype(str).str.strip()
        if statements.index.duplicated().any():
            raise DataError(
                f"ptbxl: scp_statements.csv must list each statement once, got duplicates "
                f"{sorted(set(statements.index[statements.index.duplicated()]))}"
            )
        # statement -> what it counts as in each label set (plain dicts: label_matrix over
        # 21,799 records would spend seconds in DataFrame lookups)
        diagnostic = statements[statements["diagnostic"] == 1.0]
        self._by_set: dict[str, dict[str, str]] = {
            "all": {c: c for c in statements.index},
            "diagnostic": {c: c for c in diagnostic.index},
            "form": {c: c for c in statements.index[statements["form"] == 1.0]},
            "rhythm": {c: c for c in statements.index[statements["rhythm"] == 1.0]},
            "superdiagnostic": _mapping(diagnostic["diagnostic_class"]),
            "subdiagnostic": _mapping(diagnostic["diagnostic_subclass"]),
        }
        self.label_sets = {
            k: tuple(sorted(set(self._by_set[k].values()))) for k in _LABEL_SET_ORDER
        }

    def _read_csv(self, name: str, columns: tuple[str, ...], index_col: int | None) -> pd.DataFrame:
        path = self.root / name
        try:
            table = pd.read_csv(path, index_col=index_col)
        except (ValueError, OSError) as e:  # pandas' ParserError is a ValueError
            raise DataError(f"ptbxl: {path} is not a readable CSV ({e})") from None
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise DataError(
                f"ptbxl: {path} must have the columns {list(columns)}; missing {missing}, "
                f"found {list(table.columns)}"
            )
        if table.empty:
            raise DataError(f"ptbxl: {path} must list at least one row, got none")
        return table

    # --- listing --------------------------------------------------------------------------

    def records(self) -> list[Record]:
        """Every row of ptbxl_database.csv, in ecg_id order (see the class docstring)."""
        self.listing_problems = []
        fs = float(self.sampling_rate)
        column = _FILENAME_COLUMN[self.sampling_rate]
        out = []
        for row in self._database.sort_values("ecg_id").itertuples(index=False):
            rid = str(int(row.ecg_id))
            codes, problem = self._parse_codes(row.scp_codes)
            patient = _as_int(row.patient_id)
            fold = _as_int(row.strat_fold)
            if problem is None and patient is None:
                problem = f"patient_id must be a number, got {row.patient_id!r}"
            if problem is None and (fold is None or not 1 <= fold <= 10):
                problem = f"strat_fold must be 1-10, got {row.strat_fold!r}"
            meta = {
                "age": _as_float(getattr(row, "age", None)),
                "sex": _as_int(getattr(row, "sex", None)),
                "scp_codes": codes or {},
                "filename": str(getattr(row, column)),
            }
            if problem is not None:
                meta["problem"] = problem
                self.listing_problems.append(BadRecord(rid, problem))
                codes = {}
            out.append(
                Record(
                    record_id=rid,
                    patient_id=str(patient) if patient is not None else rid,
                    labels=tuple(codes),
                    fs=fs,
                    n_samples=_RECORD_SECONDS * self.sampling_rate,
                    lead_names=STANDARD_LEADS,
                    fold=fold if fold is not None and 1 <= fold <= 10 else None,
                    meta=meta,
                )
            )
        return out

    def _parse_codes(self, text: object) -> tuple[dict[str, float] | None, str | None]:
        """scp_codes as {statement: likelihood}, or None and the reason it is malformed."""
        if not isinstance(text, str):
            return None, f"scp_codes is empty or not text, got {text!r}"
        try:
            codes = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None, f"scp_codes is not a dict literal: {text!r}"
        if not isinstance(codes, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in codes.items()
        ):
            return None, f"scp_codes must map statement names to likelihoods, got {text!r}"
        unknown = sorted(k for k in codes if k not in self._by_set["all"])
        if unknown:
            return None, f"scp_codes names statements not in scp_statements.csv: {unknown}"
        return {k: float(v) for k, v in codes.items()}, None

    def classes_of(self, record: Record, label_set: str) -> set[str]:
        """The classes of `label_set` among the record's statements (any likelihood).

        Raises:
            ConfigError: an unknown label set.
        """
        self.check_label_set(label_set)
        mapping = self._by_set[label_set]
        return {mapping[c] for c in record.labels if c in mapping}

    # --- reading --------------------------------------------------------------------------

    def read(self, record: Record) -> Signal:
        """The record's 12 leads in mV at `sampling_rate`, in the standard lead order.

        Raises:
            BadRecord: a listing problem, missing or truncated files, another sampling rate,
                another lead set, a header that is not 10 s long, NaN samples, flat leads.
        """
        if record.meta.get("problem"):
            raise BadRecord(record.record_id, record.meta["problem"])
        path = self.root / record.meta["filename"]
        sig, promised = read_wfdb(
            record.record_id,
            path,
            expect_fs=float(self.sampling_rate),
            leads=STANDARD_LEADS,
            canonical=_ptbxl_lead,
        )
        expected = _RECORD_SECONDS * self.sampling_rate
        if promised != expected:
            raise BadRecord(
                record.record_id,
                f"header promises {promised} samples; PTB-XL records are {_RECORD_SECONDS} s "
                f"({expected} samples at {self.sampling_rate} Hz)",
            )
        return check_signal(
            record.record_id,
            sig,
            expect_fs=float(self.sampling_rate),
            expect_leads=STANDARD_LEADS,
            expect_samples=expected,
        )


def _mapping(column: pd.Series) -> dict[str, str]:
    """statement -> its (sub)class, for the statements that have one."""
    return {code: str(v).strip() for code, v in column.items() if not pd.isna(v)}


def _as_int(value: object) -> int | None:
    """An integral number from the CSV (patient_id is 15709.0 there), or None."""
    f = _as_float(value)
    return int(f) if f is not None and f == int(f) else None


def _as_float(value: object) -> float | None:
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
