"""Readers of the real public ECG datasets (one module per dataset family)."""

# Importing each reader module registers its readers in READERS.
from study.data.readers import (  # noqa: E402,F401
    cinc,
    cinc2017,
    code15,
    cpsc2018_original,
    cpsc2019,
    icentia11k,
    ptb,
    ptbxl,
)
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
