"""The PTB Diagnostic ECG Database (PhysioNet ptbdb 1.0.0): 549 records of 290 subjects.

Layout of the root, as downloaded::

    RECORDS                    one record per line: patient001/s0010_re, patient001/s0014lre, ...
    patient001/s0010_re.hea    15 signals at 1000 Hz: i ii iii avr avl avf v1-v6 in the .dat,
    patient001/s0010_re.dat    vx vy vz (Frank leads) in the .xyz; the clinical summary is in
    patient001/s0010_re.xyz    the header's comment lines ("# Reason for admission: ...")

Only the 12 standard leads are read (the .xyz file is not needed). The diagnosis is the
header's "Reason for admission": "Myocardial infarction" (148 subjects), "Healthy control"
(52), other diseases, or "n/a"/absent for the records without a clinical summary.
"""

from __future__ import annotations

import re
from pathlib import Path

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
from study.data.readers.ptbxl import list_folder, read_wfdb
from study.errors import DataError

__all__ = ["PtbReader", "parse_comments"]

FS = 1000.0  # every PTB record is sampled at 1 kHz
_RECORD_LINE = re.compile(r"^(patient\d+)/([^/\s]+)$")
# Reasons for admission that map to the classes of "mi_vs_healthy" (compared in lower case).
_MI_VS_HEALTHY = {"myocardial infarction": "MI", "healthy control": "HC"}
_NO_REASON = {"", "n/a"}


def _ptb_lead(name: str) -> str:
    """PTB's lower-case lead names (i, avr, v1) to the standard spellings (I, aVR, V1)."""
    by_lower = {lead.lower(): lead for lead in STANDARD_LEADS}
    return by_lower.get(name.strip().lower(), name)


def parse_comments(comments: list[str]) -> dict[str, str]:
    """The "key: value" comment lines of a PTB header, keys in lower case.

    Lines without a value ("Diagnose:", "Therapy:") are section titles and are left out.
    """
    out: dict[str, str] = {}
    for line in comments:
        key, sep, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if sep and key and value and key not in out:
            out[key] = value
    return out


@READERS.register(name="ptb")
class PtbReader(DatasetReader):
    """The PTB Diagnostic ECG Database, 12 standard leads, myocardial infarction vs healthy.

    Records come in the order of the RECORDS file, with `record_id` the RECORDS line
    (patient001/s0010_re), `patient_id` its folder (patient001), `labels` the reason for
    admission as written (empty when the header has none or "n/a") and `meta` holding age,
    sex, reason and ECG date as written in the header.

    Label set "mi_vs_healthy" has the classes HC and MI; a record admitted for anything else
    (cardiomyopathy, bundle branch block, ...) or without a reason has no class of it, so the
    data layer drops it as unlabelled.

    A listed record whose header is missing or unreadable is still listed, with the reason in
    `meta["problem"]`; `read` raises BadRecord with it, and `listing_problems` holds one
    BadRecord per such record after `records()`.

    Args:
        root: the ptbdb folder as downloaded (the one holding RECORDS).

    Raises:
        DataError: no RECORDS file, or one whose lines are not patientNNN/<record>.
    """

    name = "ptb"
    source = "https://physionet.org/content/ptbdb/1.0.0/"
    licence = "ODC-By-1.0"
    label_sets = {"mi_vs_healthy": ("HC", "MI")}
    split_by = "patient"
    split_basis = "the patientNNN folder of each record"

    def __init__(self, root: str | Path) -> None:
        self.listing_problems: list[BadRecord] = []
        self._listing: tuple[list[Record], list[BadRecord]] | None = None
        super().__init__(root)

    def _check_layout(self) -> None:
        path = self.root / "RECORDS"
        if not path.is_file():
            raise DataError(
                f"ptb: {self.root} is not a PTB Diagnostic ECG Database folder: expected a "
                f"RECORDS file listing patientNNN/<record> and the patientNNN/ folders; "
                f"found {list_folder(self.root)}"
            )
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            raise DataError(f"ptb: {path} must list at least one record, got an empty file")
        bad = [line for line in lines if not _RECORD_LINE.match(line)]
        if bad:
            raise DataError(
                f"ptb: every line of {path} must be patientNNN/<record> (e.g. "
                f"patient001/s0010_re); got {len(bad)} that are not, first {bad[0]!r}"
            )
        self._listed = lines

    def records(self) -> list[Record]:
        """Every record RECORDS lists (one header read each, ~10 ms; the list is kept)."""
        if self._listing is None:
            self._listing = self._list()
        records, problems = self._listing
        self.listing_problems = list(problems)
        return list(records)

    def _list(self) -> tuple[list[Record], list[BadRecord]]:
        problems: list[BadRecord] = []
        out = []
        for line in self._listed:
            patient = _RECORD_LINE.match(line).group(1)
            try:
                header = wfdb.rdheader(str(self.root / line))
            except FileNotFoundError:
                problem = f"header file {line}.hea is missing"
            except Exception as e:  # wfdb raises bare Exceptions on malformed headers
                problem = f"unreadable header {line}.hea ({type(e).__name__}: {e})"
            else:
                problem = None
            if problem is not None:
                problems.append(BadRecord(line, problem))
                out.append(
                    Record(line, patient, (), FS, None, STANDARD_LEADS, meta={"problem": problem})
                )
                continue
            fields = parse_comments(header.comments or [])
            reason = fields.get("reason for admission", "")
            meta = {
                "age": _as_int(fields.get("age")),
                "sex": fields.get("sex"),
                "reason": reason or None,
                "ecg_date": fields.get("ecg date"),
            }
            labels = () if reason.lower() in _NO_REASON else (reason,)
            out.append(
                Record(
                    record_id=line,
                    patient_id=patient,
                    labels=labels,
                    fs=float(header.fs),
                    n_samples=int(header.sig_len),
                    lead_names=STANDARD_LEADS,
                    meta=meta,
                )
            )
        return out, problems

    def classes_of(self, record: Record, label_set: str) -> set[str]:
        """{"MI"} or {"HC"} by the reason for admission; empty for any other reason.

        Raises:
            ConfigError: an unknown label set.
        """
        self.check_label_set(label_set)
        return {_MI_VS_HEALTHY[r.lower()] for r in record.labels if r.lower() in _MI_VS_HEALTHY}

    def read(self, record: Record) -> Signal:
        """The 12 standard leads in mV at 1000 Hz, ordered as STANDARD_LEADS.

        Raises:
            BadRecord: a listing problem, a missing or truncated file, another sampling rate,
                a missing standard lead, NaN samples, every lead flat.
        """
        if record.meta.get("problem"):
            raise BadRecord(record.record_id, record.meta["problem"])
        sig, promised = read_wfdb(
            record.record_id,
            self.root / record.record_id,
            expect_fs=FS,
            leads=STANDARD_LEADS,
            canonical=_ptb_lead,
        )
        return check_signal(
            record.record_id,
            sig,
            expect_fs=FS,
            expect_leads=STANDARD_LEADS,
            expect_samples=promised,
        )


def _as_int(text: str | None) -> int | None:
    """The age as a number; None for "n/a" or a missing line."""
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
