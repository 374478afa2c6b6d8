"""Data layer: dataset sources, the prepared cache, patient-level splits, nested fractions."""

from study.data.prepared import PreparedDataset, Split, prepare, prepared_key
from study.data.sources import dataset_source, list_datasets

__all__ = ["dataset_source", "list_datasets", "prepare", "prepared_key", "PreparedDataset", "Split"]
