"""Readers of the real public ECG datasets (one module per dataset family)."""

from study.data.readers._base import (
    READERS,
    STANDARD_LEADS,
    BadRecord,
    DatasetReader,
    Record,
    Signal,
    check_signal,
)

__all__ = [
    "READERS",
    "STANDARD_LEADS",
    "BadRecord",
    "DatasetReader",
    "Record",
    "Signal",
    "check_signal",
]
