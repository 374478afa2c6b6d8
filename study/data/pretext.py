"""Frame-level pretext labels from beat and rhythm annotations (Weimann & Conrad 2021).

Weimann & Conrad pretrain on Icentia11k with three classification tasks per frame: beat
type, rhythm and heart rate. The rules, class names and class orders below follow their code
(github.com/kweimann/ecg-transfer-learning, `transplant/datasets/icentia11k.py`:
`get_complete_beats`, `get_beat_label`, `get_rhythm_label`, `get_heart_rate_label`), so a
class index here is the index their heads predict:

- The frame's beats are its *complete* beats: beat i counts when its own annotation and the
  previous beat's both lie in the frame (their code treats an annotation as the end of a
  beat), so the first annotated beat of a frame never counts.
- Beat: the most frequent of pac / aberrated / pvc among those beats if any is present,
  else the more frequent of undefined / normal, else undefined. Ties go to the class listed
  first in that order (np.argmax).
- Rhythm: the longest of undefined / afib / aflut inside the frame if any covers part of it,
  else the longest of end / noise / normal, else undefined; ties likewise go to the first.
- Heart rate: from the mean RR interval of the complete beats, bpm < 60 brady, 60 <= bpm
  <= 100 normal, bpm > 100 tachy; fewer than 2 complete beats is noise.

Two differences follow from reading the PhysioNet WFDB release instead of their pickles:

- The release writes no annotation for the original noise, end and undefined rhythms, so
  every part of a frame that no rhythm zone covers counts as noise: "end" and "undefined"
  are never produced (kept in RHYTHM_CLASSES so the head matches theirs).
- Rhythm durations are overlaps of the annotated zones with the frame. Their code gives
  each inter-beat interval the rhythm of the beat that ends it; the two differ by at most
  one RR interval at a zone boundary.

Frames are half-open [start, start + frame_len) (their `end` is inclusive: a beat on the
sample just after the frame counted there, not here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from study.data.annotations import Annotations
from study.errors import DataError

__all__ = [
    "BEAT_CLASSES",
    "RHYTHM_CLASSES",
    "HR_CLASSES",
    "BEAT_SYMBOL_CLASSES",
    "RHYTHM_NAME_CLASSES",
    "beat_label",
    "rhythm_label",
    "heart_rate_label",
    "complete_beats",
    "rhythm_durations",
    "frame_labels",
]

# Class orders exactly as their ds_beat_names / ds_rhythm_names / ds_hr_names.
BEAT_CLASSES = ("undefined", "normal", "pac", "aberrated", "pvc")
RHYTHM_CLASSES = ("undefined", "end", "noise", "normal", "afib", "aflut")
HR_CLASSES = ("tachy", "brady", "normal", "noise")

# Icentia11k's WFDB beat symbols (shawntan/icentia-ecg physionet/icentia11k_make_wfdb.py):
# aberrated is 'a', WFDB's "aberrated atrial premature beat".
BEAT_SYMBOL_CLASSES: Mapping[str, str] = {
    "Q": "undefined",
    "N": "normal",
    "S": "pac",
    "a": "aberrated",
    "V": "pvc",
}
RHYTHM_NAME_CLASSES: Mapping[str, str] = {"N": "normal", "AFIB": "afib", "AFL": "aflut"}

_HI_BEATS = ("pac", "aberrated", "pvc")
_LO_BEATS = ("undefined", "normal")
_HI_RHYTHMS = ("undefined", "afib", "aflut")
_LO_RHYTHMS = ("end", "noise", "normal")
_UNCOVERED = "noise"  # what the WFDB release leaves unannotated

_BRADY_BELOW_BPM = 60.0  # bpm < 60: brady
_TACHY_ABOVE_BPM = 100.0  # bpm > 100: tachy


def _prioritised(amounts: Mapping[str, float], hi: tuple[str, ...], lo: tuple[str, ...]) -> str:
    # np.argmax keeps the first of equal maxima: ties go to the earlier class, as theirs.
    for group in (hi, lo):
        values = [amounts.get(c, 0) for c in group]
        best = int(np.argmax(values))
        if values[best] > 0:
            return group[best]
    return "undefined"


def beat_label(
    symbols: Sequence[str] | np.ndarray,
    symbol_classes: Mapping[str, str] = BEAT_SYMBOL_CLASSES,
) -> int:
    """The beat class (index into BEAT_CLASSES) of a frame's complete beats' symbols.

    Args:
        symbols: the beat symbols (empty for a frame without complete beats: undefined).
        symbol_classes: symbol -> class name in BEAT_CLASSES (default: Icentia11k's).

    Raises:
        DataError: a symbol the map does not know.
    """
    counts: dict[str, int] = {}
    for s in symbols:
        if s not in symbol_classes:
            raise DataError(
                f"beat symbol {s!r} has no beat class; known symbols: {dict(symbol_classes)}"
            )
        c = symbol_classes[s]
        counts[c] = counts.get(c, 0) + 1
    return BEAT_CLASSES.index(_prioritised(counts, _HI_BEATS, _LO_BEATS))


def rhythm_label(durations: Mapping[str, float]) -> int:
    """The rhythm class (index into RHYTHM_CLASSES) from each class's duration in the frame.

    Raises:
        DataError: a class name not in RHYTHM_CLASSES, or a negative duration.
    """
    for c, d in durations.items():
        if c not in RHYTHM_CLASSES:
            raise DataError(f"rhythm class {c!r} is unknown; known: {list(RHYTHM_CLASSES)}")
        if d < 0:
            raise DataError(f"rhythm duration of {c} must be >= 0, got {d}")
    return RHYTHM_CLASSES.index(_prioritised(durations, _HI_RHYTHMS, _LO_RHYTHMS))


def heart_rate_label(beat_positions: Sequence[float] | np.ndarray, fs: float) -> int:
    """The heart-rate class (index into HR_CLASSES) from a frame's complete beats.

    Args:
        beat_positions: sample positions of the complete beats, non-decreasing.
        fs: the rate the positions count in (Hz).

    Raises:
        DataError: fs <= 0, unsorted positions, or all positions equal.
    """
    if fs <= 0:
        raise DataError(f"fs must be > 0, got {fs}")
    pos = np.asarray(beat_positions, dtype=np.float64)
    if pos.size < 2:
        return HR_CLASSES.index("noise")
    rr = np.diff(pos)
    if np.any(rr < 0):
        raise DataError("beat positions must be non-decreasing")
    mean_rr_s = rr.mean() / fs
    if mean_rr_s == 0:
        raise DataError(f"{pos.size} beats all at sample {pos[0]}: no RR interval")
    bpm = 60.0 / mean_rr_s
    if bpm < _BRADY_BELOW_BPM:
        return HR_CLASSES.index("brady")
    if bpm <= _TACHY_ABOVE_BPM:
        return HR_CLASSES.index("normal")
    return HR_CLASSES.index("tachy")


def complete_beats(positions: np.ndarray, start: float, end: float) -> np.ndarray:
    """Indices of the complete beats of frame [start, end): i >= 1 with positions[i - 1] >=
    start and positions[i] < end (positions sorted)."""
    first = int(np.searchsorted(positions, start, side="left")) + 1
    stop = int(np.searchsorted(positions, end, side="left"))
    return np.arange(first, max(first, stop))


def rhythm_durations(
    annotations: Annotations,
    start: float,
    end: float,
    scale: float = 1.0,
    name_classes: Mapping[str, str] = RHYTHM_NAME_CLASSES,
) -> dict[str, float]:
    """How much of frame [start, end) each rhythm class covers; the uncovered rest is noise.

    Args:
        annotations: the record's annotations.
        start, end: the frame, in samples at `annotations.fs * scale`.
        scale: frame rate / annotation rate.
        name_classes: annotated rhythm name -> class in RHYTHM_CLASSES (default: N, AFIB,
            AFL).

    Raises:
        DataError: a rhythm name the map does not know.
    """
    out: dict[str, float] = {}
    covered = 0.0
    for r in annotations.rhythms:
        lo, hi = max(start, r.start * scale), min(end, r.end * scale)
        if hi <= lo:
            continue
        if r.name not in name_classes:
            raise DataError(
                f"{annotations.record_id or 'record'}: rhythm {r.name!r} has no rhythm class; "
                f"known: {dict(name_classes)}"
            )
        c = name_classes[r.name]
        out[c] = out.get(c, 0.0) + (hi - lo)
        covered += hi - lo
    rest = (end - start) - covered
    if rest > 0:
        out[_UNCOVERED] = out.get(_UNCOVERED, 0.0) + rest
    return out


def frame_labels(
    annotations: Annotations,
    frame_starts: Sequence[int] | np.ndarray,
    frame_len: int,
    fs: float,
    symbol_classes: Mapping[str, str] = BEAT_SYMBOL_CLASSES,
    name_classes: Mapping[str, str] = RHYTHM_NAME_CLASSES,
) -> dict[str, np.ndarray]:
    """The three pretext labels of each frame [start, start + frame_len).

    Args:
        annotations: the record's annotations (from a reader's `read_annotations`).
        frame_starts: first sample of each frame, in samples at `fs`.
        frame_len: frame length in samples at `fs`.
        fs: the rate the frames count in; annotation samples are rescaled from
            `annotations.fs`, so frames may be cut from a resampled signal.
        symbol_classes: beat symbol -> BEAT_CLASSES name (default: Icentia11k's).
        name_classes: rhythm name -> RHYTHM_CLASSES name (default: N, AFIB, AFL).

    Returns:
        {"beat", "rhythm", "hr"}: int64 (frames,) class indices into BEAT_CLASSES,
        RHYTHM_CLASSES and HR_CLASSES.

    Raises:
        DataError: frame_len < 1, fs <= 0, a frame outside the record, or a symbol or
            rhythm name the maps do not know.
    """
    if frame_len < 1:
        raise DataError(f"frame_len must be >= 1, got {frame_len}")
    if fs <= 0:
        raise DataError(f"fs must be > 0, got {fs}")
    starts = np.asarray(frame_starts, dtype=np.int64).reshape(-1)
    scale = fs / annotations.fs
    record_len = annotations.n_samples * scale
    if starts.size and (starts.min() < 0 or starts.max() + frame_len > record_len + 1e-9):
        bad = int(starts.min()) if starts.min() < 0 else int(starts.max())
        raise DataError(
            f"{annotations.record_id or 'record'}: frame [{bad}, {bad + frame_len}) lies "
            f"outside the record's {record_len:g} samples at {fs:g} Hz"
        )
    unknown = sorted(set(annotations.symbols.tolist()) - set(symbol_classes))
    if unknown:
        raise DataError(
            f"{annotations.record_id or 'record'}: beat symbols {unknown} have no beat class; "
            f"known symbols: {dict(symbol_classes)}"
        )
    positions = annotations.samples.astype(np.float64) * scale
    out = {k: np.empty(starts.size, dtype=np.int64) for k in ("beat", "rhythm", "hr")}
    for i, s in enumerate(starts.tolist()):
        e = s + frame_len
        idx = complete_beats(positions, s, e)
        out["beat"][i] = beat_label(annotations.symbols[idx], symbol_classes)
        out["rhythm"][i] = rhythm_label(rhythm_durations(annotations, s, e, scale, name_classes))
        out["hr"][i] = heart_rate_label(positions[idx], fs)
    return out
