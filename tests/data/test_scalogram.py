"""The scalogram step (preprocessing step 8): where a tone lands, shape, range, channels,
the one-lead rule, and the errors. `cwt_scalogram` itself: tests/data/test_preprocess.py."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from pydantic import ValidationError

from study.data.config import DatasetConfig
from study.data.preprocess import Noise, Preprocessing, Scalogram, cwt_scalogram
from study.data.readers import Signal
from study.errors import ConfigError

pytest.importorskip("pywt", reason="the scalogram needs PyWavelets")

FS = 250.0


def _tone(freq: float, fs: float = FS, seconds: float = 5.0, offset: float = 0.0) -> Signal:
    t = np.arange(int(round(seconds * fs))) / fs
    return Signal((np.sin(2 * np.pi * freq * t) + offset)[None].astype(np.float32), fs, ("II",))


def _row_energy(img: np.ndarray) -> np.ndarray:
    w = img.shape[-1]
    return (img[..., w // 10 : w - w // 10] ** 2).mean(axis=-1)  # edges left out


@pytest.mark.parametrize("freq", [2.0, 5.5, 11.0, 23.0, 37.0])
def test_a_tone_peaks_in_the_row_nearest_its_frequency(freq):
    # no vertical resizing: the peak is the CWT row nearest the tone (on a log axis)
    scal = Scalogram(n_scales=96, size=(96, 128))
    img = Preprocessing(scalogram=scal).apply(_tone(freq, offset=2.0), "r1")[0]
    rows = scal.frequencies()
    np.testing.assert_allclose(rows, scal.row_freqs())
    assert np.argmax(_row_energy(img)) == np.argmin(np.abs(np.log(rows / freq)))


@pytest.mark.parametrize("freq", [2.0, 11.0, 37.0])
def test_resized_rows_keep_their_frequencies(freq):
    # 64 CWT rows resized to 224: the peak stays at the CWT row nearest the tone, and
    # frequencies() names the output rows (geometric from fmax at row 0 to fmin)
    scal = Scalogram()
    img = Preprocessing(scalogram=scal).apply(_tone(freq), "r1")[0]
    out = scal.frequencies()
    assert out[0] == pytest.approx(40.0) and out[-1] == pytest.approx(1.0) and out.size == 224
    cwt_row = scal.row_freqs()[np.argmin(np.abs(np.log(scal.row_freqs() / freq)))]
    half_row = np.log(out[0] / out[1]) / 2
    assert abs(np.log(out[np.argmax(_row_energy(img))] / cwt_row)) <= half_row + 1e-9


def test_shape_dtype_and_range():
    sig = _tone(8.0)
    grey = Preprocessing(scalogram=Scalogram()).apply(sig, "r1")
    assert grey.shape == (1, 224, 224) and grey.dtype == np.float32
    assert grey.min() == 0.0 and grey.max() == pytest.approx(1.0)
    by_max = Preprocessing(scalogram=Scalogram(scaling="max")).apply(sig, "r1")
    assert by_max.max() == pytest.approx(1.0) and by_max.min() > 0.0  # 0 is "no energy"
    raw = cwt_scalogram(
        sig.data,
        FS,
        freqs=Scalogram().row_freqs(),
        wavelet="cmor1.5-1.0",
        size=(224, 224),
        norm="amplitude",
    )
    np.testing.assert_allclose(by_max[0], raw / raw.max(), rtol=1e-5, atol=1e-6)
    small = Preprocessing(scalogram={"size": (32, 48), "n_scales": 16}).apply(sig, "r1")
    assert small.shape == (1, 32, 48)


def test_three_channels_repeat_the_grey_image_or_map_it_to_colour():
    sig = _tone(8.0)
    grey = Preprocessing(scalogram=Scalogram()).apply(sig, "r1")
    rgb = Preprocessing(scalogram=Scalogram(channels=3)).apply(sig, "r1")
    assert rgb.shape == (3, 224, 224) and rgb.dtype == np.float32
    for c in rgb:
        np.testing.assert_array_equal(c, grey[0])
    jet = Preprocessing(scalogram=Scalogram(channels=3, colormap="jet")).apply(sig, "r1")
    assert jet.shape == (3, 224, 224) and 0.0 <= jet.min() and jet.max() <= 1.0
    expected = np.moveaxis(matplotlib.colormaps["jet"](grey[0].astype(np.float64))[..., :3], -1, 0)
    np.testing.assert_allclose(jet, expected, atol=1e-6)
    assert not np.allclose(jet[0], jet[2])


def test_real_morlet_is_offered_too():
    img = Preprocessing(scalogram=Scalogram(wavelet="morl")).apply(_tone(8.0), "r1")
    assert img.shape == (1, 224, 224) and img.max() == pytest.approx(1.0)


def test_a_flat_lead_gives_an_all_zero_image():
    flat = Signal(np.full((1, 1250), 3.0, dtype=np.float32), FS, ("II",))
    assert (Preprocessing(scalogram=Scalogram()).apply(flat, "r1") == 0).all()


def test_the_scalogram_comes_last_after_noise_and_length():
    sig = Signal(
        np.random.default_rng(0).standard_normal((3, 5000)).astype(np.float32),
        500,
        ("I", "II", "V1"),
    )
    pre = Preprocessing(
        fs=250,
        leads=("II",),
        length=1250,
        normalize="zscore",
        noise=Noise(kind="powerline", snr_db=0.0, powerline_hz=50.0),
        scalogram=Scalogram(),
    )
    a = pre.apply(sig, "r1")
    assert a.shape == (1, 224, 224)
    np.testing.assert_array_equal(a, pre.apply(sig, "r1"))
    assert not np.array_equal(a, pre.apply(sig, "r2"))  # the noise differs per record


def test_more_than_one_lead_is_an_error_naming_the_record():
    x = np.random.default_rng(0).standard_normal((3, 1250)).astype(np.float32)
    sig = Signal(x, FS, ("I", "II", "V1"))
    with pytest.raises(
        ConfigError,
        match=r"record r7: the scalogram takes exactly one lead, got 3 \['I', 'II', 'V1'\]; "
        r"set preprocessing.leads to one lead",
    ):
        Preprocessing(scalogram=Scalogram()).apply(sig, "r7")
    assert Preprocessing(leads=("V1",), scalogram=Scalogram()).apply(sig, "r7").shape == (
        1,
        224,
        224,
    )
    with pytest.raises(ValidationError, match=r"leads must name one, got \['I', 'II'\]"):
        Preprocessing(leads=("I", "II"), scalogram=Scalogram())


def test_fmax_must_lie_below_the_nyquist_frequency_after_resampling():
    with pytest.raises(
        ConfigError,
        match="scalogram.freqs: fmax must be below the Nyquist frequency 50 Hz of the 100 Hz",
    ):
        Preprocessing(scalogram=Scalogram(freqs=(1.0, 60.0))).apply(_tone(5.0, fs=100.0), "r1")
    with pytest.raises(ValidationError, match="Nyquist frequency 50 Hz"):
        Preprocessing(fs=100.0, scalogram=Scalogram(freqs=(1.0, 60.0)))  # known at construction
    ok = Preprocessing(fs=250.0, scalogram=Scalogram(freqs=(1.0, 60.0)))
    assert ok.apply(_tone(5.0, fs=100.0), "r1").shape == (1, 224, 224)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"wavelet": "db4"}, "wavelet\n  Value error, wavelet must be a continuous PyWavelets"),
        ({"wavelet": "cmor"}, r"wavelet must be .* e.g. 'cmor1.5-1.0'"),
        ({"freqs": (40.0, 1.0)}, r"freqs must be \(fmin, fmax\) Hz with 0 < fmin < fmax"),
        ({"freqs": (0.0, 40.0)}, "freqs must be"),
        ({"freqs": (1.0,)}, "freqs.1\n  Field required"),
        ({"n_scales": 1}, "n_scales\n  Input should be greater than or equal to 2"),
        ({"size": (224, 0)}, r"size.1\n  Input should be greater than or equal to 1"),
        ({"size": (224.0, 224)}, "size.0\n  Input should be a valid integer"),
        ({"channels": 2}, "channels\n  Input should be 1 or 3"),
        ({"channels": 3, "colormap": "hot"}, r"colormap\n  Input should be 'jet' or 'viridis'"),
        ({"colormap": "jet"}, "it needs channels 3, got 1"),
        ({"scaling": "zscore"}, r"scaling\n  Input should be 'minmax' or 'max'"),
    ],
)
def test_option_errors_name_the_option(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        Scalogram(**kwargs)


@pytest.mark.parametrize(
    "pre, location, message",
    [
        ({"scalogram": {"freqs": [40, 1]}}, "preprocessing.scalogram.freqs", "freqs must be"),
        ({"scalogram": {"n_scale": 3}}, "preprocessing.scalogram.n_scale", "Extra inputs"),
        (
            {"scalogram": {"n_scales": 1}},
            "preprocessing.scalogram.n_scales",
            "greater than or equal to 2",
        ),
        (
            {"scalogram": {"channels": 2}},
            "preprocessing.scalogram.channels",
            "Input should be 1 or 3",
        ),
        (
            {"scalogram": {"colormap": "hot"}},
            "preprocessing.scalogram.colormap",
            "'jet' or 'viridis'",
        ),
        ({"scalogram": {"wavelet": "db4"}}, "preprocessing.scalogram.wavelet", "wavelet must be"),
        ({"scalogram": {"colormap": "jet"}}, "preprocessing.scalogram", "needs channels 3"),
        ({"fs": 100, "scalogram": {"freqs": [1, 60]}}, "preprocessing", "scalogram.freqs: fmax"),
        ({"leads": ["I", "II"], "scalogram": {}}, "preprocessing", "leads must name one"),
    ],
)
def test_config_errors_at_load_name_the_key(pre, location, message):
    with pytest.raises(ValidationError) as e:
        DatasetConfig(preprocessing=pre)
    text = str(e.value)
    assert location in text and message in text


def test_the_config_is_the_step_and_enters_the_cache_key_with_its_constants():
    cfg = Preprocessing(leads=["II"], scalogram={"channels": 3, "colormap": "viridis"})
    assert not cfg.is_identity
    assert cfg.scalogram == Scalogram(channels=3, colormap="viridis")
    key = DatasetConfig(preprocessing=cfg).key()["preprocessing"]["scalogram"]
    assert key.pop("method") == {
        "spacing": "geometric",
        "norm": "amplitude",
        "extend": "symmetric, half the record each side",
        "resize": "scipy.ndimage.zoom order=1 mode=nearest",
    }
    assert key == {
        "wavelet": "cmor1.5-1.0",
        "freqs": [1.0, 40.0],
        "n_scales": 64,
        "size": [224, 224],
        "channels": 3,
        "colormap": "viridis",
        "scaling": "minmax",
    }
