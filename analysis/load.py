"""Read a study's result tables from its store (local path or s3://), with pyarrow only."""

from __future__ import annotations

import pandas as pd

from study.errors import DataError
from study.schema import EPOCHS_SCHEMA, TRIALS_SCHEMA
from study.store import Store

__all__ = ["load_trials", "load_epochs"]


def load_trials(uri: str) -> pd.DataFrame:
    """Every finished unit's row (results/trials) of the study at `uri`.

    Raises:
        DataError: the study has no finished fine-tuning or from-scratch unit yet.
    """
    table = Store(uri).read_dataset("results/trials", schema=TRIALS_SCHEMA)
    if table is None:
        raise DataError(f"no finished trials in {uri}/results/trials")
    return table.to_pandas()


def load_epochs(uri: str) -> pd.DataFrame:
    """The per-epoch learning curves (results/epochs) of the study at `uri`."""
    table = Store(uri).read_dataset("results/epochs", schema=EPOCHS_SCHEMA)
    if table is None:
        raise DataError(f"no epoch records in {uri}/results/epochs")
    return table.to_pandas()
