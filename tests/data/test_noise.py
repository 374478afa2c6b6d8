"""Synthetic noise at an exact SNR (preprocessing step 6): the SNR, the models' spectra,
seeding by record id, and the errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from pydantic import ValidationError

from study.data.config import DatasetConfig
from study.data.preprocess import NOISE_KINDS, Noise, Preprocessing, _record_seed
from study.data.readers import Signal
from study.errors import ConfigError


def _two_leads(fs: float = 500.0, seconds: float = 10.0) -> Signal:
    """Two leads of different power, the second with an offset (which must not count)."""
    t = np.arange(int(seconds * fs)) / fs
    ecg_like = np.sin(2 * np.pi * 1.2 * t) + 0.3 * np.sin(2 * np.pi * 9 * t)
    x = np.stack([ecg_like, 3 * np.sin(2 * np.pi * 7 * t) + 5])
    return Signal(x.astype(np.float32), fs, ("I", "II"))


def _noise_of(pre: Preprocessing, sig: Signal, record_id: str = "r1") -> np.ndarray:
    clean = Preprocessing(normalize=pre.normalize, fs=pre.fs).apply(sig)
    return pre.apply(sig, record_id).astype(np.float64) - clean.astype(np.float64)


def _snr_db(clean: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return 10 * np.log10(clean.var(axis=-1) / (noise**2).mean(axis=-1))


def _band_fraction(z: np.ndarray, fs: float, low: float, high: float) -> float:
    """Share of `z`'s power in [low, high] Hz (Hann-windowed periodogram)."""
    p = np.abs(np.fft.rfft(z * np.hanning(z.size))) ** 2
    f = np.fft.rfftfreq(z.size, 1 / fs)
    return float(p[(f >= low) & (f <= high)].sum() / p.sum())


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("snr_db", [-6.0, 0.0, 12.0, 30.0])
def test_every_kind_is_added_at_the_exact_snr_per_lead(kind, snr_db):
    sig = _two_leads()
    pre = Preprocessing(noise=Noise(kind=kind, snr_db=snr_db))
    clean = Preprocessing().apply(sig).astype(np.float64)
    noise = _noise_of(pre, sig)
    np.testing.assert_allclose(_snr_db(clean, noise), snr_db, atol=1e-3)
    np.testing.assert_allclose(noise.mean(axis=-1), 0, atol=1e-5)  # every model is zero-mean


def test_noise_is_added_after_normalising():
    # on a z-scored lead (variance 1) the noise power is 10^(-snr/10) exactly; were the
    # noise added first, normalising would have rescaled it with the signal
    sig = _two_leads()
    pre = Preprocessing(normalize="zscore", noise={"kind": "gaussian", "snr_db": 10.0})
    noise = _noise_of(pre, sig)
    np.testing.assert_allclose((noise**2).mean(axis=-1), 0.1, rtol=1e-4)


def test_the_noise_is_seeded_by_the_record_id_and_the_seed():
    sig = _two_leads(seconds=2)
    pre = Preprocessing(noise=Noise(kind="mixed", snr_db=6.0, seed=3))
    a = pre.apply(sig, "rec-1")
    np.testing.assert_array_equal(a, pre.apply(sig, "rec-1"))
    np.testing.assert_array_equal(
        a, Preprocessing(noise=Noise(kind="mixed", snr_db=6.0, seed=3)).apply(sig, "rec-1")
    )
    assert not np.allclose(a, pre.apply(sig, "rec-2"))
    assert not np.allclose(
        a, Preprocessing(noise=Noise(kind="mixed", snr_db=6.0, seed=4)).apply(sig, "rec-1")
    )
    assert not np.allclose(a[0], a[1] - 5)  # leads get their own noise


