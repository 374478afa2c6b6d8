"""Read a real dataset through its reader into arrays: labels, preprocessing, bad records."""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
from tqdm.auto import tqdm

from study.data._sources import RawDataset
from study.data.config import DatasetConfig
from study.errors import ConfigError, DataError

__all__ = ["read_real", "open_reader"]


def open_reader(name: str, config: DatasetConfig):
    """The reader of dataset `name` on `config.source` (its layout checked at once)."""
    from study.data.readers import READERS

    reader_cls = READERS.get(name)  # an unknown name lists the known readers
    if config.source is None:
        raise ConfigError(
            f"{name} is a real dataset: give the folder it was downloaded to as "
            f"datasets.{name}.source (or --source); `study data download {name} DIR` fetches it"
        )
    return reader_cls(config.source, **config.options)


def read_real(name: str, config: DatasetConfig, progress: bool = True) -> RawDataset:
    """Every usable record of `name`, preprocessed, with its labels and a report.

    Records without any class of the label set are dropped when `drop_unlabelled` (counted);
    bad records are skipped and listed with their reason, or raise, per `on_bad_record`.

    Raises:
        ConfigError: no source folder, an unknown label set or reader option.
        DataError: the folder's layout is wrong, a bad record under on_bad_record=fail, or
            records of different lengths with no preprocessing.length to make them equal.
    """
    from study.data.readers import BadRecord

    reader = open_reader(name, config)
    records = reader.records()
    if not reader.label_sets:
        raise ConfigError(
            f"{name} has no record-level label sets (its labels are per frame: a pretext "
            "task's); it cannot be prepared as a classification dataset"
        )
    label_set = config.label_set or next(iter(reader.label_sets))
    labels = reader.label_matrix(records, label_set)
    classes = tuple(reader.label_sets[label_set])
    pre = config.preprocessing.build()
    keep: list[int] = []
    signals: list[np.ndarray] = []
    bad: list[dict] = []
    unlabelled = 0
    lead_names: tuple[str, ...] | None = None
    fs_out: float | None = None
    for i, rec in enumerate(
        tqdm(
            records,
            desc=f"reading {name}",
            unit="rec",
            file=sys.stderr,
            disable=not progress,
            mininterval=2,
        )
    ):
        problem = rec.meta.get("problem") or rec.meta.get("header_error")
        if problem:  # found while listing (malformed labels, missing file): a bad record
            if config.on_bad_record == "fail":
                raise BadRecord(rec.record_id, str(problem))
            bad.append({"record_id": rec.record_id, "reason": str(problem)})
            continue
        if config.drop_unlabelled and labels[i].sum() == 0:
            unlabelled += 1
            continue
        try:
            sig = reader.read(rec)
            x = pre.apply(sig, record_id=rec.record_id)
        except BadRecord as e:
            if config.on_bad_record == "fail":
                raise
            bad.append({"record_id": rec.record_id, "reason": e.reason})
            continue
        except DataError as e:  # a preprocessing rule the record cannot meet (missing lead)
            if config.on_bad_record == "fail":
                raise
            bad.append({"record_id": rec.record_id, "reason": str(e)})
            continue
        if signals and x.shape != signals[0].shape:
            raise DataError(
                f"{name}: record {rec.record_id} has shape {x.shape}, earlier records "
                f"{signals[0].shape}; set preprocessing.length (and fs) so all records match"
            )
        lead_names = lead_names or (pre.leads or tuple(sig.lead_names))
        fs_out = fs_out or (pre.fs or sig.fs)
        signals.append(x)
        keep.append(i)
    if not signals:
        raise DataError(
            f"{name}: no usable record in {config.source} "
            f"({len(bad)} bad, {unlabelled} without a {label_set} label)"
        )
    kept = [records[i] for i in keep]
    folds = [r.fold for r in kept]
    reasons = Counter(b["reason"].split(" (")[0] for b in bad)
    return RawDataset(
        signals=np.stack(signals).astype(np.float32),
        labels=labels[keep],
        patient_id=np.array([r.patient_id for r in kept]),
        record_id=np.array([r.record_id for r in kept]),
        classes=classes,
        lead_names=tuple(lead_names),
        fs=float(fs_out),
        folds=np.array(folds, dtype=np.int8) if all(f is not None for f in folds) else None,
        report={
            "source": str(config.source),
            "label_set": label_set,
            "records_listed": len(records),
            "records_kept": len(kept),
            "unlabelled_dropped": unlabelled,
            "bad_records": bad,
            "bad_reasons": dict(reasons),
        },
    )
