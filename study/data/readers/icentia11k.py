"""Readers of beat- and rhythm-annotated WFDB records: Icentia11k and CPSC 2021.

Both datasets store each record as a WFDB header (`.hea`), a signal file (`.dat`) and an
annotation file (`.atr`) holding one annotation per beat (its symbol at the R peak) and
rhythm annotations (symbol `+`) whose aux note names the rhythm:

- `(NAME` starts rhythm NAME at its sample; a rhythm still open ends there.
- `)` ends the open rhythm just after its sample (Icentia11k puts it on the zone's last
  beat, which still belongs to the zone).
- `(NAME)` is a zone of one beat.
- a rhythm still open at the end of the record runs to the record's end.
- a rhythm change may sit at the record's end (sample == length: CPSC 2021 ends an episode
  that runs to the end so); beats and anything later are errors.

Stretches that no zone covers carry no rhythm: the Icentia11k release writes no annotation
for the original noise / end / undefined rhythms. Reading never invents one.

Icentia11k's PhysioNet release (Tan et al., converted by `physionet/icentia11k_make_wfdb.py`
in github.com/shawntan/icentia-ecg) uses beat symbols Q (undefined), N, S (PAC), a
(aberrated) and V (PVC), and rhythm names N, AFIB and AFL. CPSC 2021 uses the same
conventions (`(AFIB` at an episode's onset, `(N` at its end) with beats N, A, a, V.

Both readers prepare frames (study.data.frames) with the frame label sets beat, rhythm,
heart_rate (Weimann & Conrad's pretext labels, study.data.pretext) and qrs (a per-sample
mask around each annotated beat). Their options, part of the cache key:

- frame_len: samples per frame at the prepared rate (default 2048, Weimann & Conrad's at
  250 Hz: prepare with preprocessing fs 250 to match them).
- frames_per_record: frames cut from each record, evenly spaced (default 8).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import wfdb

from study.data.annotations import Annotations, RhythmInterval
from study.data.frames import FRAME_LABEL_SETS, FRAME_LEN, FRAMES_PER_RECORD, check_frame_options
from study.data.readers._base import (
    READERS,
    BadRecord,
    DatasetReader,
    Record,
    Signal,
    check_signal,
)
from study.errors import ConfigError, DataError

__all__ = [
    "Annotations",
    "RhythmInterval",
    "parse_annotations",
    "Icentia11kReader",
    "Cpsc2021Reader",
    "BEAT_SYMBOLS",
]

# WFDB's beat annotation codes (wfdb.io.annotation.ann_label_table, the beat labels).
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
RHYTHM_SYMBOL = "+"
_OPEN = re.compile(r"\((\w+)")
_SINGLE = re.compile(r"\((\w+)\)")
# Physical units -> factor to millivolts.
_TO_MV = {"mV": 1.0, "mv": 1.0, "uV": 1e-3, "µV": 1e-3, "V": 1e3}


def parse_annotations(
    record_id: str,
    sample: np.ndarray,
    symbol: list[str] | np.ndarray,
    aux_note: list[str] | np.ndarray,
    fs: float,
    n_samples: int,
) -> Annotations:
    """Beat and rhythm annotations from a WFDB annotation's fields (rules: module docstring).

    Zones of zero length (two rhythm changes at one sample) are dropped.

    Raises:
        BadRecord: unsorted samples, an annotation outside the record, a symbol that is
            neither a beat nor `+`, a `+` whose aux note is not `(NAME`, `(NAME)` or `)`, or
            a `)` that closes no rhythm.
    """
    sample = np.asarray(sample, dtype=np.int64)
    if sample.size and np.any(np.diff(sample) < 0):
        raise BadRecord(record_id, "annotation samples are not sorted")
    if sample.size and (sample[0] < 0 or sample[-1] > n_samples):
        raise BadRecord(
            record_id,
            f"annotation at sample {int(sample[-1] if sample[-1] > n_samples else sample[0])}"
            f" lies outside the record's {n_samples} samples",
        )
    beats: list[int] = []
    rhythms: list[RhythmInterval] = []
    open_name: str | None = None
    open_start = 0

    def close(end: int) -> None:
        if open_name is not None and end > open_start:
            rhythms.append(RhythmInterval(open_start, end, open_name))

    for i, (s, sym, aux) in enumerate(zip(sample.tolist(), symbol, aux_note, strict=True)):
        if sym in BEAT_SYMBOLS:
            if s >= n_samples:
                raise BadRecord(
                    record_id, f"beat at sample {s} lies past the record's {n_samples} samples"
                )
            beats.append(i)
            continue
        if sym != RHYTHM_SYMBOL:
            raise BadRecord(
                record_id,
                f"annotation symbol {sym!r} at sample {s} is neither a beat "
                f"({''.join(sorted(BEAT_SYMBOLS))}) nor a rhythm change ({RHYTHM_SYMBOL!r})",
            )
        note = (aux or "").strip()
        if note == ")":
            if open_name is None:
                raise BadRecord(record_id, f"rhythm end ')' at sample {s} closes no rhythm")
            close(min(s + 1, n_samples))
            open_name = None
        elif m := _SINGLE.fullmatch(note):
            close(s)
            if s < n_samples:
                rhythms.append(RhythmInterval(s, s + 1, m.group(1)))
            open_name = None
        elif m := _OPEN.fullmatch(note):
            close(s)
            open_name, open_start = m.group(1), s
        else:
            raise BadRecord(
                record_id,
                f"rhythm annotation at sample {s} has aux note {note!r}; "
                "expected '(NAME', '(NAME)' or ')'",
            )
    close(n_samples)
    idx = np.asarray(beats, dtype=np.int64)
    return Annotations(
        samples=sample[idx],
        symbols=np.asarray(symbol, dtype=str)[idx] if idx.size else np.array([], dtype=str),
        rhythms=tuple(rhythms),
        fs=float(fs),
        n_samples=int(n_samples),
        record_id=record_id,
    )


# The frame label sets (beat, rhythm, heart_rate, qrs) both readers offer, and their kinds.
_FRAME_SETS = {name: s.classes for name, s in FRAME_LABEL_SETS.items()}
_FRAME_KINDS = {name: s.label_kind for name, s in FRAME_LABEL_SETS.items()}


class _AnnotatedWfdbReader(DatasetReader):
    """Shared reading of one WFDB record (`.hea` + `.dat` + `.atr`) per `Record`, and the
    frame options (module docstring).

    Raises:
        ConfigError: frame_len or frames_per_record is not an integer >= 1.
    """

    frame_label_sets = tuple(FRAME_LABEL_SETS)
    # beat symbol -> study.data.pretext.BEAT_CLASSES name; None: pretext's (Icentia11k's)
    beat_symbol_classes: Mapping[str, str] | None = None

    def __init__(
        self,
        root: str | Path,
        frame_len: int = FRAME_LEN,
        frames_per_record: int = FRAMES_PER_RECORD,
    ) -> None:
        check_frame_options(self.name, frame_len, frames_per_record)
        self.frame_len = frame_len
        self.frames_per_record = frames_per_record
        super().__init__(root)

    def _path(self, record: Record) -> Path:
        """The record's path without extension."""
        raise NotImplementedError

    def _header(self, record_id: str, path: Path) -> wfdb.Record:
        hea = path.with_suffix(".hea")
        if not hea.is_file():
            raise BadRecord(record_id, f"header file {hea} is missing")
        try:
            return wfdb.rdheader(str(path))
        except Exception as e:  # wfdb raises assorted errors on a malformed header
            raise BadRecord(record_id, f"unreadable header {hea}: {e}") from e

    def read(self, record: Record) -> Signal:
        """The record's signal in millivolts.

        Raises:
            BadRecord: a missing or unreadable file, a signal shorter than its header
                promises (truncated), units other than mV/uV/V, NaN, every lead flat, or a
                rate or lead list other than the listing promised.
        """
        rid = record.record_id
        path = self._path(record)
        header = self._header(rid, path)
        for name in dict.fromkeys(header.file_name or []):
            if not (path.parent / name).is_file():
                raise BadRecord(rid, f"signal file {path.parent / name} is missing")
        try:
            rec = wfdb.rdrecord(str(path), physical=True)
        except ValueError as e:
            raise BadRecord(
                rid, f"signal shorter than the header's {header.sig_len} samples (truncated?): {e}"
            ) from e
        except Exception as e:
            raise BadRecord(rid, f"unreadable signal: {e}") from e
        scale = []
        for lead, unit in zip(rec.sig_name, rec.units, strict=True):
            if unit not in _TO_MV:
                raise BadRecord(rid, f"lead {lead} is in {unit!r}; expected one of {list(_TO_MV)}")
            scale.append(_TO_MV[unit])
        data = (rec.p_signal.T * np.asarray(scale)[:, None]).astype(np.float32)
        sig = Signal(data=data, fs=float(rec.fs), lead_names=tuple(rec.sig_name))
        return check_signal(
            rid,
            sig,
            expect_fs=record.fs,
            expect_leads=record.lead_names or None,
            expect_samples=record.n_samples if record.n_samples is not None else header.sig_len,
        )

    def read_annotations(self, record: Record) -> Annotations:
        """The record's beats and rhythm zones, from its `.atr` file.

        Raises:
            BadRecord: the `.atr` file is missing or unreadable, its rate differs from the
                header's, or it breaks the annotation rules (see `parse_annotations`).
        """
        rid = record.record_id
        path = self._path(record)
        atr = path.with_suffix(".atr")
        if not atr.is_file():
            raise BadRecord(rid, f"annotation file {atr} is missing")
        header = self._header(rid, path)
        try:
            ann = wfdb.rdann(str(path), "atr")
        except Exception as e:  # wfdb raises assorted errors on a damaged annotation file
            raise BadRecord(rid, f"unreadable annotation file {atr}: {e}") from e
        if ann.fs is not None and abs(float(ann.fs) - float(header.fs)) > 1e-6:
            raise BadRecord(
                rid, f"annotations are at {ann.fs} Hz, the header's signal at {header.fs} Hz"
            )
        aux = ann.aux_note if ann.aux_note is not None else [""] * len(ann.sample)
        return parse_annotations(
            rid, ann.sample, ann.symbol, aux, float(header.fs), int(header.sig_len)
        )


