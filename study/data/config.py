"""How one dataset is prepared: where it is, which labels, which preprocessing, what to do
with bad records. Part of every prepared cache's key."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DatasetConfig", "PreprocessingConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PreprocessingConfig(_Strict):
    """Per-record preprocessing (applied in this order: leads, band-pass, resample, length,
    normalise). The defaults change nothing."""

    fs: float | None = Field(None, gt=0)  # resample to this rate (anti-aliased); None keeps it
    leads: list[str] | None = None  # select and order leads by name
    length: int | None = Field(None, ge=1)  # samples after resampling: crop or pad to it
    crop: Literal["center", "start", "random-fixed"] = "center"
    pad: Literal["zero", "edge"] = "zero"
    normalize: Literal["zscore", "minmax"] | None = None  # per record and lead
    bandpass: tuple[float, float] | None = None  # Hz, zero-phase Butterworth

    @field_validator("bandpass")
    @classmethod
    def _band(cls, v):
        if v is not None and not 0 <= v[0] < v[1]:
            raise ValueError(f"bandpass must be (low, high) with 0 <= low < high, got {v}")
        return v

    @property
    def is_identity(self) -> bool:
        return self == PreprocessingConfig()

    def build(self):
        """The `study.data.preprocess.Preprocessing` that applies this configuration."""
        from study.data.preprocess import Preprocessing

        return Preprocessing(
            fs=self.fs,
            leads=tuple(self.leads) if self.leads else None,
            length=self.length,
            crop=self.crop,
            pad=self.pad,
            normalize=self.normalize,
            bandpass=tuple(self.bandpass) if self.bandpass else None,
        )


class DatasetConfig(_Strict):
    """One dataset's preparation. Everything here except `source` enters the cache key."""

    source: str | None = None  # the downloaded dataset's folder (real datasets only)
    label_set: str | None = None  # default: the reader's first label set
    options: dict[str, Any] = Field(default_factory=dict)  # reader options (e.g. sampling_rate)
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    on_bad_record: Literal["skip", "fail"] = "skip"  # skipped records are listed in the report
    drop_unlabelled: bool = True  # drop records with no class of the label set (counted)

    def key_fields(self) -> dict:
        """What determines the prepared arrays (the source folder's path does not)."""
        return self.model_dump(mode="json", exclude={"source"})
