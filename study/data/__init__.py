"""Data layer: dataset sources, the prepared cache, patient-level splits, nested fractions."""

from study.data._sources import list_datasets
from study.data.prepared import PreparedDataset, prepare, prepared_key

__all__ = ["list_datasets", "prepare", "prepared_key", "PreparedDataset"]
