"""Per-record preprocessing, chosen per dataset and recorded in the prepared cache's key.

`Preprocessing.apply` runs, in this order:

1. leads: select and order leads by name.
2. bandpass: zero-phase Butterworth (order BANDPASS_ORDER, run forwards and backwards with
   scipy.signal.sosfiltfilt) at the record's own rate, on the whole record, so crop edges
   carry no filter transient. A low edge of 0 makes it a low-pass.
3. fs: polyphase resampling (scipy.signal.resample_poly: its FIR low-pass is the
   anti-aliasing filter) by the rational factor up/down = target / fs.
4. length: crop a longer record (rule of `crop`), keep a shorter one for step 7.
5. normalize: per lead, with statistics of the kept samples (padding excluded).
6. noise (`Noise`): add synthetic noise at an exact SNR per lead, seeded by the record id,
   to the kept samples (for the "QRS detection under noise" study).
7. pad a shorter record at its end up to `length` (after normalising, so zero padding sits
   at a z-scored lead's mean).
8. scalogram (`Scalogram`): replace the one remaining lead by a CWT scalogram image
   (channels, height, width) scaled to [0, 1] (the 2-D input of Huerta et al.).

Steps 6 and 8 are off by default; their options enter `key()` only when they are on.
`cwt_scalogram` is the transform behind step 8.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Mapping
from fractions import Fraction
from typing import Annotated, Any, ClassVar, Literal, get_args

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)
from scipy import ndimage, signal

from study.data.records import BadRecord, Signal
from study.errors import ConfigError, DataError

__all__ = [
    "Preprocessing",
    "Noise",
    "Scalogram",
    "resample",
    "resample_factors",
    "bandpass_filter",
    "cwt_scalogram",
    "BANDPASS_ORDER",
]

# The options' values, each defined once (the schema's fields are these types).
Crop = Literal["center", "start", "random-fixed"]
Pad = Literal["zero", "edge"]
Normalize = Literal["zscore", "minmax"]
NoiseKind = Literal["gaussian", "baseline_wander", "powerline", "muscle", "mixed"]
Colormap = Literal["jet", "viridis"]  # matplotlib colormaps offered for 3-channel scalograms
Scaling = Literal["minmax", "max"]

# Bump when what apply() computes changes for the same options: it is part of key().
PREPROCESS_VERSION = 1
BANDPASS_ORDER = 3  # per pass; sosfiltfilt doubles the effective order and cancels the phase
_RESAMPLE_WINDOW = ("kaiser", 5.0)  # resample_poly's default anti-aliasing window, pinned
_RESAMPLE_PADTYPE = "line"  # extend edges along a line, not with zeros: no step at the ends
_MAX_DENOMINATOR = 1000  # up/down factors stay small enough for a short FIR
_FLAT_PTP = 1e-6  # mV, the readers' flat-lead rule (check_signal)

NOISE_KINDS = get_args(NoiseKind)
_WANDER_BAND = (0.05, 0.5)  # Hz: respiration and electrode drift lie below 0.5 Hz
_WANDER_COMPONENTS = 4  # sinusoids per lead
_MUSCLE_BAND = (20.0, 150.0)  # Hz: the main band of surface EMG
_MUSCLE_ORDER = 4  # Butterworth order per pass (sosfiltfilt)
_MUSCLE_MARGIN = 256  # samples made past each end and dropped: no filter edge transient

COLORMAPS = get_args(Colormap)
_RESIZE = "scipy.ndimage.zoom order=1 mode=nearest"  # cwt_scalogram's resize, for the key
_EXTEND = "symmetric, half the record each side"  # cwt_scalogram's edge extension
_NORM = "amplitude"  # the scalogram's rows: equal magnitude for sines of equal amplitude


def resample_factors(fs: float, target: float) -> tuple[int, int]:
    """(up, down) with up / down == target / fs.

    Raises:
        ConfigError: a rate <= 0, or a ratio no fraction with denominator <= 1000 matches to
            1e-6 (relative).
    """
    if fs <= 0 or target <= 0:
        raise ConfigError(f"sampling rates must be > 0, got fs={fs} and target={target}")
    ratio = Fraction(target / fs).limit_denominator(_MAX_DENOMINATOR)
    if abs(float(ratio) * fs - target) > 1e-6 * target:
        raise ConfigError(
            f"cannot resample {fs} Hz to {target} Hz: no ratio up/down with down <= "
            f"{_MAX_DENOMINATOR} matches (closest {ratio})"
        )
    return ratio.numerator, ratio.denominator


def resample(x: np.ndarray, fs: float, target: float) -> np.ndarray:
    """`x` (leads, samples) at `fs` resampled to `target` Hz, anti-aliased (float64).

    The output has ceil(samples * up / down) samples; content above the lower of the two
    Nyquist frequencies is removed by resample_poly's Kaiser-window FIR low-pass.
    """
    up, down = resample_factors(fs, target)
    if up == down:
        return np.asarray(x, dtype=np.float64)
    return signal.resample_poly(
        np.asarray(x, dtype=np.float64),
        up,
        down,
        axis=-1,
        window=_RESAMPLE_WINDOW,
        padtype=_RESAMPLE_PADTYPE,
    )


def bandpass_filter(x: np.ndarray, fs: float, band: tuple[float, float]) -> np.ndarray:
    """Zero-phase Butterworth band-pass of `x` (leads, samples) (low == 0: low-pass).

    Raises:
        ConfigError: the high edge is not below the Nyquist frequency fs / 2.
        DataError: the record is too short for the filter's edge padding.
    """
    low, high = band
    if high >= fs / 2:
        raise ConfigError(
            f"bandpass high edge must be below the Nyquist frequency {fs / 2:g} Hz of a "
            f"{fs:g} Hz record, got {high}"
        )
    if low == 0:
        sos = signal.butter(BANDPASS_ORDER, high, btype="lowpass", fs=fs, output="sos")
    else:
        sos = signal.butter(BANDPASS_ORDER, [low, high], btype="bandpass", fs=fs, output="sos")
    x = np.asarray(x, dtype=np.float64)
    try:
        return signal.sosfiltfilt(sos, x, axis=-1)
    except ValueError as e:  # shorter than sosfiltfilt's edge padding
        raise DataError(f"record of {x.shape[-1]} samples is too short to band-pass: {e}") from e


def _crop_start(n: int, length: int, rule: str, record_id: str | None) -> int:
    if rule == "center":
        return (n - length) // 2
    if rule == "start":
        return 0
    if record_id is None:
        raise ConfigError("crop 'random-fixed' needs the record id: call apply(signal, record_id)")
    seed = int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "big")
    return int(np.random.default_rng(seed).integers(0, n - length + 1))


def _normalize(x: np.ndarray, how: str) -> np.ndarray:
    flat = np.ptp(x, axis=-1, keepdims=True) < _FLAT_PTP
    if how == "zscore":
        centred = x - x.mean(axis=-1, keepdims=True)
        scale = x.std(axis=-1, keepdims=True)
    else:  # minmax
        centred = x - x.min(axis=-1, keepdims=True)
        scale = np.ptp(x, axis=-1, keepdims=True)
    return np.where(flat, 0.0, centred / np.where(flat, 1.0, scale))


def _record_seed(*parts: object) -> int:
    """A seed from `parts` via SHA-256: the same on every machine, run and Python process
    (Python's hash() of a str is salted per process)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _unit_noise(
    kind: str, shape: tuple[int, int], fs: float, rng: np.random.Generator, powerline_hz: float
) -> np.ndarray:
    """Noise of `kind`, (leads, samples), each lead with mean 0 and mean square 1."""
    leads, n = shape
    t = np.arange(n) / fs
    if kind == "gaussian":
        z = rng.standard_normal(shape)
    elif kind == "baseline_wander":
        k = (leads, _WANDER_COMPONENTS, 1)
        freq = rng.uniform(*_WANDER_BAND, size=k)
        phase = rng.uniform(0, 2 * np.pi, size=k)
        amp = rng.uniform(0.5, 1.0, size=k)
        z = (amp * np.sin(2 * np.pi * freq * t + phase)).sum(axis=1)
    elif kind == "powerline":
        phase = rng.uniform(0, 2 * np.pi, size=(leads, 1))
        z = np.sin(2 * np.pi * powerline_hz * t + phase)
    elif kind == "muscle":
        low, high = _MUSCLE_BAND
        if high < 0.95 * fs / 2:
            sos = signal.butter(_MUSCLE_ORDER, [low, high], "bandpass", fs=fs, output="sos")
        else:  # the band is clipped at the Nyquist frequency: only its low edge is left
            sos = signal.butter(_MUSCLE_ORDER, low, "highpass", fs=fs, output="sos")
        white = rng.standard_normal((leads, n + 2 * _MUSCLE_MARGIN))
        z = signal.sosfiltfilt(sos, white, axis=-1)[:, _MUSCLE_MARGIN : _MUSCLE_MARGIN + n]
    else:  # mixed: the four models at equal power, drawn in this order from one generator
        parts = ("gaussian", "baseline_wander", "powerline", "muscle")
        z = sum(_unit_noise(p, shape, fs, rng, powerline_hz) for p in parts)
    z = z - z.mean(axis=-1, keepdims=True)
    rms = np.sqrt((z**2).mean(axis=-1, keepdims=True))
    return z / np.where(rms > 0, rms, 1.0)


