"""Checks of the paper architectures against their definitions: Nguyen & Do's ResNets and
recurrent nets, Weimann & Conrad's ResNets, Huerta et al.'s AlexNet, the lead-II autoencoder,
and the QRS U-Net with its peak picking.

Every registered architecture has its parameter count computed by hand from a layer list
(`HAND_COUNTED`), at its paper's input: a wrong width or head moves the count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from study.errors import ConfigError, DataError
from study.models import create_model, list_models
from study.models.alexnet2d import LAYERS
from study.models.resnet_v2 import SameConv1d, SameMaxPool1d, resnet18v2
from study.models.unet1d import qrs_positions

torch.set_num_threads(1)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):  # sizes only, no storage: full-size models build instantly
        return create_model(name, **kwargs)


# ---- hand counts from the reference layer lists -------------------------------------------


def conv(cin: int, cout: int, k: int, bias: bool = False) -> int:
    return cin * cout * k + (cout if bias else 0)


def conv2d(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout  # torchvision's AlexNet convs have a bias


def bn(c: int) -> int:
    return 2 * c


def linear(fin: int, fout: int) -> int:
    return fin * fout + fout


def conv_transpose(cin: int, cout: int, k: int, bias: bool = False) -> int:
    return cin * cout * k + (cout if bias else 0)


def recurrent(gates: int, cin: int, hidden: int) -> int:
    """One direction of one nn.GRU (3 gates) / nn.LSTM (4 gates) layer, both biases."""
    return gates * (hidden * cin + hidden * hidden + 2 * hidden)


def weimann_resnet(blocks: tuple[int, ...], bottleneck: bool, leads: int, classes: int) -> int:
    """transplant/modules/resnet1d.py: ResNet(blocks, kernel_size=(7, 5, 5, 3)) + Dense."""
    n = conv(leads, 64, 7) + bn(64)  # conv1, bn1
    cin = 64
    for stage, (count, filters, k) in enumerate(
        zip(blocks, (64, 128, 256, 512), (7, 5, 5, 3), strict=True)
    ):
        for b in range(count):
            stride = 2 if b == 0 and stage > 0 else 1
            out = filters * (4 if bottleneck else 1)
            if bottleneck:
                n += conv(cin, filters, 1) + bn(filters)
                n += conv(filters, filters, k) + bn(filters)
                n += conv(filters, out, 1) + bn(out)
            else:
                n += conv(cin, filters, k) + bn(filters) + conv(filters, filters, k) + bn(filters)
            if cin != out or stride > 1:  # their projection rule
                n += conv(cin, out, 1) + bn(out)
            cin = out
    return n + linear(cin, classes)


@pytest.mark.parametrize(
    ("name", "blocks", "bottleneck", "expected"),
    [
        ("resnet18v2", (2, 2, 2, 2), False, 4_483_906),
        ("resnet34v2", (3, 4, 6, 3), False, 9_070_658),
        ("resnet50v2", (3, 4, 6, 3), True, 16_924_994),
    ],
)
def test_resnet_v2_parameter_count(name, blocks, bottleneck, expected) -> None:
    assert weimann_resnet(blocks, bottleneck, leads=1, classes=2) == expected
    assert _count(_meta(name, in_channels=1, num_classes=2)) == expected
    # Their fine-tuning input: one lead, CinC 2017's four classes (N, A, O, ~).
    four = weimann_resnet(blocks, bottleneck, leads=1, classes=4)
    assert _count(_meta(name, in_channels=1, num_classes=4)) == four
    twelve = weimann_resnet(blocks, bottleneck, leads=12, classes=5)
    assert _count(_meta(name, in_channels=12, num_classes=5)) == twelve


# ---- Nguyen & Do 2024 (cuongvng/transfer-learning-ecg-diagnosis) --------------------------

# Their input: 12 leads x 1000 samples (100 Hz x 10 s); their default num_classes=5 (PTB-XL
# superdiagnostic). Counts derived by hand from their layer lists at 12 leads / 5 classes:
#   resnet1d18   4,114,053  (trunk 3,848,832; head 512 -> 512 -> 5: 262,656 + 2,565)
#   resnet1d50  17,010,821  (trunk 15,959,168; head 2048 -> 512 -> 5: 1,049,088 + 2,565)
#   resnet1d101 29,318,277  (trunk 28,266,624; head as resnet1d50)
#   gru            534,205  (GRU(12, 100) 34,200; Linear(1000 * 100, 5) 500,005)
#   lstm           545,605  (LSTM(12, 100) 45,600; Linear(1000 * 100, 5) 500,005)
#   bilstm       1,091,205  (2 x 45,600; Linear(1000 * 200, 5) 1,000,005)
# Before the head was fixed (hidden layer Linear(2048, 2048)), resnet1d50 had 20,165,765 and
# resnet1d101 32,473,221.
NGUYEN_DO = {"in_channels": 12, "num_classes": 5, "input_length": 1000}


def nguyen_do_resnet(blocks: tuple[int, ...], bottleneck: bool, leads: int, classes: int) -> int:
    """pretrain/resnet50.py, downstream/resnet1d101.py, downstream/resnet1d18.py: torchvision's
    ResNet in 1-D (stem conv k7 + BN, Bottleneck width = planes, stride on the 3-tap conv,
    conv1x1 + BN downsample when stride != 1 or inplanes != planes * expansion), then
    avgpool -> fc1 = Linear(512 * expansion, embedding_size=512) -> ReLU -> fc2."""
    expansion = 4 if bottleneck else 1
    n = conv(leads, 64, 7) + bn(64)  # conv1, bn1
    inplanes = 64
    for stage, (count, planes) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
        for b in range(count):
            stride = 2 if b == 0 and stage > 0 else 1
            out = planes * expansion
            if bottleneck:
                n += conv(inplanes, planes, 1) + bn(planes)
                n += conv(planes, planes, 3) + bn(planes)
                n += conv(planes, out, 1) + bn(out)
            else:
                n += conv(inplanes, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
            if stride != 1 or inplanes != out:  # their _make_layer rule
                n += conv(inplanes, out, 1) + bn(out)
            inplanes = out
    return n + linear(512 * expansion, 512) + linear(512, classes)


def nguyen_do_recurrent(gates: int, directions: int, leads: int, classes: int) -> int:
    """pretrain/lstm.py (LSTM, BiLSTM), downstream/gru.py: one layer of hidden 100 (their
    dropout=0.3 has no parameters and no effect on one layer), then fc = Linear(seq_len *
    directions * 100, classes) over every time step, seq_len 1000."""
    return directions * recurrent(gates, leads, 100) + linear(1000 * directions * 100, classes)


@pytest.mark.parametrize(
    ("name", "authors", "expected"),
    [
        ("resnet1d18", lambda c: nguyen_do_resnet((2, 2, 2, 2), False, 12, c), 4_114_053),
        ("resnet1d50", lambda c: nguyen_do_resnet((3, 4, 6, 3), True, 12, c), 17_010_821),
        ("resnet1d101", lambda c: nguyen_do_resnet((3, 4, 23, 3), True, 12, c), 29_318_277),
        ("gru", lambda c: nguyen_do_recurrent(3, 1, 12, c), 534_205),
        ("lstm", lambda c: nguyen_do_recurrent(4, 1, 12, c), 545_605),
        ("bilstm", lambda c: nguyen_do_recurrent(4, 2, 12, c), 1_091_205),
    ],
)
def test_nguyen_do_parameter_count(name, authors, expected) -> None:
    assert authors(5) == expected  # the authors' model at their num_classes=5
    assert _count(_meta(name, **NGUYEN_DO)) == expected
    # Their downstream heads (CPSC 2018: 9 classes, Georgia: 10, PTB: 2) replace only fc2/fc.
    for classes in (9, 10, 2):
        assert _count(_meta(name, **(NGUYEN_DO | {"num_classes": classes}))) == authors(classes)


def test_nguyen_do_resnet_head_is_the_authors() -> None:
    model = _meta("resnet1d50", **NGUYEN_DO)
    assert (model.head.hidden.in_features, model.head.hidden.out_features) == (2048, 512)
    assert (model.head.fc.in_features, model.head.fc.out_features) == (512, 5)
    assert model.config["options"] == {"base_width": 64, "embedding_size": 512}
    narrow = _meta("resnet1d18", **NGUYEN_DO, embedding_size=128)
    assert narrow.head.hidden.out_features == narrow.head.fc.in_features == 128
    with pytest.raises(ConfigError, match="embedding_size must be a positive int for resnet1d18"):
        _meta("resnet1d18", **NGUYEN_DO, embedding_size=0)


# ---- cae and unet1d: our layer lists (no reference code) ----------------------------------


def cae(leads: int, classes: int, base: int, depth: int, k: int, decoder: bool) -> int:
    """autoencoder.py's layer list: stem, `depth` stride-2 stages, pooled linear head, and
    the mirrored decoder (transposed convs without bias, then a biased output conv)."""
    widths = [base * 2**i for i in range(depth + 1)]
    n = conv(leads, widths[0], k) + bn(widths[0])
    n += sum(conv(widths[i], widths[i + 1], k) + bn(widths[i + 1]) for i in range(depth))
    n += linear(widths[-1], classes)
    if decoder:
        n += sum(conv_transpose(widths[i + 1], widths[i], k) + bn(widths[i]) for i in range(depth))
        n += conv(widths[0], leads, k, bias=True)
    return n


def unet(leads: int, classes: int, base: int, depth: int, k: int) -> int:
    """unet1d.py's layer list: double convs down, per level a biased transposed conv x2 and
    a double conv up, a per-sample linear head."""

    def double(cin: int, cout: int) -> int:
        return conv(cin, cout, k) + bn(cout) + conv(cout, cout, k) + bn(cout)

    widths = [base * 2**i for i in range(depth + 1)]
    n = double(leads, widths[0])
    n += sum(double(widths[i], widths[i + 1]) for i in range(depth))
    for i in range(depth):
        c = widths[i + 1]
        n += conv_transpose(c, c // 2, 2, bias=True) + double(c, c // 2)
    return n + linear(widths[0], classes)


def test_cae_parameter_count() -> None:
    # Jang et al.: lead II, Chapman's 11 rhythm classes, base_width 16, depth 4 (jang_2021.yaml).
    paper = {"in_channels": 1, "num_classes": 11, "base_width": 16, "depth": 4}
    assert _count(_meta("cae", **paper)) == cae(1, 11, 16, 4, 7, True) == 613_804
    no_decoder = _meta("cae", **paper, with_decoder=False)
    assert _count(no_decoder) == cae(1, 11, 16, 4, 7, False) == 308_571


def test_unet1d_parameter_count() -> None:
    # The QRS study: one lead (CPSC 2019), one logit per sample, the defaults (qrs_noise.yaml).
    assert _count(_meta("unet1d", in_channels=1, num_classes=1)) == unet(1, 1, 16, 4, 9)
    assert unet(1, 1, 16, 4, 9) == 1_855_249


#: Every registered architecture, by the test that counts its parameters by hand.
HAND_COUNTED = {
    *("resnet1d18", "resnet1d50", "resnet1d101", "gru", "lstm", "bilstm"),  # nguyen_do
    *("resnet18v2", "resnet34v2", "resnet50v2"),  # test_resnet_v2_parameter_count
    "alexnet2d",  # test_alexnet2d_parameter_count
    "cae",  # test_cae_parameter_count
    "unet1d",  # test_unet1d_parameter_count
}


def test_every_registered_architecture_is_counted_by_hand() -> None:
    assert sorted(HAND_COUNTED) == list_models()


def test_resnet_v2_defaults_to_one_lead_and_a_single_linear_head() -> None:
    with torch.device("meta"):  # the factory's default is one lead (create_model needs it named)
        model = resnet18v2(num_classes=3)
    assert model.in_channels == 1
    assert model.freeze_groups == ("stem", "stages.0", "stages.1", "stages.2", "stages.3")
    assert [type(m) for m in model.head] == [nn.AdaptiveAvgPool1d, nn.Flatten, nn.Linear]
    kernels = [model.stages[i][0].conv1.kernel_size[0] for i in range(4)]
    assert kernels == [7, 5, 5, 3]
    # ResNet-18/34: no projection in the first block (64 -> 64, stride 1); ResNet-50 has one.
    assert model.stages[0][0].proj_conv is None
    assert _meta("resnet50v2", in_channels=1, num_classes=3).stages[0][0].proj_conv is not None


def test_resnet_v2_blocks_are_post_activation() -> None:
    # Their blocks end in ReLU(bn2(conv2(.)) + shortcut): every block output is >= 0
    # (a pre-activation block would end in a bare addition).
    torch.manual_seed(0)
    model = create_model("resnet18v2", in_channels=1, num_classes=2, base_width=4)
    outputs = []
    for stage in model.stages:
        for block in stage:
            block.register_forward_hook(lambda m, i, o: outputs.append(o))
    model(torch.randn(2, 1, 300))
    assert len(outputs) == 8
    assert all(bool((o >= 0).all()) for o in outputs)


@pytest.mark.parametrize("length", [10, 11, 64, 65])
def test_same_padding_matches_keras(length: int) -> None:
    # Keras 'same' with stride 2: output ceil(L / 2); the odd padding sample goes right, so
    # with a kernel that reads only its first tap, output j reads x[2j - left],
    # left = total // 2, total = (ceil(L/2) - 1) * 2 + k - L.
    x = torch.arange(1.0, length + 1).reshape(1, 1, length)
    out_len = -(-length // 2)
    for k in (7, 5, 3):
        layer = SameConv1d(1, 1, k, 2)
        with torch.no_grad():
            layer.weight.zero_()
            layer.weight[0, 0, 0] = 1.0
        left = ((out_len - 1) * 2 + k - length) // 2
        expected = [
            x[0, 0, 2 * j - left].item() if 2 * j - left >= 0 else 0.0 for j in range(out_len)
        ]
        assert layer(x)[0, 0].tolist() == expected
    pooled = SameMaxPool1d(3, 2)(x)[0, 0].tolist()
    total = (out_len - 1) * 2 + 3 - length
    assert pooled == [float(min(2 * j - total // 2 + 3, length)) for j in range(out_len)]


# ---- alexnet2d ----------------------------------------------------------------------------


def alexnet(channels: int, classes: int) -> int:
    """torchvision/models/alexnet.py: the features, a 6x6 pool, then the classifier."""
    n = conv2d(channels, 64, 11) + conv2d(64, 192, 5) + conv2d(192, 384, 3)
    n += conv2d(384, 256, 3) + conv2d(256, 256, 3)
    return n + linear(256 * 6 * 6, 4096) + linear(4096, 4096) + linear(4096, classes)


def test_alexnet2d_parameter_count() -> None:
    assert alexnet(3, 1000) == 61_100_840  # torchvision's published count
    assert _count(_meta("alexnet2d", in_channels=3, num_classes=1000)) == 61_100_840
    assert _count(_meta("alexnet2d", in_channels=3, num_classes=2)) == alexnet(3, 2) == 57_012_034
    assert _count(_meta("alexnet2d", in_channels=1, num_classes=2)) == alexnet(1, 2)


def test_alexnet2d_groups_are_the_papers_layers() -> None:
    model = _meta("alexnet2d", in_channels=1, num_classes=2)
    assert model.freeze_groups == tuple(LAYERS.values())[:7]
    assert model.max_freeze_depth == 7
    learnable = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    expected = [
        g if g == "head.fc" else g + (".fc" if "fc" in k else ".conv") for k, g in LAYERS.items()
    ]
    assert learnable == expected


def _layer_module(model: nn.Module, layer: str) -> nn.Module:
    group = LAYERS[layer]
    if group == "head.fc":
        return model.head.fc
    return model.get_submodule(group + (".fc" if layer.startswith("fc") else ".conv"))


@pytest.mark.parametrize("depth", range(8))
def test_alexnet2d_freeze_depth_k_freezes_layers_1_to_k(depth: int) -> None:
    torch.manual_seed(0)
    model = create_model("alexnet2d", in_channels=1, num_classes=2, base_width=2, hidden_size=8)
    model.freeze(depth)
    model.train()
    model(torch.randn(2, 1, 64, 64)).square().sum().backward()
    for i, layer in enumerate(LAYERS, start=1):
        for p in _layer_module(model, layer).parameters():
            if i <= depth:
                assert not p.requires_grad and p.grad is None, f"{layer} should be frozen"
            else:
                assert p.requires_grad and p.grad is not None, f"{layer} should train"
    assert all(p.requires_grad for p in model.head.parameters())


def test_alexnet2d_depth_8_names_the_rule() -> None:
    model = _meta("alexnet2d", in_channels=3, num_classes=2)
    with pytest.raises(ConfigError) as err:
        model.freeze(8)
    message = str(err.value)
    assert message.startswith("freeze_depth must be <= 7 for alexnet2d, got 8")
    assert "layers 1..k" in message and "fc8" in message and "always trains" in message


def test_alexnet2d_input_errors() -> None:
    with pytest.raises(ConfigError, match="in_channels must be 1 .* or 3 .* for alexnet2d, got 12"):
        create_model("alexnet2d", in_channels=12, num_classes=2)
    with pytest.raises(ConfigError, match=r"dropout must be a number in \[0, 1\)"):
        create_model("alexnet2d", in_channels=1, num_classes=2, dropout=1.0)
    model = create_model("alexnet2d", in_channels=1, num_classes=2, base_width=2, hidden_size=8)
    with pytest.raises(DataError, match=r"input must have shape \(N, 1, H, W\)"):
        model(torch.zeros(2, 1, 64))
    with pytest.raises(DataError, match="height and width must be >= 63"):
        model(torch.zeros(2, 1, 62, 64))
    assert model(torch.zeros(2, 1, 63, 100)).shape == (2, 2)


# ---- cae ----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [64, 70])
def test_cae_reconstructs_the_input_shape(length: int) -> None:
    model = create_model("cae", in_channels=1, num_classes=3, base_width=4, depth=3)
    x = torch.randn(2, 1, length)
    assert model.reconstruct(x).shape == x.shape
    assert model(x).shape == (2, 3)
    assert model.decode(model.forward_features(x[..., :64])).shape == (2, 1, 64)


def test_cae_pretraining_reduces_reconstruction_error() -> None:
    torch.manual_seed(0)
    model = create_model("cae", in_channels=1, num_classes=2, base_width=4, depth=2)
    t = torch.linspace(0, 1, 64)
    x = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (2.0, 3.0, 5.0, 7.0)])[:, None]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model.reconstruct(x), x)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_cae_decoder_is_pretext_only() -> None:
    full = create_model("cae", in_channels=1, num_classes=2, base_width=4, depth=2)
    assert full.pretext_prefixes == ("decoder.",)
    state = full.state_dict()
    assert any(k.startswith("decoder.") for k in state)
    assert set(full.freeze_groups) == {"stem", "stages.0", "stages.1"}
    # Fine-tuning: drop the pretext keys (and the head) and load into an encoder-only model.
    encoder_only = create_model(
        "cae", in_channels=1, num_classes=5, base_width=4, depth=2, with_decoder=False
    )
    keep = {
        k: v
        for k, v in state.items()
        if not k.startswith(full.pretext_prefixes + full.head_prefixes)
    }
    missing, unexpected = encoder_only.load_state_dict(keep, strict=False)
    assert not unexpected
    assert all(k.startswith("head.") for k in missing)
    with pytest.raises(ConfigError, match="with_decoder=False"):
        encoder_only.reconstruct(torch.zeros(1, 1, 16))


# ---- unet1d and qrs_positions -------------------------------------------------------------


@pytest.mark.parametrize("length", [64, 70])
def test_unet1d_gives_per_sample_logits(length: int) -> None:
    model = create_model("unet1d", in_channels=1, num_classes=1, base_width=4, depth=3)
    assert model.output_kind == "per_sample"
    assert model(torch.randn(2, 1, length)).shape == (2, 1, length)
    assert model.freeze_groups == ("stem", "stages.0", "stages.1", "stages.2")
    model.freeze(model.max_freeze_depth)  # the encoder frozen; decoder and head still train
    assert all(p.requires_grad for p in model.decoder.parameters())


def test_qrs_positions_finds_the_known_peaks() -> None:
    fs = 250.0
    n = np.arange(2500)
    prob = np.zeros(n.size)
    for centre, height in [(100, 0.9), (350, 0.95), (600, 0.8), (900, 0.7), (1500, 0.99)]:
        prob = np.maximum(prob, height * np.exp(-0.5 * ((n - centre) / 4.0) ** 2))
    prob = np.maximum(prob, 0.3 * np.exp(-0.5 * ((n - 1200) / 4.0) ** 2))  # below threshold
    prob = np.maximum(prob, 0.6 * np.exp(-0.5 * ((n - 630) / 3.0) ** 2))  # 0.12 s after 600
    prob[2000:2005] = 0.9  # a flat top counts once, at its middle
    got = qrs_positions(prob, fs)
    assert got.dtype == np.int64
    assert got.tolist() == [100, 350, 600, 900, 1500, 2002]
    assert qrs_positions(torch.from_numpy(prob)[None], fs).tolist() == got.tolist()
    with_small = [100, 350, 600, 900, 1200, 1500, 2002]
    assert qrs_positions(prob, fs, threshold=0.25).tolist() == with_small
    # A shorter refractory distance keeps the second peak 30 samples after 600.
    assert 630 in qrs_positions(prob, fs, min_distance_s=0.05).tolist()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"prob": np.zeros((2, 10)), "fs": 250.0}, DataError, "prob must be one trace"),
        ({"prob": np.zeros(10), "fs": 0.0}, ConfigError, "fs must be > 0, got 0.0"),
        (
            {"prob": np.zeros(10), "fs": 250.0, "min_distance_s": 0},
            ConfigError,
            "min_distance_s must be > 0",
        ),
    ],
)
def test_qrs_positions_errors(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        qrs_positions(**kwargs)