@READERS.register(name="icentia11k")
class Icentia11kReader(_AnnotatedWfdbReader):
    """Icentia11k as released on PhysioNet: `pXX/pXXXXX/pXXXXX_sYY.{hea,dat,atr}`.

    One record per segment (about 70 min, 2**20 samples, single lead "ecg" at 250 Hz);
    the patient is the `pXXXXX` folder. There are no record-level labels: the beat and
    rhythm annotations feed the frame label sets (beat, rhythm, heart_rate, qrs; module
    docstring), which `study.data.prepare` cuts into frames.

    `records()` lists segments from the folder names without opening their headers (the
    release has 541,794 of them): each is listed at the documented 250 Hz and lead "ecg",
    and `read` checks its header against that.

    Raises:
        DataError: the root holds no `pXX` folders, a `pXX` folder holds a folder that is not
            a patient of that group, or the first patient folder holds no segment header.
    """

    name = "icentia11k"
    source = "https://physionet.org/content/icentia11k-continuous-ecg/1.0/"
    licence = "CC BY-NC-SA 4.0"
    label_sets = dict(_FRAME_SETS)
    split_by = "patient"
    split_basis = "the pXXXXX patient folder"
    label_kinds = _FRAME_KINDS
    fs = 250.0
    lead_names = ("ecg",)

    _GROUP = re.compile(r"p\d{2}")
    _PATIENT = re.compile(r"p\d{5}")
    _SEGMENT = re.compile(r"(p\d{5})_s(\d{2,})\.hea")

    def _groups(self) -> list[Path]:
        return sorted(
            d for d in self.root.iterdir() if d.is_dir() and self._GROUP.fullmatch(d.name)
        )

    def _check_layout(self) -> None:
        groups = self._groups()
        if not groups:
            found = sorted(p.name for p in self.root.iterdir())[:8]
            raise DataError(
                f"icentia11k: expected folders pXX/pXXXXX/ with pXXXXX_sYY.hea under "
                f"{self.root}, found {found or 'nothing'}"
            )
        first_patient: Path | None = None
        for g in groups:
            for d in sorted(p for p in g.iterdir() if p.is_dir()):
                if not (self._PATIENT.fullmatch(d.name) and d.name[:3] == g.name):
                    raise DataError(
                        f"icentia11k: folder {d} is not a patient folder of group {g.name} "
                        f"(expected {g.name}XXX)"
                    )
                first_patient = first_patient or d
        if first_patient is None:
            raise DataError(f"icentia11k: the pXX folders under {self.root} hold no patients")
        if not any(self._SEGMENT.fullmatch(f.name) for f in first_patient.iterdir()):
            raise DataError(
                f"icentia11k: patient folder {first_patient} holds no "
                f"{first_patient.name}_sYY.hea segment header"
            )

    def records(self) -> list[Record]:
        """Every segment with a header, by patient then segment number."""
        out: list[Record] = []
        for g in self._groups():
            for d in sorted(p for p in g.iterdir() if p.is_dir()):
                segs = []
                for f in d.iterdir():
                    m = self._SEGMENT.fullmatch(f.name)
                    if m and m.group(1) == d.name:
                        segs.append(int(m.group(2)))
                for s in sorted(segs):
                    out.append(
                        Record(
                            record_id=f"{d.name}_s{s:02d}",
                            patient_id=d.name,
                            labels=(),
                            fs=self.fs,
                            n_samples=None,
                            lead_names=self.lead_names,
                            meta={"segment": s},
                        )
                    )
        return out

    def _path(self, record: Record) -> Path:
        patient = record.patient_id
        return self.root / patient[:3] / patient / record.record_id

    def classes_of(self, record: Record, label_set: str) -> set[str]:
        raise ConfigError(self._no_labels())

    def label_matrix(self, records: list[Record], label_set: str | None = None) -> np.ndarray:
        raise ConfigError(self._no_labels())

    def _no_labels(self) -> str:
        return (
            "icentia11k has no record-level label sets: its labels are per frame, from "
            "read_annotations() through study.data.pretext.frame_labels (study.data.prepare "
            "cuts the frames)"
        )


