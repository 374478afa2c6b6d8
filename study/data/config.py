"""How one dataset is prepared: where it is, which labels, which preprocessing, what to do
with bad records. Everything but the source folder's path enters the prepared cache's key
(`study.data.prepared.prepared_key`); the folder's content enters it as a fingerprint."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from study.data.preprocess import Preprocessing

__all__ = ["DatasetConfig"]


class DatasetConfig(BaseModel):
    """One dataset's preparation (`datasets.NAME` of a spec)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # In a study spec, an entry under a new name is a variant of the dataset named here
    # (e.g. cpsc2019_snr0: {dataset: cpsc2019, preprocessing: {noise: ...}}): same records,
    # same patient split, its own preparation.
    dataset: str | None = None
    source: str | None = None  # the downloaded dataset's folder (real datasets only)
    label_set: str | None = None  # default: the reader's first label set
    options: dict[str, Any] = Field(default_factory=dict)  # reader options (e.g. sampling_rate)
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    on_bad_record: Literal["skip", "fail"] = "skip"  # skipped records are listed in the report
    drop_unlabelled: bool = True  # drop records with no class of the label set (counted)

    def key(self) -> dict:
        """What of this configuration determines the prepared arrays, JSON-able: everything
        but `source` (the folder's path: moving a folder keeps its key) and `dataset` (a
        variant's name for the dataset it reads, which the cache key names anyway)."""
        fields = self.model_dump(mode="json", exclude={"source", "dataset", "preprocessing"})
        return fields | {"preprocessing": self.preprocessing.key()}
