"""Read a study's result tables from its store (local path or s3://), with pyarrow only.

A part that cannot be read (not Parquet, truncated, or not the rows of the unit its name
says) is skipped with a warning on stderr naming it: a report is made from the rest, and
`study resume` moves such a part aside and runs its unit again.
"""

from __future__ import annotations

import sys

import pandas as pd
import pyarrow as pa

from study.errors import DataError
from study.schema import EPOCHS_SCHEMA, TRIALS_SCHEMA
from study.store import Store

__all__ = ["load_trials", "load_epochs"]


def _read(uri: str, table: str, schema: pa.Schema, one_row: bool) -> pa.Table | None:
    """Every readable part of results/<table>, conformed to `schema`; None if none."""
    scan = Store(uri).scan_parts(f"results/{table}", schema.field("unit_id"), one_row, schema)
    for name, why in sorted(scan.corrupt.items()):
        print(
            f"warning: skipping {uri}/results/{table}/{name}: {why} (`study resume {uri}` "
            "moves it aside and runs its unit again)",
            file=sys.stderr,
            flush=True,
        )
    if not scan.tables:
        return None
    return pa.concat_tables(scan.tables[uid] for uid in sorted(scan.tables))


def load_trials(uri: str) -> pd.DataFrame:
    """Every finished unit's row (results/trials) of the study at `uri`; unreadable parts
    are skipped with a warning on stderr.

    Raises:
        DataError: the study has no readable finished fine-tuning or from-scratch unit yet.
        StorageError: the store cannot be read.
    """
    table = _read(uri, "trials", TRIALS_SCHEMA, one_row=True)
    if table is None:
        raise DataError(f"no finished trials in {uri}/results/trials")
    return table.to_pandas()


def load_epochs(uri: str) -> pd.DataFrame:
    """The per-epoch learning curves (results/epochs) of the study at `uri`; unreadable
    parts are skipped with a warning on stderr.

    Raises:
        DataError: the study has no readable epoch records.
        StorageError: the store cannot be read.
    """
    table = _read(uri, "epochs", EPOCHS_SCHEMA, one_row=False)
    if table is None:
        raise DataError(f"no epoch records in {uri}/results/epochs")
    return table.to_pandas()