def test_the_seed_is_a_sha256_of_seed_and_record_id_not_pythons_hash():
    # hash() of a str changes with every Python process (PYTHONHASHSEED): a cache made in
    # one process must be made again, equal, in another
    digest = hashlib.sha256(b"noise\x1f7\x1frec-9").digest()
    assert _record_seed("noise", 7, "rec-9") == int.from_bytes(digest[:8], "big")


def test_powerline_noise_sits_at_the_mains_frequency():
    sig = _two_leads(fs=500.0)
    for hz in (50.0, 60.0):
        noise = _noise_of(
            Preprocessing(noise=Noise(kind="powerline", snr_db=0.0, powerline_hz=hz)), sig
        )
        f = np.fft.rfftfreq(noise.shape[-1], 1 / 500.0)
        for lead in noise:
            spectrum = np.abs(np.fft.rfft(lead))
            assert f[np.argmax(spectrum)] == pytest.approx(hz)
            assert _band_fraction(lead, 500.0, hz - 0.5, hz + 0.5) > 0.99


def test_baseline_wander_lies_below_half_a_hertz():
    sig = _two_leads(fs=100.0, seconds=60.0)
    noise = _noise_of(Preprocessing(noise=Noise(kind="baseline_wander", snr_db=0.0)), sig)
    for lead in noise:
        assert _band_fraction(lead, 100.0, 0.0, 0.6) > 0.99  # 0.6: the window's leakage


@pytest.mark.parametrize("fs, band", [(500.0, (20.0, 150.0)), (100.0, (20.0, 50.0))])
def test_muscle_noise_is_band_limited_and_clipped_at_nyquist(fs, band):
    sig = _two_leads(fs=fs)
    noise = _noise_of(Preprocessing(noise=Noise(kind="muscle", snr_db=0.0)), sig)
    for lead in noise:
        assert _band_fraction(lead, fs, *band) > 0.97
        assert _band_fraction(lead, fs, 0.0, 15.0) < 0.01


def test_the_rate_after_resampling_is_the_noises_rate():
    sig = _two_leads(fs=500.0)
    pre = Preprocessing(fs=250.0, noise=Noise(kind="powerline", snr_db=0.0, powerline_hz=60.0))
    noise = _noise_of(pre, sig)
    f = np.fft.rfftfreq(noise.shape[-1], 1 / 250.0)
    assert f[np.argmax(np.abs(np.fft.rfft(noise[0])))] == pytest.approx(60.0)


def test_a_flat_lead_gets_no_noise_and_padding_stays_clean():
    x = np.stack([np.sin(np.arange(300) / 7.0), np.full(300, 4.2)])
    sig = Signal(x.astype(np.float32), 100.0, ("I", "II"))
    out = Preprocessing(length=400, noise=Noise(kind="gaussian", snr_db=0.0)).apply(sig, "r1")
    np.testing.assert_array_equal(out[1, :300], np.float32(4.2))
    assert (out[:, 300:] == 0).all()
    assert not np.allclose(out[0, :300], sig.data[0])


@pytest.mark.parametrize(
    "kwargs, location, message",
    [
        ({"kind": "pink", "snr_db": 3.0}, "kind", "Input should be 'gaussian', 'baseline_wander'"),
        ({"kind": "gaussian", "snr_db": float("nan")}, "snr_db", "should be a finite number"),
        ({"kind": "gaussian", "snr_db": "6"}, "snr_db", "Input should be a valid number"),
        ({"kind": "gaussian", "snr_db": 6.0, "seed": 1.5}, "seed", "should be a valid integer"),
        ({"kind": "gaussian", "snr_db": 6.0, "seed": True}, "seed", "should be a valid integer"),
        ({"kind": "powerline", "snr_db": 6.0, "powerline_hz": 0}, "powerline_hz", "greater than 0"),
    ],
)
def test_option_errors_name_the_option(kwargs, location, message):
    with pytest.raises(ValidationError) as e:
        Noise(**kwargs)
    text = str(e.value)
    assert f"\n{location}\n" in text and message in text


