"""Per-record preprocessing, chosen per dataset and recorded in the prepared cache's key.

`Preprocessing.apply` runs, in this order:

1. leads: select and order leads by name.
2. bandpass: zero-phase Butterworth (order BANDPASS_ORDER, run forwards and backwards with
   scipy.signal.sosfiltfilt) at the record's own rate, on the whole record, so crop edges
   carry no filter transient. A low edge of 0 makes it a low-pass.
3. fs: polyphase resampling (scipy.signal.resample_poly: its FIR low-pass is the
   anti-aliasing filter) by the rational factor up/down = target / fs.
4. length: crop a longer record (rule of `crop`), keep a shorter one for step 6.
5. normalize: per lead, with statistics of the kept samples (padding excluded).
6. pad a shorter record at its end up to `length` (after normalising, so zero padding sits
   at a z-scored lead's mean).

`cwt_scalogram` makes the 2-D input of Huerta et al.: a continuous-wavelet scalogram of one
lead (5 s in their work), resized to an image size.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Literal

import numpy as np
from scipy import ndimage, signal

from study.data.readers._base import BadRecord, Signal
from study.errors import ConfigError, DataError

__all__ = [
    "Preprocessing",
    "resample",
    "resample_factors",
    "bandpass_filter",
    "cwt_scalogram",
    "BANDPASS_ORDER",
]

Crop = Literal["center", "start", "random-fixed"]
Pad = Literal["zero", "edge"]
Normalize = Literal["zscore", "minmax"]
CROPS = ("center", "start", "random-fixed")
PADS = ("zero", "edge")
NORMALIZATIONS = (None, "zscore", "minmax")

# Bump when what apply() computes changes for the same options: it is part of key().
PREPROCESS_VERSION = 1
BANDPASS_ORDER = 3  # per pass; sosfiltfilt doubles the effective order and cancels the phase
_RESAMPLE_WINDOW = ("kaiser", 5.0)  # resample_poly's default anti-aliasing window, pinned
_RESAMPLE_PADTYPE = "line"  # extend edges along a line, not with zeros: no step at the ends
_MAX_DENOMINATOR = 1000  # up/down factors stay small enough for a short FIR
_FLAT_PTP = 1e-6  # mV, the readers' flat-lead rule (check_signal)


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


@dataclass(frozen=True)
class Preprocessing:
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

    Raises:
        ConfigError: an option outside its rule (the message names it and the value).
    """

    fs: float | None = None
    leads: tuple[str, ...] | None = None
    length: int | None = None
    crop: Crop = "center"
    pad: Pad = "zero"
    normalize: Normalize | None = None
    bandpass: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.leads is not None:
            if isinstance(self.leads, str):
                raise ConfigError(f"leads must be a sequence of lead names, got {self.leads!r}")
            object.__setattr__(self, "leads", tuple(self.leads))
        if self.bandpass is not None:
            object.__setattr__(self, "bandpass", tuple(float(b) for b in self.bandpass))
        if self.fs is not None and not self.fs > 0:
            raise ConfigError(f"fs must be > 0 (Hz) or None, got {self.fs}")
        if self.leads is not None:
            if not self.leads or not all(isinstance(n, str) and n for n in self.leads):
                raise ConfigError(f"leads must be non-empty lead names, got {self.leads}")
            if len(set(self.leads)) != len(self.leads):
                raise ConfigError(f"leads must not repeat a name, got {list(self.leads)}")
        if self.length is not None and (
            isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 1
        ):
            raise ConfigError(f"length must be an integer >= 1 or None, got {self.length!r}")
        if self.crop not in CROPS:
            raise ConfigError(f"crop must be one of {list(CROPS)}, got {self.crop!r}")
        if self.pad not in PADS:
            raise ConfigError(f"pad must be one of {list(PADS)}, got {self.pad!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(
                f"normalize must be one of {list(NORMALIZATIONS)}, got {self.normalize!r}"
            )
        if self.bandpass is not None and (
            len(self.bandpass) != 2 or not 0 <= self.bandpass[0] < self.bandpass[1]
        ):
            raise ConfigError(
                f"bandpass must be (low, high) Hz with 0 <= low < high, got {self.bandpass}"
            )
        if self.bandpass is not None and self.fs is not None and self.bandpass[1] >= self.fs / 2:
            # filtering happens before resampling, but a pass band above the new Nyquist
            # frequency would be cut by the anti-aliasing filter anyway: a spec mistake
            raise ConfigError(
                f"bandpass high edge must be below the target Nyquist frequency {self.fs / 2:g}"
                f" Hz, got {self.bandpass[1]}"
            )

    def key(self) -> dict:
        """Everything that determines apply()'s output, JSON-able (for the cache key)."""
        return {
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

    @classmethod
    def from_key(cls, key: dict) -> Preprocessing:
        """The Preprocessing a key() came from.

        Raises:
            ConfigError: the key is of another version or names an unknown option.
        """
        if key.get("version") != PREPROCESS_VERSION:
            raise ConfigError(
                f"preprocessing key version must be {PREPROCESS_VERSION}, got {key.get('version')}"
            )
        names = {f.name for f in fields(cls)}
        derived = {"version", "bandpass_order", "resample"}
        unknown = set(key) - names - derived
        if unknown:
            raise ConfigError(
                f"unknown preprocessing options {sorted(unknown)}; valid: {sorted(names)}"
            )
        return cls(**{k: v for k, v in key.items() if k in names})

    def apply(self, sig: Signal, record_id: str | None = None) -> np.ndarray:
        """The preprocessed signal, float32 (leads, samples).

        Args:
            sig: a reader's signal.
            record_id: the record's id; needed by crop "random-fixed" and named in errors.

        Raises:
            BadRecord (record_id given) or DataError: a lead of `leads` is missing, or the
                record is too short to band-pass.
            ConfigError: "random-fixed" without a record id, or a rate that cannot be
                band-passed or resampled as asked.
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
        if self.length is not None and n < self.length:
            mode = "constant" if self.pad == "zero" else "edge"
            x = np.pad(x, ((0, 0), (0, self.length - n)), mode=mode)
        return np.ascontiguousarray(x, dtype=np.float32)


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