def _describe(err: ValidationError, what: str) -> str:
    """A ValidationError of options built directly, as one line per broken rule."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (what, *e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        shown = (
            ""
            if e["type"] in ("value_error", "missing", "extra_forbidden")
            else f" (got {e.get('input')!r})"
        )
        lines.append(f"{loc}: {msg}{shown}")
    return "; ".join(lines)


class _Options(BaseModel):
    """Frozen options validated by pydantic (one schema for a spec's YAML and for code):
    a broken rule raises pydantic's ValidationError (a ValueError) naming the option, its
    location and the value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _what: ClassVar[str] = ""

    @classmethod
    def _from_mapping(cls, options: Any, derived: tuple[str, ...] = ()) -> Any:
        """The options of a key() (without the keys it derives from the code's constants).

        Raises:
            ConfigError: not a mapping, or options that break a rule (named).
        """
        if not isinstance(options, Mapping):
            raise ConfigError(f"{cls._what} must be a mapping of its options, got {options!r}")
        try:
            return cls.model_validate({k: v for k, v in options.items() if k not in derived})
        except ValidationError as e:
            raise ConfigError(_describe(e, cls._what)) from None


class Noise(_Options):
    """Synthetic noise added at an exact SNR (step 6 of `Preprocessing.apply`).

    The noise of each lead is scaled so that 10 log10(signal power / noise power) equals
    `snr_db` on the record's kept samples, where signal power is the lead's variance
    (its mean square about its mean: an offset carries no information, and so zscore and
    minmax leads get the same SNR) and noise power the noise's mean square (every model is
    made zero-mean over the record). A flat lead (peak-to-peak < 1e-6, the readers' rule)
    has no defined SNR and gets no noise. Leads get independent noise.

    The noise is drawn from a generator seeded by SHA-256 of ("noise", seed, record id),
    so a prepared cache is the same on every machine and every run, and a record's noise
    changes with `seed` and differs between records.

    Models (all at the rate after resampling):
        gaussian: white Gaussian noise (electrode and amplifier noise).
        baseline_wander: per lead, a sum of 4 sinusoids with frequencies uniform in
            [0.05, 0.5) Hz, random phases and amplitudes uniform in [0.5, 1]
            (respiration, electrode drift).
        powerline: one sinusoid at `powerline_hz` with a random phase (mains
            interference; no harmonics); `powerline_hz` must lie below fs / 2.
        muscle: EMG-like noise: white Gaussian noise band-passed to 20-150 Hz by a
            zero-phase Butterworth (order 4 per pass, scipy.signal.sosfiltfilt), drawn
            256 samples longer at each end and cut, so no filter transient remains. Where
            150 Hz is not below 0.95 fs / 2 the band is clipped at the Nyquist frequency
            (a 20 Hz high-pass); the rate must exceed 40 Hz.
        mixed: the four above, each at unit power, summed, then scaled to `snr_db`.

    Not done: the recorded noise of the MIT-BIH Noise Stress Test Database (its "bw", "em"
    and "ma" records), a possible later kind.

    Attributes:
        kind: one of NOISE_KINDS.
        snr_db: the signal-to-noise ratio in dB (any finite value; negative: more noise
            than signal).
        seed: combined with the record id into the noise's seed.
        powerline_hz: the mains frequency of "powerline" and "mixed" (50 or 60 Hz).

    Raises:
        pydantic.ValidationError: an option outside its rule (named, with its value).
    """

    _what: ClassVar[str] = "noise"

    kind: NoiseKind
    # 10 log10(lead variance / noise power); any finite value (negative: more noise)
    snr_db: Annotated[float, Strict(), Field(allow_inf_nan=False)]
    seed: Annotated[int, Strict()] = 0  # with the record id, seeds each record's noise
    powerline_hz: Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)] = 50.0  # 50/60

    def check_rate(self, fs: float) -> None:
        """Raise ConfigError if this noise cannot be made at `fs` Hz."""
        if self.kind in ("powerline", "mixed") and self.powerline_hz >= fs / 2:
            raise ConfigError(
                f"noise.powerline_hz must be below the Nyquist frequency {fs / 2:g} Hz of the "
                f"{fs:g} Hz signal (after resampling), got {self.powerline_hz:g}"
            )
        if self.kind in ("muscle", "mixed") and fs / 2 <= _MUSCLE_BAND[0]:
            raise ConfigError(
                f"noise kind {self.kind!r} needs a rate above {2 * _MUSCLE_BAND[0]:g} Hz (its "
                f"band starts at {_MUSCLE_BAND[0]:g} Hz), got {fs:g} Hz"
            )

    def key(self) -> dict:
        return {
            "kind": self.kind,
            "snr_db": self.snr_db,
            "seed": self.seed,
            "powerline_hz": self.powerline_hz,
            "model": {  # the constants behind the models, so a change to one moves the key
                "wander_band": list(_WANDER_BAND),
                "wander_components": _WANDER_COMPONENTS,
                "muscle_band": list(_MUSCLE_BAND),
                "muscle_order": _MUSCLE_ORDER,
                "muscle_margin": _MUSCLE_MARGIN,
            },
        }

    @classmethod
    def from_key(cls, key: Mapping) -> Noise:
        return cls._from_mapping(key, derived=("model",))

    def add(self, x: np.ndarray, fs: float, record_id: str | None) -> np.ndarray:
        """`x` (leads, samples) at `fs` Hz with this noise added (float64).

        Raises:
            ConfigError: no record id (it seeds the noise), or a rate check_rate refuses.
        """
        if record_id is None:
            raise ConfigError(
                "noise needs the record id (it seeds the noise): call apply(signal, record_id)"
            )
        self.check_rate(fs)
        if x.shape[-1] == 0:
            return x
        rng = np.random.default_rng(_record_seed("noise", self.seed, record_id))
        unit = _unit_noise(self.kind, x.shape, fs, rng, self.powerline_hz)
        power = x.var(axis=-1, keepdims=True)
        flat = np.ptp(x, axis=-1, keepdims=True) < _FLAT_PTP
        gain = np.where(flat, 0.0, np.sqrt(power / 10 ** (self.snr_db / 10)))
        return x + gain * unit


