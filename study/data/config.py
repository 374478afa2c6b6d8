"""How one dataset is prepared: where it is, which labels, which preprocessing, what to do
with bad records. Part of every prepared cache's key."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from study.errors import ConfigError

if TYPE_CHECKING:
    from study.data.preprocess import Noise, Scalogram

__all__ = ["DatasetConfig", "PreprocessingConfig", "NoiseConfig", "ScalogramConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked(build: Callable[[], object]) -> None:
    """Run `build` (which applies study.data.preprocess's rules) at load time, turning its
    ConfigError into the ValueError pydantic reports with the key's location: the rules
    live in one place, and a mistake still fails when the YAML is read."""
    try:
        build()
    except ConfigError as e:
        raise ValueError(str(e)) from None


class NoiseConfig(_Strict):
    """Synthetic noise at an exact SNR per lead, seeded by the record id (models and
    SNR definition: study.data.preprocess.Noise)."""

    kind: Literal["gaussian", "baseline_wander", "powerline", "muscle", "mixed"]
    snr_db: float = Field(allow_inf_nan=False)  # 10 log10(lead variance / noise power)
    seed: int = 0  # with the record id, seeds each record's noise
    powerline_hz: float = Field(50.0, gt=0, allow_inf_nan=False)  # mains: 50 or 60 Hz

    @model_validator(mode="after")
    def _rules(self) -> NoiseConfig:
        _checked(self.build)
        return self

    def build(self) -> Noise:
        """The `study.data.preprocess.Noise` of this configuration."""
        from study.data.preprocess import Noise

        return Noise(**self.model_dump())


class ScalogramConfig(_Strict):
    """A CWT scalogram image of the one remaining lead, applied last (Huerta et al.;
    details: study.data.preprocess.Scalogram)."""

    # complex Morlet: |CWT| is a smooth envelope; "morl" ripples, and resizing aliases it
    wavelet: str = "cmor1.5-1.0"
    freqs: tuple[float, float] = (1.0, 40.0)  # (fmin, fmax) Hz, geometric rows, fmax < fs/2
    n_scales: int = Field(64, ge=2)  # CWT rows before resizing to `size`
    size: tuple[int, int] = (224, 224)  # (height, width): torchvision AlexNet's input
    channels: Literal[1, 3] = 1  # 3: grey repeated, or `colormap` RGB (ImageNet weights)
    colormap: Literal["jet", "viridis"] | None = None  # only with channels 3
    scaling: Literal["minmax", "max"] = "minmax"  # per record to [0, 1], as a saved image

    @model_validator(mode="after")
    def _rules(self) -> ScalogramConfig:
        _checked(self.build)
        return self

    def build(self) -> Scalogram:
        """The `study.data.preprocess.Scalogram` of this configuration."""
        from study.data.preprocess import Scalogram

        return Scalogram(**self.model_dump())


class PreprocessingConfig(_Strict):
    """Per-record preprocessing (applied in this order: leads, band-pass, resample, length,
    normalise, noise, pad, scalogram). The defaults change nothing."""

    fs: float | None = Field(None, gt=0)  # resample to this rate (anti-aliased); None keeps it
    leads: list[str] | None = None  # select and order leads by name
    length: int | None = Field(None, ge=1)  # samples after resampling: crop or pad to it
    crop: Literal["center", "start", "random-fixed"] = "center"
    pad: Literal["zero", "edge"] = "zero"
    normalize: Literal["zscore", "minmax"] | None = None  # per record and lead
    bandpass: tuple[float, float] | None = None  # Hz, zero-phase Butterworth
    noise: NoiseConfig | None = None  # added after normalising (QRS detection under noise)
    scalogram: ScalogramConfig | None = None  # last: (leads 1, samples) -> (C, H, W) image

    @field_validator("bandpass")
    @classmethod
    def _band(cls, v):
        if v is not None and not 0 <= v[0] < v[1]:
            raise ValueError(f"bandpass must be (low, high) with 0 <= low < high, got {v}")
        return v

    @model_validator(mode="after")
    def _rules(self) -> PreprocessingConfig:
        # the rules across options (rates against fs, one lead for the scalogram)
        _checked(self.build)
        return self

    @property
    def is_identity(self) -> bool:
        return self == PreprocessingConfig()

    def key_fields(self) -> dict:
        """What enters the cache key. The steps added after caches existed (noise,
        scalogram) appear only when on, so every earlier key stays as it was."""
        fields = self.model_dump(mode="json")
        for step in ("noise", "scalogram"):
            if fields[step] is None:
                del fields[step]
        return fields

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
            noise=self.noise.build() if self.noise is not None else None,
            scalogram=self.scalogram.build() if self.scalogram is not None else None,
        )


class DatasetConfig(_Strict):
    """One dataset's preparation. Everything here except `source` and `dataset` enters the
    cache key."""

    # In a study spec, an entry under a new name is a variant of the dataset named here
    # (e.g. cpsc2019_snr0: {dataset: cpsc2019, preprocessing: {noise: ...}}): same records,
    # same patient split, its own preparation.
    dataset: str | None = None
    source: str | None = None  # the downloaded dataset's folder (real datasets only)
    label_set: str | None = None  # default: the reader's first label set
    options: dict[str, Any] = Field(default_factory=dict)  # reader options (e.g. sampling_rate)
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    on_bad_record: Literal["skip", "fail"] = "skip"  # skipped records are listed in the report
    drop_unlabelled: bool = True  # drop records with no class of the label set (counted)

    def key_fields(self) -> dict:
        """What determines the prepared arrays (the source folder's path does not)."""
        fields = self.model_dump(mode="json", exclude={"source", "dataset", "preprocessing"})
        return fields | {"preprocessing": self.preprocessing.key_fields()}
