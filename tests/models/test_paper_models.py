"""Checks of the paper architectures against their definitions: Weimann & Conrad's ResNets,
Huerta et al.'s AlexNet, the lead-II autoencoder, and the QRS U-Net with its peak picking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from study.errors import ConfigError, DataError
from study.models import create_model
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
    twelve = weimann_resnet(blocks, bottleneck, leads=12, classes=5)
    assert _count(_meta(name, in_channels=12, num_classes=5)) == twelve


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