def _continuous_wavelet(name: object, option: str = "wavelet"):
    """The pywt.ContinuousWavelet called `name` (`option`: its name in error messages).

    Raises:
        ConfigError: not the name of a continuous PyWavelets wavelet, or a family that takes
            parameters named without them ("cmor" rather than "cmor1.5-1.0").
    """
    import pywt

    def refuse() -> ConfigError:
        return ConfigError(
            f"{option} must be a continuous PyWavelets wavelet, one of "
            f"{pywt.wavelist(kind='continuous')} (cmor, shan and fbsp with their parameters, "
            f"e.g. 'cmor1.5-1.0'), got {name!r}"
        )

    if not isinstance(name, str) or name != name.strip():  # " morl" would be another key
        raise refuse()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pywt only warns about a family without parameters
        try:
            return pywt.ContinuousWavelet(name)
        except (ValueError, FutureWarning, DeprecationWarning) as e:
            raise refuse() from e


class Scalogram(_Options):
    """A CWT scalogram image of the one remaining lead (step 8 of `Preprocessing.apply`).

    For Huerta et al. (AlexNet on scalograms of 5-s single-lead ECG). The image is
    `cwt_scalogram` of the lead (magnitude of the CWT, the record extended by reflection
    at both ends as MATLAB's cwt does by default) at `n_scales` frequencies spaced
    geometrically from fmax (row 0, the top of the image) down to fmin, resized to `size`
    by linear interpolation, then scaled per record to [0, 1]. Geometric spacing because a
    wavelet's bandwidth grows with its frequency (constant Q): equal ratios give
    neighbouring rows equal overlap, as MATLAB's voices-per-octave scales do; linear
    spacing would spend most rows on the high band where they overlap most. The resized
    rows stay geometric: `frequencies()` gives the frequency of each output row.

    Attributes:
        wavelet: a continuous PyWavelets wavelet. Default "cmor1.5-1.0", a complex
            (analytic) Morlet whose magnitude is the smooth envelope of the oscillation;
            the real Morlet "morl" gives |coefficients| that ripple at twice the frequency,
            and resizing the time axis to `size` samples that ripple (aliasing); and
            PyWavelets puts morl's centre at 0.8125, its estimate of 5 / (2 pi) = 0.796, so
            a morl row responds about 2% below its nominal frequency.
        freqs: (fmin, fmax) Hz; fmax must lie below the Nyquist frequency of the signal
            after resampling.
        n_scales: CWT rows before resizing (>= 2).
        size: (height, width) of the image.
        channels: 1 (grey), or 3: the grey image repeated, or mapped by `colormap`.
        colormap: None, or one of COLORMAPS (matplotlib) for 3 channels (RGB in [0, 1]).
        scaling: per record, "minmax" maps the image's minimum to 0 and maximum to 1
            (MATLAB's rescale/mat2gray before saving an image); "max" divides by the maximum
            (0 stays no energy). A flat lead (peak-to-peak < 1e-6) gives an all-0 image.

    Raises:
        pydantic.ValidationError: an option outside its rule (named, with its value).
    """

    _what: ClassVar[str] = "scalogram"

    # complex Morlet: |CWT| is a smooth envelope; "morl" ripples, and resizing aliases it
    wavelet: str = "cmor1.5-1.0"
    freqs: tuple[float, float] = (1.0, 40.0)  # (fmin, fmax) Hz, geometric rows, fmax < fs/2
    n_scales: Annotated[int, Strict(), Field(ge=2)] = 64  # CWT rows before resizing to `size`
    # (height, width): torchvision AlexNet's input
    size: tuple[Annotated[int, Strict(), Field(ge=1)], Annotated[int, Strict(), Field(ge=1)]] = (
        224,
        224,
    )
    channels: Literal[1, 3] = 1  # 3: grey repeated, or `colormap` RGB (ImageNet weights)
    colormap: Colormap | None = None  # only with channels 3
    scaling: Scaling = "minmax"  # per record to [0, 1], as a saved image

    @field_validator("wavelet")
    @classmethod
    def _wavelet(cls, v: str) -> str:
        _continuous_wavelet(v)
        return v

    @field_validator("freqs")
    @classmethod
    def _freqs(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(f) for f in v) or not 0 < v[0] < v[1]:
            raise ValueError(f"freqs must be (fmin, fmax) Hz with 0 < fmin < fmax, got {v}")
        return v

    @model_validator(mode="after")
    def _colour(self) -> Scalogram:
        if self.colormap is not None and self.channels != 3:
            raise ValueError(
                f"colormap {self.colormap!r} makes an RGB image: it needs channels 3, "
                f"got {self.channels}"
            )
        return self

    def row_freqs(self) -> np.ndarray:
        """The CWT's frequencies (Hz), row by row before resizing: fmax down to fmin."""
        return np.geomspace(self.freqs[1], self.freqs[0], self.n_scales)

    def frequencies(self) -> np.ndarray:
        """The frequency (Hz) of each row of the output image, fmax (row 0) down to fmin.

        Linear interpolation between rows spaced geometrically keeps them geometric (the
        resize maps output row i to input row i (n_scales - 1) / (height - 1))."""
        return np.geomspace(self.freqs[1], self.freqs[0], self.size[0])

    def check_rate(self, fs: float) -> None:
        """Raise ConfigError if fmax is not below the Nyquist frequency of `fs`."""
        if self.freqs[1] >= fs / 2:
            raise ConfigError(
                f"scalogram.freqs: fmax must be below the Nyquist frequency {fs / 2:g} Hz of the "
                f"{fs:g} Hz signal (after resampling), got {self.freqs[1]:g}"
            )

    def key(self) -> dict:
        return {
            "wavelet": self.wavelet,
            "freqs": list(self.freqs),
            "n_scales": self.n_scales,
            "size": list(self.size),
            "channels": self.channels,
            "colormap": self.colormap,
            "scaling": self.scaling,
            "method": {
                "spacing": "geometric",
                "norm": _NORM,
                "extend": _EXTEND,
                "resize": _RESIZE,
            },
        }

    @classmethod
    def from_key(cls, key: Mapping) -> Scalogram:
        return cls._from_mapping(key, derived=("method",))

    def image(self, x: np.ndarray, fs: float) -> np.ndarray:
        """The scalogram of `x` (1, samples) at `fs` Hz, float32 (channels, height, width).

        Raises:
            ConfigError: fmax not below fs / 2.
        """
        self.check_rate(fs)
        h, w = self.size
        if np.ptp(x) < _FLAT_PTP:  # no content: minmax would blow numerical dust up to [0, 1]
            img = np.zeros((h, w))
        else:
            img = cwt_scalogram(
                x, fs, freqs=self.row_freqs(), wavelet=self.wavelet, size=self.size, norm=_NORM
            ).astype(np.float64)
            low = img.min() if self.scaling == "minmax" else 0.0
            span = img.max() - low
            img = np.clip((img - low) / span, 0.0, 1.0) if span > 0 else np.zeros_like(img)
        if self.channels == 1:
            out = img[None]
        elif self.colormap is None:
            out = np.repeat(img[None], 3, axis=0)
        else:
            import matplotlib  # a declared dependency; only the colour scalogram needs it

            out = np.moveaxis(matplotlib.colormaps[self.colormap](img)[..., :3], -1, 0)
        return np.ascontiguousarray(out, dtype=np.float32)


