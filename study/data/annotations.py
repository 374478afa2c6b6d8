"""One record's beat and rhythm annotations (a leaf module: the readers that parse them and
the pretext labels computed from them both import it, and it imports neither).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from study.errors import DataError

__all__ = ["RhythmInterval", "Annotations"]


@dataclass(frozen=True)
class RhythmInterval:
    """One rhythm zone: samples [start, end) of rhythm `name` (as annotated: N, AFIB, AFL)."""

    start: int
    end: int
    name: str


@dataclass(frozen=True)
class Annotations:
    """One record's beat and rhythm annotations, in samples at `fs`.

    Attributes:
        samples: int64 (beats,) sample of each beat annotation, non-decreasing.
        symbols: str (beats,) the beat symbols (N, S, V, Q, a, A, ...).
        rhythms: the rhythm zones, sorted and not overlapping.
        fs: the sampling rate the samples count in.
        n_samples: the record's length in samples.
        record_id: the record they belong to (for messages).
    """

    samples: np.ndarray
    symbols: np.ndarray
    rhythms: tuple[RhythmInterval, ...]
    fs: float
    n_samples: int
    record_id: str = ""

    def __post_init__(self) -> None:
        samples = np.asarray(self.samples, dtype=np.int64)
        symbols = np.asarray(self.symbols, dtype=str)
        object.__setattr__(self, "samples", samples)
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "rhythms", tuple(self.rhythms))
        who = f"annotations of {self.record_id or 'a record'}"
        if samples.ndim != 1 or symbols.shape != samples.shape:
            raise DataError(
                f"{who}: samples {samples.shape} and symbols {symbols.shape} must be equal 1-D"
            )
        if self.fs <= 0:
            raise DataError(f"{who}: fs must be > 0, got {self.fs}")
        if samples.size and (np.any(np.diff(samples) < 0) or samples[0] < 0):
            raise DataError(f"{who}: beat samples must be >= 0 and non-decreasing")
        if samples.size and samples[-1] >= self.n_samples:
            raise DataError(
                f"{who}: beat at sample {samples[-1]} lies past the record's "
                f"{self.n_samples} samples"
            )
        prev_end = 0
        for r in self.rhythms:
            if not (prev_end <= r.start < r.end <= self.n_samples):
                raise DataError(
                    f"{who}: rhythm zones must be sorted, non-empty, non-overlapping and inside "
                    f"[0, {self.n_samples}); got {r} after a zone ending at {prev_end}"
                )
            prev_end = r.end
