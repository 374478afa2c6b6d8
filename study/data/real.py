"""Read a real dataset through its reader, one record at a time, into the rows of the
prepared cache: labels, preprocessing, frames, per-sample targets, bad records."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from study.data.config import DatasetConfig
from study.data.frames import (
    FRAME_LABEL_SETS,
    QRS_HALF_WIDTH_S,
    frame_starts,
    positions_in,
    qrs_half_width,
    qrs_mask,
)
from study.data.preprocess import Preprocessing, resample_factors
from study.data.pretext import BEAT_SYMBOL_CLASSES, frame_labels
from study.data.readers import DatasetReader
from study.data.records import BadRecord, Record, Rows, RowSource, Signal
from study.errors import ConfigError, DataError

__all__ = ["read_real"]

_FRAME_OPTIONS = ("frame_len", "frames_per_record")
_PLACEMENT = (
    "evenly spaced: frame k of count starts at floor((2k + 1) * (n - frame_len) / (2 * count))"
    " of a record of n samples at the prepared rate (study.data.frames)"
)


def read_real(
    reader_cls: type[DatasetReader], config: DatasetConfig, progress: bool = True
) -> RowSource:
    """Every usable record of a real dataset as rows of the prepared cache, read lazily
    (the reader checks the folder's layout at once; `study.data.sources.ReaderSource`
    checks `config`'s source, options and label set before).

    A record gives one row, or for a frame label set (icentia11k, cpsc2021: beat, rhythm,
    heart_rate, qrs) `frames_per_record` frames cut after preprocessing (study.data.frames).
    Records without any class of a record-level label set are dropped when
    `drop_unlabelled` (counted); bad records are skipped and listed with their reason, or
    raise, per `on_bad_record`.

    Raises:
        ConfigError: an unknown label set, frame options for a record-level label set, a
            preprocessing.length other than frame_len, or a crop the per-sample targets
            cannot follow ("random-fixed").
        DataError: the folder's layout is wrong; while reading: a bad record under
            on_bad_record=fail, or no usable record at all.
    """
    name = reader_cls.name
    reader = reader_cls(config.source, **config.options)
    if not reader.label_sets:
        raise ConfigError(f"{name} has no label sets: it cannot be prepared")
    label_set = config.label_set or next(iter(reader.label_sets))
    kind = reader.label_kind(label_set)  # an unknown label set lists the known ones
    framed = label_set in reader.frame_label_sets
    given = [o for o in _FRAME_OPTIONS if o in config.options]
    if given and not framed:
        raise ConfigError(
            f"{name}: options {given} cut frames, which only the frame label sets "
            f"({', '.join(reader.frame_label_sets) or 'none here'}) use, not {label_set!r}"
        )
    pre = config.preprocessing
    if (framed or kind == "per_sample") and pre.scalogram is not None:
        raise ConfigError(
            f"{name}: the {label_set} label set needs (leads, samples) signals: frames and "
            "per-sample targets are cut along the samples; drop preprocessing.scalogram"
        )
    if framed:
        if pre.length is not None and pre.length != reader.frame_len:
            raise ConfigError(
                f"{name}: {label_set} frames are {reader.frame_len} samples long (option "
                f"frame_len); preprocessing.length {pre.length} disagrees: leave it unset or "
                f"set frame_len={pre.length}"
            )
        pre = pre.model_copy(update={"length": None})  # the frames set the length
    elif kind == "per_sample" and pre.length is not None and pre.crop not in ("start", "center"):
        raise ConfigError(
            f"{name}: per-sample targets follow a crop 'start' or 'center' only; "
            f"preprocessing.crop is {pre.crop!r}"
        )
    records = reader.records()
    reading = _Reading(
        name=name,
        reader=reader,
        config=config,
        pre=pre,
        label_set=label_set,
        kind=kind,
        classes=tuple(reader.label_sets[label_set]),
        framed=framed,
        records=records,
        labels=None if framed or kind == "per_sample" else reader.label_matrix(records, label_set),
    )
    capacity = len(records) * (reader.frames_per_record if framed else 1)
    return RowSource(reading.classes, kind, capacity, reading.rows(progress), reading.report)


@dataclass
class _Reading:
    """One preparation's walk through a reader's records (state for `read_real`)."""

    name: str
    reader: DatasetReader
    config: DatasetConfig
    pre: Preprocessing  # the length already dropped for frames
    label_set: str
    kind: str
    classes: tuple[str, ...]
    framed: bool
    records: list[Record]
    labels: np.ndarray | None  # record-level label sets only
    report: dict = field(init=False)

    def __post_init__(self) -> None:
        self.report = {
            "source": str(self.config.source),
            "label_set": self.label_set,
            "label_kind": self.kind,
            "records_listed": len(self.records),
            "records_kept": 0,
            "unlabelled_dropped": 0,
            "bad_records": [],
            "bad_reasons": {},
            "caveats": list(self.reader.caveats),
        }
        if self.framed:
            self.report["frames"] = {
                "frame_len": self.reader.frame_len,
                "frames_per_record": self.reader.frames_per_record,
                "placement": _PLACEMENT,
            }
        if self.kind == "per_sample":
            self.report["qrs_half_width_s"] = QRS_HALF_WIDTH_S

    def rows(self, progress: bool) -> Iterator[Rows]:
        """The rows of each usable record in turn; the report is complete at the end.

        Raises:
            BadRecord / DataError: a bad record under on_bad_record=fail; no usable record.
        """
        pre = self.pre
        fail = self.config.on_bad_record == "fail"
        bad: list[dict] = self.report["bad_records"]
        unlabelled = 0
        for i, rec in enumerate(
            tqdm(
                self.records,
                desc=f"reading {self.name}",
                unit="rec",
                file=sys.stderr,
                disable=not progress,
                mininterval=2,
            )
        ):
            rid = rec.record_id
            problem = rec.meta.get("problem") or rec.meta.get("header_error")
            if problem:  # found while listing (malformed labels, missing file): a bad record
                if fail:
                    raise BadRecord(rid, str(problem))
                bad.append({"record_id": rid, "reason": str(problem)})
                continue
            if self.labels is not None and self.config.drop_unlabelled and not self.labels[i].any():
                unlabelled += 1
                continue
            try:
                out = self._record_rows(i, rec, pre)
            except BadRecord as e:
                if fail:
                    raise
                bad.append({"record_id": rid, "reason": e.reason})
                continue
            except DataError as e:  # a rule the record cannot meet (missing lead, unknown beat)
                if fail:
                    raise
                bad.append({"record_id": rid, "reason": str(e)})
                continue
            self.report["records_kept"] += 1
            yield out
            del out  # not held while the next record is read
        self.report["unlabelled_dropped"] = unlabelled
        self.report["bad_reasons"] = dict(Counter(b["reason"].split(" (")[0] for b in bad))
        if self.report["records_kept"] == 0:
            raise DataError(
                f"{self.name}: no usable record in {self.config.source} "
                f"({len(bad)} bad, {unlabelled} without a {self.label_set} label)"
            )

    def _record_rows(self, i: int, rec: Record, pre: Preprocessing) -> Rows:
        rid = rec.record_id
        if self.labels is not None and self.kind == "single_label" and self.labels[i].sum() != 1:
            found = [c for c, on in zip(self.classes, self.labels[i], strict=True) if on]
            raise BadRecord(
                rid, f"{len(found)} classes {found} of the single-label set {self.label_set}"
            )
        sig = self.reader.read(rec)
        x = pre.apply(sig, record_id=rid)
        fs = float(pre.fs or sig.fs)
        leads = tuple(pre.leads or sig.lead_names)
        if self.framed:
            return self._frame_rows(rec, x, fs, leads)
        if self.kind == "per_sample":
            return self._beat_rows(rec, sig, x, fs, leads)
        return Rows(rid, rec.patient_id, x[None], self.labels[i : i + 1], fs, leads, rec.fold)

    def _frame_rows(self, rec: Record, x: np.ndarray, fs: float, leads: tuple) -> Rows:
        """The frames of one annotated record, labelled by the frame label set."""
        rid = rec.record_id
        _check_signal_rank(rid, x, "frames")
        ann = self.reader.read_annotations(rec)
        frame_len, count = self.reader.frame_len, self.reader.frames_per_record
        scale = fs / ann.fs
        # resampling may add a sample past the annotated record's end: frames stay inside it
        n = min(x.shape[-1], int(np.floor(ann.n_samples * scale + 1e-9)))
        if n < frame_len:
            raise BadRecord(
                rid, f"{n} samples at {fs:g} Hz, shorter than one frame of {frame_len} (frame_len)"
            )
        starts = frame_starts(n, frame_len, count)
        xs = np.stack([x[:, s : s + frame_len] for s in starts.tolist()])
        if self.label_set == "qrs":
            pos = ann.samples.astype(np.float64) * scale
            h = qrs_half_width(fs)
            near = [(pos > s - h - 1) & (pos < s + frame_len + h + 1) for s in starts.tolist()]
            return Rows(
                rid,
                rec.patient_id,
                xs,
                np.ones((count, 1), np.uint8),
                fs,
                leads,
                rec.fold,
                targets=np.stack(
                    [qrs_mask(pos[m] - s, frame_len, h) for s, m in zip(starts, near, strict=True)]
                ),
                beats=[positions_in(pos, s, frame_len) for s in starts.tolist()],
                frame_start=starts,
            )
        symbols = self.reader.beat_symbol_classes or BEAT_SYMBOL_CLASSES
        labels = frame_labels(ann, starts, frame_len, fs, symbols)
        index = labels[FRAME_LABEL_SETS[self.label_set].pretext_key]
        one_hot = np.eye(len(self.classes), dtype=np.uint8)[index]
        return Rows(rid, rec.patient_id, xs, one_hot, fs, leads, rec.fold, frame_start=starts)

    def _beat_rows(self, rec: Record, sig: Signal, x: np.ndarray, fs: float, leads: tuple) -> Rows:
        """One record of a per-sample set: its QRS mask and beats at the prepared rate,
        shifted as preprocessing.length cropped the signal."""
        rid = rec.record_id
        _check_signal_rank(rid, x, "per-sample targets")
        beats = self.reader.read_beats(rec)
        offset = 0
        if self.pre.length is not None and self.pre.crop == "center":
            # Preprocessing's documented rules: resampling gives ceil(n * up / down) samples,
            # and "center" keeps [(n - length) // 2, ... + length)
            n = sig.data.shape[-1]
            if self.pre.fs is not None:
                up, down = resample_factors(sig.fs, self.pre.fs)
                n = -(-n * up // down)
            offset = max(0, (n - self.pre.length) // 2)
        pos = beats.astype(np.float64) * (fs / sig.fs) - offset
        length = x.shape[-1]
        return Rows(
            rid,
            rec.patient_id,
            x[None],
            np.ones((1, 1), np.uint8),
            fs,
            leads,
            rec.fold,
            targets=qrs_mask(pos, length, qrs_half_width(fs))[None],
            beats=[positions_in(pos, 0, length)],
        )


def _check_signal_rank(rid: str, x: np.ndarray, what: str) -> None:
    if x.ndim != 2:
        raise ConfigError(
            f"record {rid}: {what} need (leads, samples) signals; preprocessing gives {x.shape}"
        )