def test_rate_errors():
    sig100 = _two_leads(fs=100.0, seconds=1)
    with pytest.raises(
        ConfigError, match="noise.powerline_hz must be below the Nyquist frequency 50 Hz"
    ):
        Preprocessing(noise=Noise(kind="powerline", snr_db=6.0, powerline_hz=60.0)).apply(
            sig100, "r1"
        )
    with pytest.raises(
        ValidationError, match="noise.powerline_hz must be below .* 50 Hz of the 100 Hz"
    ):
        Preprocessing(fs=100.0, noise=Noise(kind="mixed", snr_db=6.0))  # known at construction
    Preprocessing(fs=100.0, noise=Noise(kind="gaussian", snr_db=6.0))  # no mains: no rule
    sig40 = _two_leads(fs=40.0, seconds=1)
    with pytest.raises(ConfigError, match="noise kind 'muscle' needs a rate above 40 Hz"):
        Preprocessing(noise=Noise(kind="muscle", snr_db=6.0)).apply(sig40, "r1")


def test_noise_needs_the_record_id():
    with pytest.raises(ConfigError, match="noise needs the record id"):
        Preprocessing(noise=Noise(kind="gaussian", snr_db=6.0)).apply(_two_leads(seconds=1))


def test_noise_from_a_mapping_names_unknown_and_missing_options():
    noise = Preprocessing(noise={"kind": "gaussian", "snr_db": 6}).noise
    assert noise == Noise(kind="gaussian", snr_db=6.0)
    with pytest.raises(ValidationError, match=r"noise.snr\n  Extra inputs are not permitted"):
        Preprocessing(noise={"kind": "gaussian", "snr": 6})
    with pytest.raises(ValidationError, match=r"noise.snr_db\n  Field required"):
        Preprocessing(noise={"kind": "gaussian"})
    # a key from meta.json that names an unknown option is a ConfigError naming it
    with pytest.raises(ConfigError, match=r"noise.snr: Extra inputs are not permitted"):
        Noise.from_key({"kind": "gaussian", "snr_db": 6, "snr": 1, "model": {}})


@pytest.mark.parametrize(
    "noise, fs, location, message",
    [
        ({"kind": "pink", "snr_db": 3}, None, "noise.kind", "Input should be 'gaussian'"),
        ({"kind": "gaussian"}, None, "noise.snr_db", "Field required"),
        ({"kind": "gaussian", "snr_db": float("inf")}, None, "noise.snr_db", "finite number"),
        ({"kind": "gaussian", "snr_db": 3, "snr": 1}, None, "noise.snr", "Extra inputs"),
        ({"kind": "powerline", "snr_db": 3, "powerline_hz": 60}, 100, "", "noise.powerline_hz"),
        ({"kind": "gaussian", "snr_db": 3, "seed": 1.5}, None, "noise.seed", "valid integer"),
    ],
)
def test_config_errors_at_load_name_the_key(noise, fs, location, message):
    with pytest.raises(ValidationError) as e:
        DatasetConfig(preprocessing={"fs": fs, "noise": noise})
    text = str(e.value)
    assert f"preprocessing.{location}".rstrip(".") in text and message in text


def test_the_config_is_the_step_and_enters_the_cache_key_with_its_constants():
    cfg = Preprocessing(noise={"kind": "muscle", "snr_db": 6, "seed": 2})
    assert not cfg.is_identity
    assert cfg.noise == Noise(kind="muscle", snr_db=6.0, seed=2)
    key = DatasetConfig(preprocessing=cfg).key()["preprocessing"]["noise"]
    assert {k: key[k] for k in ("kind", "snr_db", "seed", "powerline_hz")} == {
        "kind": "muscle",
        "snr_db": 6.0,
        "seed": 2,
        "powerline_hz": 50.0,
    }
    assert key["model"]["muscle_band"] == [20.0, 150.0]  # the code's constants too
