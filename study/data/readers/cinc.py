"""Readers of the PhysioNet/CinC Challenge 2020/2021 layout: WFDB header + MATLAB v4 .mat.

Every record is a pair `<id>.hea` / `<id>.mat`, anywhere below the root (the challenge ships
them in g1/, g2/, ... folders; PhysioNet's ecg-arrhythmia in WFDBRecords/01/010/). The .mat
holds one int16 matrix `val` (leads x samples); the header names it with a byte offset of 24
(the MATLAB v4 matrix header), gives gain and units per lead, and carries the labels in
comment lines::

    # Age: 78
    # Sex: Male
    # Dx: 164889003,59118001

The generic `CincReader` reads every record below the root; the registered subclasses keep
one source's records by their id prefix and offer its label sets:

- `cpsc2018` (A0001...): 'cpsc9', 'snomed'
- `georgia` (E00001...): 'georgia10', 'snomed'
- `chapman` (JS00001..., CinC 2021 and ecg-arrhythmia): 'rhythm', 'snomed'

Each record is its own patient (none of these sources identifies patients across records:
the headers carry age, sex and Dx, no patient field), so every registered subclass declares
`split_by = "record"`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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
from study.data.snomed import HARMONISED, LABEL_SETS, map_codes, parse_codes
from study.errors import DataError

__all__ = [
    "CincReader",
    "Cpsc2018Reader",
    "GeorgiaReader",
    "ChapmanReader",
    "LabelReport",
    "standard_lead_name",
]

_LEADS_BY_LOWER = {lead.lower(): lead for lead in STANDARD_LEADS}
# Physical units the headers use, and the factor that turns them into millivolts.
_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}
_MAT_HEADER_BYTES = 20  # MATLAB v4: type, rows, columns, imaginary flag, name length (int32)
_MAT_INT16 = 30  # MATLAB v4 type code: little-endian, full matrix, int16


def standard_lead_name(name: str) -> str:
    """The `STANDARD_LEADS` spelling of a lead name ("AVR" -> "aVR"); unknown names as given."""
    return _LEADS_BY_LOWER.get(name.strip().lower(), name.strip())


@dataclass(frozen=True)
class LabelReport:
    """What a label set leaves out of a list of records, for the caller to count and show."""

    label_set: str
    n_records: int
    unlabelled: tuple[str, ...]  # records with no positive class in the label set
    unmapped: Counter = field(default_factory=Counter)  # code -> records it is dropped from
    malformed: Counter = field(default_factory=Counter)  # Dx entry -> times seen
    duplicates: Counter = field(default_factory=Counter)  # code -> repeats within a record


class CincReader(DatasetReader):
    """Every CinC 2020/2021 record below `root` (subclasses keep one source's records).

    Args:
        root: a folder with `<id>.hea` + `<id>.mat` pairs at any depth.

    Raises:
        DataError: no header of this reader's records with a .mat beside it, or one record
            id twice.
    """

    name = "cinc"
    source = "https://physionet.org/content/challenge-2021/"
    licence = "CC BY 4.0"
    version = "1"
    label_sets = {"snomed": HARMONISED}
    record_pattern = re.compile(r"[A-Z]+\d+")  # record ids this reader lists
    expected_fs: float | None = 500.0  # every CinC 2021 source but St Petersburg is 500 Hz

    def _check_layout(self) -> None:
        headers = sorted(self.root.rglob("*.hea"))
        self._headers: dict[str, Path] = {}
        for path in headers:
            if not self.record_pattern.fullmatch(path.stem):
                continue
            if path.stem in self._headers:
                raise DataError(
                    f"{self.name}: record ids must be unique below {self.root}, found "
                    f"{self._headers[path.stem]} and {path}"
                )
            self._headers[path.stem] = path
        expected = (
            f"WFDB headers {self.record_pattern.pattern}.hea with a MATLAB v4 .mat of the "
            f"same name below {self.root}"
        )
        if not self._headers:
            found = sorted(p.name for p in self.root.rglob("*") if p.is_file())
            shown = ", ".join(found[:5]) + (f", ... ({len(found)} files)" if len(found) > 5 else "")
            raise DataError(f"{self.name}: expected {expected}, found {shown or 'no files'}")
        if not any(p.with_suffix(".mat").is_file() for p in self._headers.values()):
            raise DataError(
                f"{self.name}: expected {expected}, found {len(self._headers)} headers and no "
                f".mat beside any of them"
            )

    def records(self) -> list[Record]:
        """Every record below the root, by record id.

        A record whose header cannot be parsed or has no '# Dx:' line is still listed, with
        no labels and the reason in `meta["header_error"]`; `read` raises BadRecord for it.
        So it is skipped or fails like any bad record, and never becomes an all-negative
        row by accident (its labels are unknown, not absent).
        """
        return [self._record(rid, path) for rid, path in sorted(self._headers.items())]

    def _record(self, rid: str, path: Path) -> Record:
        try:
            header = self._header(rid, path)
        except BadRecord as exc:
            return Record(rid, rid, (), float("nan"), meta={"header_error": exc.reason})
        comments = _comments(header.comments)
        leads = tuple(standard_lead_name(n) for n in header.sig_name)
        if "dx" not in comments:
            reason = f"header {path.name} has no '# Dx:' line"
            return Record(
                rid, rid, (), header.fs, header.sig_len, leads, meta={"header_error": reason}
            )
        dx = parse_codes(comments["dx"])
        return Record(
            record_id=rid,
            patient_id=rid,
            labels=dx.codes,
            fs=header.fs,
            n_samples=header.sig_len,
            lead_names=leads,
            meta={
                "age": _age(comments.get("age")),
                "sex": comments.get("sex") or None,
                "dx_malformed": dx.malformed,
                "dx_duplicates": dx.duplicates,
            },
        )

    def read(self, record: Record) -> Signal:
        """The record's signal in mV, leads in the header's order.

        Raises:
            BadRecord: the header cannot be parsed, has no '# Dx:' line, or breaks this
                dataset's promise (sampling rate, the 12
                standard leads, units, signal file), the .mat is missing, truncated or not
                the matrix the header describes, or the signal is NaN or flat.
        """
        rid = record.record_id
        if record.meta.get("header_error"):
            raise BadRecord(rid, record.meta["header_error"])
        path = self._headers.get(rid)
        if path is None:
            raise BadRecord(rid, f"no header {rid}.hea below {self.root}")
        header = self._header(rid, path)
        leads, to_mv = self._check_header(rid, header)
        mat = path.with_suffix(".mat")
        if not mat.is_file():
            raise BadRecord(rid, f"signal file {mat.name} is missing")
        _check_mat(rid, mat, header)
        try:
            rec = wfdb.rdrecord(str(path.with_suffix("")))
        except Exception as exc:  # wfdb raises bare ValueErrors and OSErrors alike
            raise BadRecord(rid, f"wfdb cannot read {mat.name}: {exc}") from exc
        data = (rec.p_signal.T * to_mv[:, None]).astype(np.float32)
        # What wfdb read, checked against what the header parse promised.
        read_leads = tuple(standard_lead_name(n) for n in rec.sig_name or [])
        signal = Signal(data=data, fs=float(rec.fs), lead_names=read_leads)
        return check_signal(
            rid,
            signal,
            expect_fs=float(header.fs),
            expect_leads=leads,
            expect_samples=header.sig_len,
        )

    def classes_of(self, record: Record, label_set: str) -> set[str]:
        """The classes of `label_set` among the record's codes (rule: `snomed.map_codes`)."""
        return map_codes(record.labels, self._classes(label_set))[0]

    def label_report(self, records: list[Record], label_set: str | None = None) -> LabelReport:
        """Count what `label_set` (default: the first) drops: unmapped, malformed, duplicate
        codes, and the records left with no positive class."""
        label_set = label_set or next(iter(self.label_sets))
        classes = self._classes(label_set)
        unlabelled: list[str] = []
        unmapped: Counter = Counter()
        malformed: Counter = Counter()
        duplicates: Counter = Counter()
        for rec in records:
            positive, dropped = map_codes(rec.labels, classes)
            if not positive:
                unlabelled.append(rec.record_id)
            unmapped.update(dropped)
            malformed.update(rec.meta.get("dx_malformed", ()))
            duplicates.update(rec.meta.get("dx_duplicates", ()))
        return LabelReport(
            label_set, len(records), tuple(unlabelled), unmapped, malformed, duplicates
        )

    def _classes(self, label_set: str):
        self.check_label_set(label_set)
        return LABEL_SETS[label_set]

    def _header(self, rid: str, path: Path) -> _Header:
        try:
            return _parse_header(path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise BadRecord(rid, f"header {path.name} cannot be parsed: {exc}") from exc

    def _check_header(self, rid: str, header: _Header) -> tuple[tuple[str, ...], np.ndarray]:
        """The header's promises against this dataset's: returns leads and mV factors."""
        if self.expected_fs is not None and abs(float(header.fs) - self.expected_fs) > 1e-6:
            raise BadRecord(
                rid,
                f"header sampling rate {header.fs:g} Hz; {self.name} records "
                f"are {self.expected_fs:g} Hz",
            )
        leads = tuple(standard_lead_name(n) for n in header.sig_name)
        if len(leads) != len(STANDARD_LEADS) or set(leads) != set(STANDARD_LEADS):
            raise BadRecord(
                rid,
                f"header leads {list(leads)} are not the 12 standard leads {list(STANDARD_LEADS)}",
            )
        if header.sig_len is None:
            raise BadRecord(rid, "header gives no signal length")
        files = set(header.file_name)
        if files != {f"{rid}.mat"}:
            raise BadRecord(rid, f"header signal files {sorted(files)}, expected {rid}.mat")
        if set(header.fmt) != {"16"}:
            raise BadRecord(rid, f"header formats {sorted(set(header.fmt))}, expected 16 (int16)")
        units = [str(u).strip().lower() for u in header.units]
        bad = sorted({u for u in units if u not in _TO_MV})
        if bad or len(units) != len(leads):
            raise BadRecord(rid, f"header units {bad or units} are not mV, uV or V")
        return leads, np.array([_TO_MV[u] for u in units])


@dataclass(frozen=True)
class _Header:
    """The fields of a single-segment WFDB header this reader uses (wfdb's names)."""

    record_name: str
    n_sig: int
    fs: float
    sig_len: int | None
    file_name: tuple[str, ...]
    fmt: tuple[str, ...]
    byte_offset: tuple[int | None, ...]
    units: tuple[str, ...]
    sig_name: tuple[str, ...]
    comments: tuple[str, ...]


# Signal-line format field: format[xsamples-per-frame][:skew][+byte offset]
_FMT = re.compile(r"(\d+)(?:x\d+)?(?::\d+)?(?:\+(\d+))?")
# Signal-line gain field: gain[(baseline)][/units]
_GAIN = re.compile(r"[-+0-9.eE]+(?:\(-?\d+\))?(?:/(\S+))?")


def _parse_header(path: Path) -> _Header:
    """Parse a WFDB header per the WFDB header spec.

    wfdb.rdheader does the same but takes ~12 ms a record (pandas lookups per signal line),
    about 18 minutes for the 88,000 CinC 2021 headers; this takes well under a millisecond.
    The signal itself is still read by wfdb.rdrecord, and `read` checks the two agree.

    Raises:
        ValueError: a line that breaks the spec (the message says which).
    """
    text = path.read_text(encoding="utf-8")
    comments = tuple(
        line.strip()[1:].strip() for line in text.splitlines() if line.strip().startswith("#")
    )
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    if not lines:
        raise ValueError("no record line")
    record = lines[0].split()
    if len(record) < 3:
        raise ValueError(f"record line {lines[0]!r} gives no sampling rate")
    if "/" in record[0]:
        raise ValueError(f"record line {lines[0]!r} is a multi-segment record")
    n_sig = int(record[1])
    fs_text = re.match(r"[0-9.eE+-]+", record[2])
    if fs_text is None:
        raise ValueError(f"record line {lines[0]!r}: sampling rate {record[2]!r}")
    sig_len = int(record[3]) if len(record) > 3 else None
    if len(lines) - 1 != n_sig:
        raise ValueError(f"record line promises {n_sig} signals, found {len(lines) - 1} lines")
    file_name, fmt, offset, units, names = [], [], [], [], []
    for line in lines[1:]:
        fields = line.split()
        fmt_match = _FMT.fullmatch(fields[1]) if len(fields) > 1 else None
        if fmt_match is None:
            raise ValueError(f"signal line {line!r}: no valid format field")
        gain_match = _GAIN.fullmatch(fields[2]) if len(fields) > 2 else None
        if len(fields) > 2 and gain_match is None:
            raise ValueError(f"signal line {line!r}: gain field {fields[2]!r}")
        file_name.append(fields[0])
        fmt.append(fmt_match.group(1))
        offset.append(int(fmt_match.group(2)) if fmt_match.group(2) else None)
        # The spec's default unit is mV when the gain field names none.
        units.append((gain_match.group(1) or "mV") if gain_match else "mV")
        names.append(" ".join(fields[8:]))
    return _Header(
        record_name=record[0],
        n_sig=n_sig,
        fs=float(fs_text.group(0)),
        sig_len=sig_len,
        file_name=tuple(file_name),
        fmt=tuple(fmt),
        byte_offset=tuple(offset),
        units=tuple(units),
        sig_name=tuple(names),
        comments=comments,
    )


def _check_mat(rid: str, mat: Path, header: _Header) -> None:
    """The .mat must be the int16 matrix, of the size and at the offset, the header says."""
    size = mat.stat().st_size
    with mat.open("rb") as f:
        head = f.read(_MAT_HEADER_BYTES)
    if len(head) < _MAT_HEADER_BYTES:
        raise BadRecord(
            rid, f"{mat.name} is truncated: {size} bytes, shorter than a MATLAB v4 matrix header"
        )
    mtype, rows, cols, imag, namelen = (int(v) for v in np.frombuffer(head, "<i4"))
    if mtype != _MAT_INT16 or imag != 0:
        raise BadRecord(
            rid, f"{mat.name} is not a MATLAB v4 int16 matrix (type {mtype}, imaginary flag {imag})"
        )
    if rows != header.n_sig:
        raise BadRecord(rid, f"{mat.name} holds {rows} leads, header promises {header.n_sig}")
    if cols != header.sig_len:
        raise BadRecord(
            rid, f"{mat.name} holds {cols} samples, header promises {header.sig_len} (truncated?)"
        )
    offset = _MAT_HEADER_BYTES + namelen
    offsets = set(header.byte_offset)
    if offsets != {offset}:
        raise BadRecord(
            rid,
            f"header byte offsets {sorted(offsets, key=str)}, the matrix in "
            f"{mat.name} starts at byte {offset}",
        )
    needed = offset + 2 * rows * cols
    if size < needed:
        raise BadRecord(
            rid,
            f"{mat.name} is truncated: {size} bytes, {needed} needed for "
            f"{rows} x {cols} int16 samples",
        )


def _comments(lines: list[str]) -> dict[str, str]:
    """Header comments "Key: value" as {key lowercased: value}; other comments are ignored."""
    out: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.lstrip("#").partition(":")
        if sep:
            out.setdefault(key.strip().lower(), value.strip())
    return out


def _age(text: str | None) -> int | float | None:
    """Age in years; None where the source says NaN, Unknown or nothing."""
    try:
        age = float(text) if text is not None else float("nan")
    except ValueError:
        return None
    if not np.isfinite(age):
        return None
    return int(age) if age.is_integer() else age


@READERS.register(name="cpsc2018")
class Cpsc2018Reader(CincReader):
    """CPSC 2018 as repacked for CinC 2020/2021 (A0001-A6877, 500 Hz, 6-60 s)."""

    name = "cpsc2018"
    source = "https://physionet.org/content/challenge-2020/ (training/cpsc_2018)"
    label_sets = {"cpsc9": tuple(LABEL_SETS["cpsc9"]), "snomed": HARMONISED}
    record_pattern = re.compile(r"A\d+")
    split_by = "record"
    split_basis = "CPSC 2018 publishes no patient ids"


@READERS.register(name="georgia")
class GeorgiaReader(CincReader):
    """The Georgia 12-lead ECG Challenge database (E00001-E10344, 500 Hz, 10 s)."""

    name = "georgia"
    source = "https://physionet.org/content/challenge-2021/ (training/georgia)"
    label_sets = {"georgia10": tuple(LABEL_SETS["georgia10"]), "snomed": HARMONISED}
    record_pattern = re.compile(r"E\d+")
    split_by = "record"
    split_basis = "Georgia publishes no patient ids"


@READERS.register(name="chapman")
class ChapmanReader(CincReader):
    """Chapman-Shaoxing and Ningbo (JS00001..., 500 Hz, 10 s): the CinC 2021 repack and
    PhysioNet's ecg-arrhythmia release, which share the header layout."""

    name = "chapman"
    source = (
        "https://physionet.org/content/ecg-arrhythmia/ and "
        "https://physionet.org/content/challenge-2021/ (training/chapman_shaoxing, ningbo)"
    )
    label_sets = {"rhythm": tuple(LABEL_SETS["rhythm"]), "snomed": HARMONISED}
    record_pattern = re.compile(r"JS\d+")
    split_by = "record"
    split_basis = "Chapman-Shaoxing and Ningbo publish no patient ids"
