"""Per-record preprocessing: anti-aliased resampling, leads, crop/pad, normalisation,
band-pass, the cache key, and the CWT scalogram."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from study.data.config import DatasetConfig
from study.data.preprocess import Noise, Preprocessing, Scalogram, cwt_scalogram, resample_factors
from study.data.readers import BadRecord, Signal
from study.errors import ConfigError, DataError


def _sine(freq: float, fs: float, seconds: float = 10.0, amp: float = 1.0) -> Signal:
    t = np.arange(int(round(seconds * fs))) / fs
    return Signal((amp * np.sin(2 * np.pi * freq * t))[None].astype(np.float32), fs, ("II",))


def _amplitude_at(x: np.ndarray, fs: float, freq: float) -> float:
    """Amplitude of the `freq` component of `x` (Hann-windowed spectrum)."""
    w = np.hanning(x.size)
    spec = np.abs(np.fft.rfft(x * w)) * 2 / w.sum()
    f = np.fft.rfftfreq(x.size, 1 / fs)
    return float(spec[np.argmin(np.abs(f - freq))])


def _middle(x: np.ndarray) -> np.ndarray:
    n = x.shape[-1]
    return x[..., n // 10 : n - n // 10]


@pytest.mark.parametrize("fs, target, freq", [(500, 100, 5.0), (360, 250, 7.0)])
def test_resampling_keeps_frequency_and_amplitude(fs, target, freq):
    out = Preprocessing(fs=target).apply(_sine(freq, fs, amp=1.5))
    assert out.dtype == np.float32 and out.shape == (1, 10 * target)
    x = _middle(out[0])
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    peak = np.fft.rfftfreq(x.size, 1 / target)[np.argmax(spec)]
    assert peak == pytest.approx(freq, abs=0.15)
    assert np.abs(x).max() == pytest.approx(1.5, rel=0.02)
    t = np.arange(out.shape[1]) / target
    np.testing.assert_allclose(x, _middle(1.5 * np.sin(2 * np.pi * freq * t)), atol=0.02)


def test_resampling_removes_content_above_the_new_nyquist_without_aliasing():
    out = Preprocessing(fs=100).apply(_sine(70.0, 500))[0]  # 70 Hz > 50 Hz
    x = _middle(out)
    assert np.abs(x).max() < 0.05
    # plain decimation would fold 70 Hz to 100 - 70 = 30 Hz at full amplitude
    decimated = _sine(70.0, 500).data[0, ::5]
    assert _amplitude_at(_middle(decimated), 100, 30.0) > 0.9
    assert _amplitude_at(x, 100, 30.0) < 0.05


def test_resample_factors_are_rational():
    assert resample_factors(500, 100) == (1, 5)
    assert resample_factors(360, 250) == (25, 36)
    assert resample_factors(257, 100) == (100, 257)
    with pytest.raises(ConfigError, match=r"cannot resample 512.3 Hz to 100 Hz.*187/958"):
        resample_factors(512.3, 100)
    with pytest.raises(ConfigError, match="rates must be > 0"):
        resample_factors(0, 100)


def _three_leads() -> Signal:
    x = np.stack([np.arange(10.0), 10 + np.arange(10.0), 20 + np.arange(10.0)])
    return Signal(x.astype(np.float32), 100.0, ("I", "II", "V1"))


def test_leads_are_selected_and_ordered_by_name():
    out = Preprocessing(leads=("V1", "I")).apply(_three_leads())
    np.testing.assert_array_equal(out, _three_leads().data[[2, 0]])


def test_a_missing_lead_is_an_error_naming_it():
    pre = Preprocessing(leads=("I", "aVF"))
    with pytest.raises(DataError, match=r"\['aVF'\] not in the record's leads \['I', 'II', 'V1'\]"):
        pre.apply(_three_leads())
    with pytest.raises(BadRecord, match="record r7: lead") as e:
        pre.apply(_three_leads(), record_id="r7")
    assert "aVF" in e.value.reason


@pytest.mark.parametrize(
    "crop, first",
    [("center", 3), ("start", 0)],
)
def test_crop_rules(crop, first):
    out = Preprocessing(length=4, crop=crop).apply(_three_leads())
    np.testing.assert_array_equal(out[0], np.arange(first, first + 4))


def test_random_fixed_crop_is_seeded_by_the_record_id():
    pre = Preprocessing(length=4, crop="random-fixed")
    starts = {}
    for rid in [f"rec{i}" for i in range(20)]:
        a = pre.apply(_three_leads(), record_id=rid)
        b = pre.apply(_three_leads(), record_id=rid)
        np.testing.assert_array_equal(a, b)
        starts[rid] = int(a[0, 0])
        assert 0 <= starts[rid] <= 6
        np.testing.assert_array_equal(a[0], np.arange(starts[rid], starts[rid] + 4))
    assert len(set(starts.values())) > 2
    with pytest.raises(ConfigError, match="'random-fixed' needs the record id"):
        pre.apply(_three_leads())


def test_pad_at_the_end():
    zero = Preprocessing(length=13).apply(_three_leads())
    np.testing.assert_array_equal(zero[1], np.r_[10 + np.arange(10.0), 0, 0, 0])
    edge = Preprocessing(length=13, pad="edge").apply(_three_leads())
    np.testing.assert_array_equal(edge[1], np.r_[10 + np.arange(10.0), 19, 19, 19])
    same = Preprocessing(length=10).apply(_three_leads())
    np.testing.assert_array_equal(same, _three_leads().data)


def _with_flat_lead() -> Signal:
    rng = np.random.default_rng(0)
    x = np.stack([3 + 2 * rng.standard_normal(500), np.full(500, 4.2), rng.uniform(-1, 5, 500)])
    return Signal(x.astype(np.float32), 100.0, ("I", "II", "III"))


def test_zscore_per_lead_and_a_flat_lead_stays_zero():
    out = Preprocessing(normalize="zscore").apply(_with_flat_lead())
    np.testing.assert_allclose(out[[0, 2]].mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(out[[0, 2]].std(axis=1), 1, atol=1e-4)
    assert (out[1] == 0).all()


def test_minmax_per_lead_and_a_flat_lead_stays_zero():
    out = Preprocessing(normalize="minmax").apply(_with_flat_lead())
    np.testing.assert_allclose(out[[0, 2]].min(axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(out[[0, 2]].max(axis=1), 1, atol=1e-6)
    assert (out[1] == 0).all()


def test_normalisation_ignores_padding():
    out = Preprocessing(length=15, normalize="zscore").apply(_three_leads())
    np.testing.assert_allclose(out[0, :10].mean(), 0, atol=1e-6)
    assert (out[0, 10:] == 0).all()


def test_bandpass_removes_baseline_wander():
    fs = 500.0
    t = np.arange(int(20 * fs)) / fs
    ecg_like = np.sin(2 * np.pi * 10 * t)
    wander = 2.0 * np.sin(2 * np.pi * 0.1 * t) + 0.5
    sig = Signal((ecg_like + wander)[None].astype(np.float32), fs, ("I",))
    out = Preprocessing(bandpass=(0.5, 40.0)).apply(sig)[0]
    np.testing.assert_allclose(_middle(out), _middle(ecg_like), atol=0.05)
    assert _amplitude_at(_middle(out), fs, 0.1) < 0.02
    lowpass = Preprocessing(bandpass=(0.0, 5.0)).apply(sig)[0]  # low edge 0: low-pass
    np.testing.assert_allclose(_middle(lowpass), _middle(wander), atol=0.05)


def test_bandpass_errors():
    with pytest.raises(ConfigError, match="below the Nyquist frequency 50 Hz of a 100 Hz"):
        Preprocessing(bandpass=(0.5, 60.0)).apply(_three_leads())
    short = Signal(np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32), 500, ("I",))
    with pytest.raises(BadRecord, match="record s1: record of 8 samples is too short"):
        Preprocessing(bandpass=(0.5, 40.0)).apply(short, record_id="s1")


def test_key_is_json_and_changes_with_every_option():
    variants = [
        Preprocessing(),
        Preprocessing(fs=100),
        Preprocessing(fs=250),
        Preprocessing(leads=("I",)),
        Preprocessing(leads=("II", "I")),
        Preprocessing(length=1000),
        Preprocessing(length=1000, crop="start"),
        Preprocessing(length=1000, crop="random-fixed"),
        Preprocessing(length=1000, pad="edge"),
        Preprocessing(normalize="zscore"),
        Preprocessing(normalize="minmax"),
        Preprocessing(bandpass=(0.5, 40.0)),
        Preprocessing(bandpass=(1.0, 40.0)),
        Preprocessing(crop="start"),
        Preprocessing(pad="edge"),
        Preprocessing(noise=Noise(kind="gaussian", snr_db=6.0)),
        Preprocessing(noise=Noise(kind="gaussian", snr_db=12.0)),
        Preprocessing(noise=Noise(kind="gaussian", snr_db=6.0, seed=1)),
        Preprocessing(noise=Noise(kind="powerline", snr_db=6.0)),
        Preprocessing(noise=Noise(kind="powerline", snr_db=6.0, powerline_hz=60.0)),
        Preprocessing(noise=Noise(kind="baseline_wander", snr_db=6.0)),
        Preprocessing(noise=Noise(kind="muscle", snr_db=6.0)),
        Preprocessing(noise=Noise(kind="mixed", snr_db=6.0)),
        Preprocessing(scalogram=Scalogram()),
        Preprocessing(scalogram=Scalogram(wavelet="morl")),
        Preprocessing(scalogram=Scalogram(freqs=(0.5, 40.0))),
        Preprocessing(scalogram=Scalogram(n_scales=32)),
        Preprocessing(scalogram=Scalogram(size=(227, 227))),
        Preprocessing(scalogram=Scalogram(channels=3)),
        Preprocessing(scalogram=Scalogram(channels=3, colormap="jet")),
        Preprocessing(scalogram=Scalogram(scaling="max")),
        Preprocessing(
            fs=250,
            leads=("II",),
            length=1250,
            normalize="zscore",
            noise=Noise(kind="mixed", snr_db=0.0, seed=5, powerline_hz=60.0),
            scalogram=Scalogram(channels=3, colormap="viridis"),
        ),
    ]
    keys = [json.dumps(p.key(), sort_keys=True) for p in variants]
    assert len(set(keys)) == len(keys)
    for p in variants:
        assert Preprocessing.from_key(json.loads(json.dumps(p.key()))) == p


def test_steps_that_are_off_stay_out_of_the_key():
    # keys made before noise and scalogram existed still describe the same preprocessing
    assert {"noise", "scalogram"}.isdisjoint(Preprocessing(fs=100).key())
    old = {k: v for k, v in Preprocessing(fs=100).key().items()}
    assert Preprocessing.from_key(old) == Preprocessing(fs=100)
    assert {"noise", "scalogram"}.isdisjoint(DatasetConfig().key()["preprocessing"])


def test_the_config_round_trips_through_its_key_and_json():
    cfg = Preprocessing(
        fs=250,
        leads=["II"],
        length=1250,
        normalize="zscore",
        noise={"kind": "muscle", "snr_db": 3, "seed": 9},
        scalogram={"size": [227, 227], "channels": 3},
    )
    assert cfg.noise == Noise(kind="muscle", snr_db=3.0, seed=9)
    assert cfg.scalogram == Scalogram(size=(227, 227), channels=3)
    assert Preprocessing.from_key(json.loads(json.dumps(cfg.key()))) == cfg
    assert Preprocessing.model_validate(cfg.model_dump(mode="json")) == cfg
    assert Preprocessing().is_identity and not cfg.is_identity
    assert not Preprocessing(scalogram={}).is_identity


def test_lists_from_a_config_become_tuples():
    p = Preprocessing(leads=["I", "II"], bandpass=[0.5, 40])
    assert p.leads == ("I", "II") and p.bandpass == (0.5, 40.0)
    assert p == Preprocessing(leads=("I", "II"), bandpass=(0.5, 40.0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fs": 0}, "fs\n  Input should be greater than 0"),
        ({"length": 0}, "length\n  Input should be greater than or equal to 1"),
        ({"length": 2.5}, "length\n  Input should be a valid integer"),
        ({"crop": "middle"}, "crop\n  Input should be 'center', 'start' or 'random-fixed'"),
        ({"pad": "reflect"}, "pad\n  Input should be 'zero' or 'edge'"),
        ({"normalize": "l2"}, "normalize\n  Input should be 'zscore' or 'minmax'"),
        ({"bandpass": (40.0, 0.5)}, r"bandpass must be \(low, high\) Hz with 0 <= low < high"),
        ({"leads": ("I", "I")}, "leads must not repeat a name"),
        ({"leads": "I"}, "leads must be a sequence of lead names, got 'I'"),
        ({"leads": ()}, "leads must be non-empty"),
        ({"fs": 100, "bandpass": (0.5, 60.0)}, "below the target Nyquist frequency 50 Hz"),
    ],
)
def test_option_errors_name_the_rule_and_value(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        Preprocessing(**kwargs)


def test_from_key_rejects_unknown_options():
    key = Preprocessing().key() | {"window": 3}
    with pytest.raises(ConfigError, match="preprocessing.window: Extra inputs are not permitted"):
        Preprocessing.from_key(key)
    key = Preprocessing(scalogram=Scalogram()).key()
    key["scalogram"]["height"] = 3
    with pytest.raises(ConfigError, match="scalogram.height: Extra inputs are not permitted"):
        Preprocessing.from_key(key)
    with pytest.raises(ValidationError, match="noise\n  Input should be a valid dictionary"):
        Preprocessing(noise="gaussian")


# --- CWT scalogram --------------------------------------------------------------------------


@pytest.fixture()
def pywt():
    return pytest.importorskip("pywt", reason="cwt_scalogram needs PyWavelets")


def test_scalogram_shapes(pywt):
    x = _sine(10.0, 250.0, seconds=5).data[0]
    freqs = np.linspace(1, 50, 40)
    s = cwt_scalogram(x, 250.0, freqs=freqs)
    assert s.dtype == np.float32 and s.shape == (40, 1250)
    assert cwt_scalogram(x[None], 250.0, scales=np.arange(1, 33)).shape == (32, 1250)
    resized = cwt_scalogram(x, 250.0, freqs=freqs, size=(64, 128))
    assert resized.dtype == np.float32 and resized.shape == (64, 128)


@pytest.mark.parametrize("freq", [5.0, 12.0, 25.0])
def test_scalogram_energy_peaks_at_the_sines_frequency(pywt, freq):
    fs = 250.0
    x = _sine(freq, fs, seconds=5).data[0]
    freqs = np.arange(1.0, 60.0, 1.0)
    s = cwt_scalogram(x, fs, freqs=freqs)
    energy = (_middle(s) ** 2).mean(axis=1)
    assert freqs[np.argmax(energy)] == pytest.approx(freq, abs=1.0)
    # and the same through scales: the row of scale central_frequency * fs / freq
    scales = pywt.central_frequency("morl") * fs / freqs
    by_scale = cwt_scalogram(x, fs, scales=scales)
    np.testing.assert_allclose(by_scale, s, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"freqs": [5.0], "scales": [1.0]}, ConfigError, "exactly one of scales and freqs"),
        ({}, ConfigError, "exactly one of scales and freqs"),
        ({"freqs": [200.0]}, ConfigError, r"freqs must be in \(0, 125\) Hz"),
        ({"scales": [0.0, 1.0]}, ConfigError, "scales must be > 0"),
        ({"freqs": [5.0], "wavelet": "db4"}, ConfigError, "wavelet must be a continuous"),
        ({"freqs": [5.0], "wavelet": "cmor"}, ConfigError, "with their parameters"),
        ({"freqs": [5.0], "norm": "l3"}, ConfigError, "norm must be 'energy' or 'amplitude'"),
        ({"freqs": [5.0], "size": (0, 10)}, ConfigError, "size must be"),
    ],
)
def test_scalogram_errors(pywt, kwargs, error, message):
    x = _sine(10.0, 250.0, seconds=1).data[0]
    with pytest.raises(error, match=message):
        cwt_scalogram(x, 250.0, **kwargs)


def test_amplitude_norm_gives_sines_of_equal_amplitude_equal_rows(pywt):
    fs = 250.0
    t = np.arange(1250) / fs
    freqs = np.array([4.0, 16.0])
    x = np.sin(2 * np.pi * 4.0 * t) + np.sin(2 * np.pi * 16.0 * t)
    for wavelet in ("cmor1.5-1.0", "morl"):
        amp = _middle(cwt_scalogram(x, fs, freqs=freqs, wavelet=wavelet, norm="amplitude"))
        assert amp[0].mean() / amp[1].mean() == pytest.approx(1.0, rel=0.03)
    energy = _middle(cwt_scalogram(x, fs, freqs=freqs, wavelet="cmor1.5-1.0"))
    assert energy[0].mean() / energy[1].mean() == pytest.approx(2.0, rel=0.03)  # sqrt(16 / 4)


def test_extension_keeps_an_offset_from_lighting_up_the_edges(pywt):
    # zeros outside the record make a lead's offset a step at each edge; a mirrored
    # extension does not
    fs = 250.0
    x = 5.0 + np.sin(2 * np.pi * 10.0 * np.arange(1250) / fs)
    kw = {"freqs": [1.0, 10.0], "wavelet": "cmor1.5-1.0", "norm": "amplitude"}
    low = cwt_scalogram(x, fs, **kw)[0]
    assert low.max() < 0.05 * cwt_scalogram(x, fs, **kw)[1].mean()
    zeros = cwt_scalogram(x, fs, extend=False, **kw)[0]
    assert zeros[:10].mean() > 10 * low.max()


def test_scalogram_takes_a_single_lead(pywt):
    with pytest.raises(DataError, match=r"one lead .* got \(2, 250\)"):
        cwt_scalogram(np.zeros((2, 250)), 250.0, freqs=[5.0])
