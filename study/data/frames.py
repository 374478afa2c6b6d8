"""Fixed-length frames cut from long annotated records, and per-sample QRS targets.

Weimann & Conrad pretrain on frames of Icentia11k segments; QRS detection trains on a mask
around each annotated beat. Both are cut here, at the prepared rate (after preprocessing's
resampling), from a record's signal and its annotations.

Frame placement (deterministic: the same frames on every machine and every run): a record of
n samples gives `count` frames of `frame_len` samples, frame k starting at

    floor((2k + 1) * (n - frame_len) / (2 * count)),   k = 0 .. count - 1

that is, the middles of `count` equal shares of the possible starts [0, n - frame_len]: evenly
spread over the record, never touching its first or last sample unless they must. Frames
overlap when count * frame_len > n. A record shorter than one frame gives none.

QRS targets: sample t of a frame is 1 when it lies within `qrs_half_width(fs)` samples of an
annotated beat (|t - b| <= h, both in samples at the prepared rate), so every QRS complex is a
run of 2h + 1 ones. The half-width is 50 ms: a normal QRS complex lasts 80-120 ms, so the run
covers the complex around its R peak without reaching the next beat (200 ms apart even at 300
bpm), and it lies inside the 75 ms matching tolerance of the CPSC 2019 score and of the
150 ms window of ANSI/AAMI EC57 (`study.training.task_metrics.qrs_metrics`), so a detector
placing its peak anywhere in the run counts as a true positive. Beats just outside a frame
whose run reaches into it mark those samples too (they are QRS samples of the frame); the
frame's beat list holds only the beats inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from study.data.pretext import BEAT_CLASSES, HR_CLASSES, RHYTHM_CLASSES
from study.errors import ConfigError, DataError

__all__ = [
    "FRAME_LEN",
    "FRAMES_PER_RECORD",
    "QRS_HALF_WIDTH_S",
    "FrameLabelSet",
    "FRAME_LABEL_SETS",
    "frame_starts",
    "qrs_half_width",
    "qrs_mask",
    "positions_in",
    "check_frame_options",
]

# Weimann & Conrad's frame: `--frame-size` defaults to 2048 in pretraining/trainer.py and in
# every generator of transplant/datasets/icentia11k.py, at Icentia11k's 250 Hz (8.2 s).
FRAME_LEN = 2048
# Ours: they draw frames at random on the fly (1000 per patient visit); a cache holds fixed
# ones. 8 per record is ~4.3M frames (~35 GB float32) for the whole of Icentia11k.
FRAMES_PER_RECORD = 8
QRS_HALF_WIDTH_S = 0.05  # why 50 ms: module docstring


@dataclass(frozen=True)
class FrameLabelSet:
    """A label set whose rows are frames cut from annotated records.

    Attributes:
        name: the label set's name (also the name of the pretraining task that trains on it).
        classes: its classes, in the order of Weimann & Conrad's heads.
        label_kind: "single_label" (one class per frame) or "per_sample" (QRS masks).
        pretext_key: the key of `study.data.pretext.frame_labels` holding each frame's class
            index; None for the per-sample qrs set (its target is the mask).
    """

    name: str
    classes: tuple[str, ...]
    label_kind: str
    pretext_key: str | None


#: The frame label sets, by name. beat / rhythm / heart_rate are single-label
#: (study.data.pretext's class orders); qrs is per-sample, with the one class "qrs" (every
#: frame has it: labels.npy stays (N, 1)).
FRAME_LABEL_SETS: dict[str, FrameLabelSet] = {
    s.name: s
    for s in (
        FrameLabelSet("beat", BEAT_CLASSES, "single_label", "beat"),
        FrameLabelSet("rhythm", RHYTHM_CLASSES, "single_label", "rhythm"),
        FrameLabelSet("heart_rate", HR_CLASSES, "single_label", "hr"),
        FrameLabelSet("qrs", ("qrs",), "per_sample", None),
    )
}


def check_frame_options(dataset: str, frame_len: object, frames_per_record: object) -> None:
    """Raise ConfigError unless both options are integers >= 1 (naming the option)."""
    for option, value in (("frame_len", frame_len), ("frames_per_record", frames_per_record)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{dataset}: option {option} must be an integer >= 1, got {value!r}")


def frame_starts(n_samples: int, frame_len: int, count: int) -> np.ndarray:
    """First sample of each of `count` frames of a record of `n_samples` (rule: module
    docstring), int64 (count,).

    Raises:
        DataError: the record is shorter than one frame, or count < 1.
    """
    if count < 1:
        raise DataError(f"frames per record must be >= 1, got {count}")
    if n_samples < frame_len:
        raise DataError(f"{n_samples} samples, shorter than one frame of {frame_len}")
    k = np.arange(count, dtype=np.int64)
    return (2 * k + 1) * (n_samples - frame_len) // (2 * count)


def qrs_half_width(fs: float) -> int:
    """Half-width of a QRS run in samples at `fs`: QRS_HALF_WIDTH_S rounded half up."""
    return int(np.floor(QRS_HALF_WIDTH_S * fs + 0.5))


def positions_in(positions: np.ndarray, start: float, length: int) -> np.ndarray:
    """Positions (float, samples) inside [start, start + length), rounded to the nearest
    sample relative to `start` and kept inside the window (int64)."""
    p = np.asarray(positions, dtype=np.float64)
    inside = p[(p >= start) & (p < start + length)] - start
    return np.minimum(np.floor(inside + 0.5), length - 1).astype(np.int64)


def qrs_mask(positions: np.ndarray, length: int, half_width: int) -> np.ndarray:
    """uint8 (length,): 1 within `half_width` samples of each position (positions relative to
    the window's first sample, float or int; those outside it still mark their run's part
    inside)."""
    mask = np.zeros(length, dtype=np.uint8)
    for b in np.floor(np.asarray(positions, dtype=np.float64) + 0.5).astype(np.int64).tolist():
        lo, hi = max(0, b - half_width), min(length, b + half_width + 1)
        if lo < hi:
            mask[lo:hi] = 1
    return mask