@READERS.register(name="cpsc2021")
class Cpsc2021Reader(_AnnotatedWfdbReader):
    """CPSC 2021 (paroxysmal AF) as a flat folder of `data_<patient>_<n>.{hea,dat,atr}`.

    Two leads at 200 Hz; the patient is `<patient>`. The record-level label is the header's
    comment line (non / paroxysmal / persistent atrial fibrillation), the single-label set
    `af_type`; the frame label sets are those of the module docstring, with beat symbols N
    (normal), A (PAC), a (aberrated) and V (PVC). Headers are read when listing (the dataset
    has about 1,400 records).

    Raises:
        DataError: the root holds no `data_<patient>_<n>.hea`, or a header of another name.
    """

    name = "cpsc2021"
    source = "https://physionet.org/content/cpsc2021/1.0.0/"
    licence = "CC BY 4.0"
    label_sets = {"af_type": ("non-AF", "paroxysmal-AF", "persistent-AF"), **_FRAME_SETS}
    label_kinds = {"af_type": "single_label", **_FRAME_KINDS}
    split_by = "patient"
    split_basis = "<patient> of data_<patient>_<n>"
    beat_symbol_classes = {"N": "normal", "A": "pac", "a": "aberrated", "V": "pvc"}
    _NATIVE = {
        "non atrial fibrillation": "non-AF",
        "paroxysmal atrial fibrillation": "paroxysmal-AF",
        "persistent atrial fibrillation": "persistent-AF",
    }
    _NAME = re.compile(r"data_(\d+)_(\d+)\.hea")

    def _headers(self) -> list[tuple[int, int, Path]]:
        out = []
        for f in self.root.glob("*.hea"):
            m = self._NAME.fullmatch(f.name)
            if not m:
                raise DataError(f"cpsc2021: header {f} is not named data_<patient>_<n>.hea")
            out.append((int(m.group(1)), int(m.group(2)), f))
        return sorted(out)

    def _check_layout(self) -> None:
        if not self._headers():
            found = sorted(p.name for p in self.root.iterdir())[:8]
            raise DataError(
                f"cpsc2021: expected data_<patient>_<n>.hea files directly under {self.root}, "
                f"found {found or 'nothing'}"
            )

    def records(self) -> list[Record]:
        """Every record, by patient then record number, with its header's promises.

        Raises:
            DataError: a header that cannot be parsed (named).
        """
        out = []
        for patient, _, f in self._headers():
            try:
                h = wfdb.rdheader(str(f.with_suffix("")))
            except Exception as e:  # wfdb raises assorted errors on a malformed header
                raise DataError(f"cpsc2021: unreadable header {f}: {e}") from e
            comments = tuple(c.strip() for c in (h.comments or []) if c.strip())
            out.append(
                Record(
                    record_id=f.stem,
                    patient_id=str(patient),
                    labels=comments,
                    fs=float(h.fs),
                    n_samples=int(h.sig_len),
                    lead_names=tuple(h.sig_name or ()),
                )
            )
        return out

    def _path(self, record: Record) -> Path:
        return self.root / record.record_id

    def classes_of(self, record: Record, label_set: str) -> set[str]:
        """The `af_type` class of the header comment (none when the header has no comment).

        Raises:
            ConfigError: an unknown label set, or a frame label set (its labels are per
                frame).
            DataError: a comment that is not one of the three CPSC 2021 classes.
        """
        self.check_label_set(label_set)
        if label_set in self.frame_label_sets:
            raise ConfigError(
                f"cpsc2021: label set {label_set!r} labels frames, not records; "
                "study.data.prepare cuts the frames"
            )
        out = set()
        for label in record.labels:
            if label not in self._NATIVE:
                raise DataError(
                    f"cpsc2021: record {record.record_id} has label {label!r}; "
                    f"known: {list(self._NATIVE)}"
                )
            out.add(self._NATIVE[label])
        return out
