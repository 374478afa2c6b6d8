"""Dataset sources: the registry that maps a dataset name to a loader of raw arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from study._registry import Registry
from study.errors import ConfigError, DataError

__all__ = ["RawDataset", "DATASETS", "load_raw", "source_version", "list_datasets"]


@dataclass
class RawDataset:
    """A dataset as read from its source, before splitting."""

    signals: np.ndarray  # float32 (N, leads, samples), millivolts
    labels: np.ndarray  # uint8 (N, classes), multi-hot
    patient_id: np.ndarray  # (N,)
    record_id: np.ndarray  # (N,) str
    classes: tuple[str, ...]
    lead_names: tuple[str, ...]
    fs: float
    folds: np.ndarray | None = None  # official folds 1..10 where the dataset has them
    report: dict | None = None  # what preparation dropped and why (real datasets)

    def __post_init__(self) -> None:
        n = len(self.signals)
        if self.signals.ndim != 3:
            raise DataError(f"signals must be (records, leads, samples), got {self.signals.shape}")
        for field, arr in (
            ("labels", self.labels),
            ("patient_id", self.patient_id),
            ("record_id", self.record_id),
        ):
            if len(arr) != n:
                raise DataError(f"{field} has {len(arr)} rows for {n} records")
        if self.labels.shape[1] != len(self.classes):
            raise DataError(
                f"labels have {self.labels.shape[1]} columns for {len(self.classes)} classes"
            )
        if not np.isfinite(self.signals).all():
            raise DataError("signals contain NaN or infinite values")


@dataclass(frozen=True)
class DatasetSource:
    """How to load one dataset: a loader and a version that enters the cache key."""

    load: Callable[[], RawDataset]
    version: str
    kind: str  # "synthetic" or "real"


DATASETS: Registry = Registry("dataset")


def list_datasets() -> list[str]:
    """Names of every dataset a spec may use: the synthetic domains and the real readers."""
    from study.data.readers import READERS

    _register_builtin()
    return sorted(set(DATASETS.names()) | set(READERS.names()))


def is_synthetic(name: str) -> bool:
    _register_builtin()
    return name in DATASETS


def _source(name: str) -> DatasetSource:
    _register_builtin()
    return DATASETS.get(name)()


def load_raw(name: str) -> RawDataset:
    return _source(name).load()


def source_version(name: str) -> str:
    """The version of a dataset's source that enters its cache key."""
    if is_synthetic(name):
        return _source(name).version
    from study.data.readers import READERS

    if name not in READERS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    reader = READERS.get(name)
    return f"reader-{reader.name or name}-{getattr(reader, 'version', '1')}"


_registered = False


def _register_builtin() -> None:
    """Register the synthetic domains (lazily: no work at import time)."""
    global _registered
    if _registered:
        return
    _registered = True
    from study.data import synthetic

    for domain_name in synthetic.DOMAINS:

        def factory(domain_name: str = domain_name) -> DatasetSource:
            def load() -> RawDataset:
                d = synthetic.generate(domain_name)
                return RawDataset(
                    d.signals,
                    d.labels,
                    np.asarray(d.patient_id),
                    np.asarray(d.record_id),
                    tuple(d.classes),
                    tuple(d.lead_names),
                    float(d.fs),
                )

            return DatasetSource(
                load=load,
                version=f"synthetic-{synthetic.GENERATOR_VERSION}",
                kind="synthetic",
            )

        DATASETS.register(factory, name=domain_name)