class Preprocessing(_Options):
    """What to do to each record; the defaults change nothing (order: module docstring).

    Attributes:
        fs: resample to this rate (Hz); None keeps the record's rate.
        leads: select and order leads by name; None keeps all in the record's order.
        length: samples after resampling; None keeps the record's length.
        crop: how a longer record is cut to `length`: "center" keeps samples
            [(n - length) // 2, ... + length), "start" the first `length`, "random-fixed"
            a window starting at a uniform draw from [0, n - length] seeded by a SHA-256 of
            the record id (the same window on every machine and every run).
        pad: how a shorter record is filled at its end: "zero" with 0, "edge" with its last
            value (per lead).
        normalize: per lead, on the kept samples: "zscore" to mean 0 and standard deviation
            1, "minmax" to [0, 1]. A flat lead (peak-to-peak < 1e-6, the readers' rule) comes
            out all 0.
        bandpass: (low, high) Hz of a zero-phase Butterworth filter (low 0: low-pass only);
            high must lie below the Nyquist frequency of the record and of `fs`.
        noise: a `Noise` (or a mapping of its options) to add after normalising; None adds
            none. Needs the record id.
        scalogram: a `Scalogram` (or a mapping of its options): the output becomes an image
            (channels, height, width) of the one lead left; None keeps (leads, samples).

    This model is both the schema of a spec's `datasets.NAME.preprocessing` and the
    object that applies it: its `key()` is the one cache key of the preprocessing.

    Raises:
        pydantic.ValidationError: an option outside its rule (named, with its value).
    """

    _what: ClassVar[str] = "preprocessing"

    fs: float | None = Field(None, gt=0)  # resample to this rate (anti-aliased); None keeps it
    leads: tuple[str, ...] | None = None  # select and order leads by name
    length: Annotated[int, Strict(), Field(ge=1)] | None = None  # samples: crop or pad to it
    crop: Crop = "center"
    pad: Pad = "zero"
    normalize: Normalize | None = None  # per record and lead
    bandpass: tuple[float, float] | None = None  # Hz, zero-phase Butterworth
    noise: Noise | None = None  # added after normalising (QRS detection under noise)
    scalogram: Scalogram | None = None  # last: (leads 1, samples) -> (C, H, W) image

    @field_validator("leads", mode="before")
    @classmethod
    def _leads(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError(f"leads must be a sequence of lead names, got {v!r}")
        if v is not None:
            v = tuple(v)
            if not v or not all(isinstance(n, str) and n for n in v):
                raise ValueError(f"leads must be non-empty lead names, got {list(v)}")
            if len(set(v)) != len(v):
                raise ValueError(f"leads must not repeat a name, got {list(v)}")
        return v

    @field_validator("bandpass")
    @classmethod
    def _band(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 <= v[0] < v[1]:
            raise ValueError(f"bandpass must be (low, high) Hz with 0 <= low < high, got {v}")
        return v

    @model_validator(mode="after")
    def _across(self) -> Preprocessing:
        # the rules across options (rates against fs, one lead for the scalogram)
        if self.bandpass is not None and self.fs is not None and self.bandpass[1] >= self.fs / 2:
            # filtering happens before resampling, but a pass band above the new Nyquist
            # frequency would be cut by the anti-aliasing filter anyway: a spec mistake
            raise ValueError(
                f"bandpass high edge must be below the target Nyquist frequency {self.fs / 2:g}"
                f" Hz, got {self.bandpass[1]}"
            )
        if self.scalogram is not None and self.leads is not None and len(self.leads) != 1:
            raise ValueError(
                f"the scalogram takes exactly one lead: leads must name one, got {list(self.leads)}"
            )
        if self.fs is not None:  # else checked at apply(), against the record's own rate
            for step in (self.noise, self.scalogram):
                if step is not None:
                    step.check_rate(self.fs)
        return self

    @property
    def is_identity(self) -> bool:
        """True when apply() changes nothing but the dtype."""
        return self == Preprocessing()

    def key(self) -> dict:
        """Everything that determines apply()'s output, JSON-able (for the cache key).

        The optional steps (noise, scalogram) appear only when on, so adding a step that
        is off by default never changes the key of an existing configuration."""
        key = {
            "version": PREPROCESS_VERSION,
            "fs": self.fs,
            "leads": list(self.leads) if self.leads is not None else None,
            "length": self.length,
            "crop": self.crop,
            "pad": self.pad,
            "normalize": self.normalize,
            "bandpass": list(self.bandpass) if self.bandpass is not None else None,
            "bandpass_order": BANDPASS_ORDER,
            "resample": {
                "method": "resample_poly",
                "window": list(_RESAMPLE_WINDOW),
                "padtype": _RESAMPLE_PADTYPE,
                "max_denominator": _MAX_DENOMINATOR,
            },
        }
        for name in _STEPS:
            step = getattr(self, name)
            if step is not None:
                key[name] = step.key()
        return key

    @classmethod
    def from_key(cls, key: Mapping) -> Preprocessing:
        """The Preprocessing a key() came from.

        Raises:
            ConfigError: the key is of another version or names an unknown option.
        """
        if key.get("version") != PREPROCESS_VERSION:
            raise ConfigError(
                f"preprocessing key version must be {PREPROCESS_VERSION}, got {key.get('version')}"
            )
        options = dict(key)
        for name, step in _STEPS.items():
            if options.get(name) is not None:
                options[name] = step.from_key(options[name])
        return cls._from_mapping(options, derived=("version", "bandpass_order", "resample"))

    def apply(self, sig: Signal, record_id: str | None = None) -> np.ndarray:
        """The preprocessed signal, float32 (leads, samples).

        Args:
            sig: a reader's signal.
            record_id: the record's id; needed by crop "random-fixed" and by noise (it seeds
                both) and named in errors.

        Returns:
            float32 (leads, samples); with a scalogram, float32 (channels, height, width).

        Raises:
            BadRecord (record_id given) or DataError: a lead of `leads` is missing, or the
                record is too short to band-pass.
            ConfigError: "random-fixed" or noise without a record id, a rate that cannot be
                band-passed, resampled, given the noise or the scalogram's fmax as asked, or
                a scalogram of a record with more than one lead left (a spec mistake, not a
                bad record: it fails instead of skipping every record).
        """
        x = np.asarray(sig.data, dtype=np.float64)
        names = tuple(sig.lead_names)
        if x.ndim != 2 or x.shape[0] != len(names):
            raise DataError(
                f"signal must be (leads, samples) with one name per lead, got shape {x.shape} "
                f"and {len(names)} names"
            )
        if self.leads is not None:
            missing = [n for n in self.leads if n not in names]
            if missing:
                reason = f"lead(s) {missing} not in the record's leads {list(names)}"
                if record_id is not None:
                    raise BadRecord(record_id, reason)
                raise DataError(reason)
            x = x[[names.index(n) for n in self.leads]]
            names = self.leads
        if self.bandpass is not None:
            try:
                x = bandpass_filter(x, sig.fs, self.bandpass)
            except DataError as e:
                if record_id is not None:
                    raise BadRecord(record_id, str(e)) from e
                raise
        if self.fs is not None:
            x = resample(x, sig.fs, self.fs)
        n = x.shape[-1]
        if self.length is not None and n > self.length:
            start = _crop_start(n, self.length, self.crop, record_id)
            x = x[:, start : start + self.length]
        if self.normalize is not None:
            x = _normalize(x, self.normalize)
        fs = self.fs if self.fs is not None else sig.fs
        if self.noise is not None:
            x = self.noise.add(x, fs, record_id)
        if self.length is not None and n < self.length:
            mode = "constant" if self.pad == "zero" else "edge"
            x = np.pad(x, ((0, 0), (0, self.length - n)), mode=mode)
        if self.scalogram is not None:
            if x.shape[0] != 1:
                where = f"record {record_id}: " if record_id is not None else ""
                raise ConfigError(
                    f"{where}the scalogram takes exactly one lead, got {x.shape[0]} "
                    f"{list(names)}; set preprocessing.leads to one lead"
                )
            x = self.scalogram.image(x, fs)
        return np.ascontiguousarray(x, dtype=np.float32)


# The optional steps: Preprocessing field -> its class (key() and from_key() go through it).
_STEPS: dict[str, type] = {"noise": Noise, "scalogram": Scalogram}


def cwt_scalogram(
    x: np.ndarray,
    fs: float,
    *,
    scales: np.ndarray | None = None,
    freqs: np.ndarray | None = None,
    wavelet: str = "morl",
    size: tuple[int, int] | None = None,
    extend: bool = True,
    norm: Literal["energy", "amplitude"] = "energy",
) -> np.ndarray:
    """The magnitude of the continuous wavelet transform of one lead, (scales, samples).

    Args:
        x: one lead, (samples,) or (1, samples).
        fs: its sampling rate (Hz).
        scales: wavelet scales, row by row; or give `freqs` instead.
        freqs: frequencies (Hz, each in (0, fs / 2)) turned into scales by
            central_frequency(wavelet) * fs / freq; rows follow their order.
        wavelet: a continuous PyWavelets wavelet: "morl" (real Morlet), "cmor1.5-1.0"
            (complex Morlet, bandwidth 1.5, centre 1.0), ... (which wavelet Huerta et al.
            used is not verified: MATLAB's cwt defaults to an analytic Morse wavelet).
        size: (height, width) to resize the scalogram to (linear interpolation,
            scipy.ndimage.zoom); None keeps (len(scales), samples).
        extend: extend the lead at both ends by half its length, mirrored (half-sample
            symmetric), before the transform and cut the extension off after, as MATLAB's
            cwt does by default; False: the transform sees zeros outside the record, and a
            lead's offset shows as steps at both edges of the low-frequency rows.
        norm: "energy": PyWavelets' coefficients (wavelets of equal energy at every scale:
            a sine's row grows as the square root of its scale, so the peak row of a pure
            tone lies a little below its frequency and low rows outweigh high ones);
            "amplitude": divided by the square root of the scale (wavelets of equal L1
            norm, MATLAB's cwt convention): sines of equal amplitude give rows of equal
            magnitude, and a pure tone peaks at its own frequency.

    Returns:
        float32 (len(scales), samples), or `size`.

    Raises:
        ConfigError: not exactly one of scales / freqs, a scale <= 0, a frequency outside
            (0, fs / 2), an unknown wavelet or norm, or a size < 1.
        DataError: `x` is not a single lead.
    """
    try:
        import pywt
    except ImportError as e:  # only the 2-D input needs it: imported here, not at load
        raise ImportError("cwt_scalogram needs PyWavelets: pip install PyWavelets") from e

    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1 or x.size < 2:
        raise DataError(f"cwt_scalogram takes one lead (samples,) or (1, samples), got {x.shape}")
    if fs <= 0:
        raise ConfigError(f"fs must be > 0, got {fs}")
    if (scales is None) == (freqs is None):
        raise ConfigError("give exactly one of scales and freqs")
    if norm not in ("energy", "amplitude"):
        raise ConfigError(f"norm must be 'energy' or 'amplitude', got {norm!r}")
    wav = _continuous_wavelet(wavelet)
    if freqs is not None:
        f = np.asarray(freqs, dtype=np.float64).reshape(-1)
        if f.size == 0 or np.any(f <= 0) or np.any(f >= fs / 2):
            raise ConfigError(f"freqs must be in (0, {fs / 2:g}) Hz, got {f.tolist()}")
        s = pywt.central_frequency(wav) * fs / f
    else:
        s = np.asarray(scales, dtype=np.float64).reshape(-1)
        if s.size == 0 or np.any(s <= 0):
            raise ConfigError(f"scales must be > 0, got {s.tolist()}")
    n = x.size
    pad = n // 2 if extend else 0
    xe = np.pad(x, pad, mode="symmetric")
    coefs, _ = pywt.cwt(xe, s, wav, sampling_period=1.0 / fs, method="fft")
    out = np.abs(coefs[:, pad : pad + n])
    if norm == "amplitude":
        out = out / np.sqrt(s)[:, None]
    if size is not None:
        h, w = (int(v) for v in size)
        if h < 1 or w < 1:
            raise ConfigError(f"size must be (height, width) >= 1, got {size}")
        out = ndimage.zoom(out, (h / out.shape[0], w / out.shape[1]), order=1, mode="nearest")
        if out.shape != (h, w):  # zoom rounds the output shape
            raise DataError(f"resizing gave {out.shape}, not {(h, w)}")
    return out.astype(np.float32)
