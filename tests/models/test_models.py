"""Contract tests over the whole model registry, plus per-architecture checks."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from study.errors import ConfigError, DataError
from study.models import ECGModel, create_model, list_models, model_info

torch.set_num_threads(1)

IN_CHANNELS = 3
NUM_CLASSES = 4
LENGTH = 64
BATCH = 4

# Tiny options per architecture so the whole file runs in seconds on a CPU; a model missing
# here is tested with its defaults.
TINY: dict[str, dict] = {
    "resnet1d18": {"base_width": 8},
    "resnet1d50": {"base_width": 4},
    "resnet1d101": {"base_width": 4},
    "gru": {"hidden_size": 8},
    "lstm": {"hidden_size": 8},
    "bilstm": {"hidden_size": 8},
    "resnet18v2": {"base_width": 4},
    "resnet34v2": {"base_width": 4},
    "resnet50v2": {"base_width": 4},
    "alexnet2d": {"base_width": 4, "hidden_size": 16},
    "cae": {"base_width": 4, "depth": 3},
    "unet1d": {"base_width": 4, "depth": 3},
}
# Non-default variants that the contract must also hold for.
EXTRA_VARIANTS: list[tuple[str, dict]] = [
    ("gru", {"hidden_size": 8, "head": "pooled"}),
    ("bilstm", {"hidden_size": 8, "head": "pooled"}),
    ("cae", {"base_width": 4, "depth": 3, "with_decoder": False}),
]
VARIANTS = [(name, TINY.get(name, {})) for name in list_models()] + EXTRA_VARIANTS
CASES = [
    pytest.param(name, opts, depth, id=f"{name}-{'-'.join(map(str, opts.values()))}-d{depth}")
    for name, opts in VARIANTS
    for depth in range(model_info(name, **opts)["max_freeze_depth"] + 1)
]


def _build(name: str, seed: int = 0, **opts) -> ECGModel:
    torch.manual_seed(seed)
    return create_model(
        name, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES, input_length=LENGTH, **opts
    )


def _x(seed: int = 1, length: int = LENGTH) -> torch.Tensor:
    return torch.randn(BATCH, IN_CHANNELS, length, generator=torch.Generator().manual_seed(seed))


def _input(model: ECGModel, seed: int = 1) -> torch.Tensor:
    # Image models (`input_kind = "image"`, e.g. alexnet2d) take (N, C, H, W) scalograms.
    if model.input_kind == "image":
        shape = (BATCH, IN_CHANNELS, LENGTH, LENGTH)
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return _x(seed)


def _out_shape(model: ECGModel, num_classes: int = NUM_CLASSES) -> tuple[int, ...]:
    # Per-sample models (`output_kind = "per_sample"`, e.g. unet1d) keep the time axis.
    if model.output_kind == "per_sample":
        return (BATCH, num_classes, LENGTH)
    return (BATCH, num_classes)


def _pretext(qualified: str, model: ECGModel) -> bool:
    # Pretext-only parts (`pretext_prefixes`, e.g. cae's decoder) are not in the classifier's
    # forward: they get no gradient and their batch norms do not move there.
    return qualified.startswith(model.pretext_prefixes)


def _in_groups(qualified: str, groups: tuple[str, ...]) -> bool:
    return any(qualified == g or qualified.startswith(g + ".") for g in groups)


def _batchnorms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    return {
        n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }


# ---- the contract, for every registered model and every freeze depth ----------------------


@pytest.mark.parametrize(("name", "opts", "depth"), CASES)
def test_contract(name: str, opts: dict, depth: int) -> None:
    model = _build(name, **opts)
    groups = model.freeze_groups
    assert model.max_freeze_depth == len(groups) == model_info(name, **opts)["max_freeze_depth"]
    assert [n for n, _ in model.stages.named_children()] == [
        str(i) for i in range(len(model.stages))
    ]
    for g in groups:
        assert any(True for _ in model.get_submodule(g).parameters()), g

    model.freeze(depth)
    model.train()
    frozen = groups[:depth]
    bns = _batchnorms(model)
    before = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in bns.items()}

    out = model(_input(model))
    assert out.shape == _out_shape(model)
    assert model.forward_head(model.forward_features(_input(model))).shape == _out_shape(model)

    for n, m in bns.items():
        if _pretext(n, model):
            continue
        mean0, var0 = before[n]
        moved = not (torch.equal(mean0, m.running_mean) and torch.equal(var0, m.running_var))
        if _in_groups(n, frozen):
            assert not m.training and not moved, f"frozen batch norm {n} moved"
        else:
            assert m.training and moved, f"trainable batch norm {n} did not move"

    model.zero_grad(set_to_none=True)
    out.square().mean().backward()
    for n, p in model.named_parameters():
        if _pretext(n, model):
            assert p.requires_grad and p.grad is None, f"pretext-only {n} got a gradient"
        elif _in_groups(n, frozen):
            assert not p.requires_grad and p.grad is None, f"frozen {n} got a gradient"
        else:
            assert p.requires_grad and p.grad is not None, f"trainable {n} got no gradient"
    head_params = {id(p) for p in model.head.parameters()}
    assert head_params <= {id(p) for p in model.trainable_parameters()}
    assert {id(p) for p in model.trainable_parameters()} == {
        id(p) for p in model.parameters() if p.requires_grad
    }


def test_freeze_reapplies_from_scratch() -> None:
    model = _build("resnet1d18", **TINY["resnet1d18"])
    model.freeze(model.max_freeze_depth)
    model.eval()
    model.train()
    assert all(not m.training for m in _batchnorms(model.stem).values())
    model.freeze(0)
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in _batchnorms(model).values())
    model.freeze(2)
    model.eval()
    assert all(not m.training for m in model.modules())
    model.train()
    for n, m in _batchnorms(model).items():
        assert m.training == (not _in_groups(n, ("stem", "stages.0"))), n


def test_model_info() -> None:
    info = model_info("resnet1d18")
    assert info["freeze_groups"] == ("stem", "stages.0", "stages.1", "stages.2", "stages.3")
    assert info["max_freeze_depth"] == 5
    assert info["options"] == {"base_width": 64, "embedding_size": 512}
    assert info["head_prefixes"] == ("head.",)
    info = model_info("gru")  # no input_length needed, even with the flatten head
    assert info["freeze_groups"] == ("stages.0",)
    assert info["max_freeze_depth"] == 1
    assert info["requires_input_length"] is True
    assert model_info("gru", head="pooled")["requires_input_length"] is False


# ---- errors that name the rule and the value ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "depth", "message"),
    [
        ("resnet1d18", 7, "freeze_depth must be <= 5 for resnet1d18, got 7"),
        ("resnet1d18", 6, "freeze_depth must be <= 5 for resnet1d18, got 6"),
        ("resnet1d18", -1, "freeze_depth must be >= 0 for resnet1d18, got -1"),
        ("gru", 2, "freeze_depth must be <= 1 for gru, got 2"),
        ("gru", 1.0, "freeze_depth must be an int for gru, got 1.0"),
    ],
)
def test_invalid_freeze_depth(name: str, depth: object, message: str) -> None:
    model = _build(name, **TINY[name])
    with pytest.raises(ConfigError) as err:
        model.freeze(depth)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("call", "fragments"),
    [
        (
            lambda: create_model("resnet1d19", in_channels=1, num_classes=2),
            ["unknown model 'resnet1d19'", *list_models()],
        ),
        (
            lambda: create_model("resnet1d18", in_channels=1, num_classes=2, width=8),
            ["unknown option(s) 'width'", "'resnet1d18'", "valid options: base_width"],
        ),
        (
            lambda: create_model("gru", in_channels=1, num_classes=2, input_length=8, depth=2),
            ["'depth'", "valid options: hidden_size, head"],
        ),
        (
            lambda: model_info("lstm", dropout=0.1),
            ["unknown option(s) 'dropout'", "hidden_size"],
        ),
        (
            lambda: create_model(
                "resnet1d18", in_channels=1, num_classes=2, options={"base_width": 8}, base_width=8
            ),
            ["base_width given both"],
        ),
        (
            lambda: create_model("resnet1d18", in_channels=1, num_classes=2, base_width=0),
            ["base_width must be a positive int for resnet1d18, got 0"],
        ),
        (
            lambda: create_model("resnet1d18", in_channels=0, num_classes=2),
            ["in_channels must be a positive int for resnet1d18, got 0"],
        ),
        (
            lambda: create_model("lstm", in_channels=1, num_classes=2, head="attention"),
            ["head must be one of 'flatten', 'pooled' for lstm, got 'attention'"],
        ),
        (
            lambda: create_model("gru", in_channels=12, num_classes=5),
            ["input_length is required for gru with head='flatten'", "got None"],
        ),
        (
            lambda: create_model("bilstm", in_channels=12, num_classes=5, head="flatten"),
            ["input_length is required for bilstm"],
        ),
        (
            lambda: _build("resnet1d18", **TINY["resnet1d18"]).reset_head(0),
            ["num_classes must be a positive int for resnet1d18, got 0"],
        ),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_config_errors(call, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        call()
    for fragment in fragments:
        assert fragment in str(err.value)


def test_wrong_input_shape_is_a_data_error() -> None:
    model = _build("gru", **TINY["gru"])
    with pytest.raises(DataError, match="input length must equal input_length=64"):
        model(_x(length=LENGTH + 1))
    with pytest.raises(DataError, match=r"input must have shape \(N, 3, L\)"):
        model(torch.zeros(2, IN_CHANNELS + 1, LENGTH))
    pooled = _build("gru", hidden_size=8, head="pooled")
    assert pooled(_x(length=LENGTH + 1)).shape == (BATCH, NUM_CLASSES)


# ---- head reset and rebuilding from config -------------------------------------------------


@pytest.mark.parametrize("name", ["resnet1d18", "gru"])
def test_reset_head(name: str) -> None:
    model = _build(name, **TINY[name])
    hidden_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    model.freeze(model.max_freeze_depth)
    model.reset_head(7)
    assert model.num_classes == model.config["num_classes"] == 7
    assert model(_x()).shape == (BATCH, 7)
    assert all(p.requires_grad for p in model.head.parameters())
    state = model.state_dict()
    for key, value in hidden_before.items():  # only the classifier was replaced
        if not any(key.startswith(p) for p in model.classifier_prefixes):
            assert torch.equal(state[key], value), key


@pytest.mark.parametrize(("name", "opts"), VARIANTS)
def test_state_dict_round_trip(name: str, opts: dict) -> None:
    model = _build(name, seed=0, **opts)
    model.reset_head(6)
    model.train()
    model(_input(model))  # move batch-norm running statistics away from their initial values
    config = json.loads(json.dumps(model.config))  # it must survive as plain data
    assert set(config) == {"name", "in_channels", "num_classes", "input_length", "options"}
    rebuilt = create_model(**config)
    torch.manual_seed(123)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(_input(model, seed=5)), rebuilt(_input(model, seed=5)))


def test_head_prefixes_cover_exactly_the_head() -> None:
    model = _build("resnet1d18", **TINY["resnet1d18"])
    keys = list(model.state_dict())
    head_keys = [k for k in keys if k.startswith(model.head_prefixes)]
    assert head_keys == [k for k in keys if k.split(".")[0] == "head"]
    assert set(head_keys) == {
        "head.hidden.weight",
        "head.hidden.bias",
        "head.fc.weight",
        "head.fc.bias",
    }


# ---- parameter count against a hand count --------------------------------------------------


def test_resnet1d18_parameter_count() -> None:
    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k  # no bias

    def bn(c: int) -> int:
        return 2 * c  # weight and bias (running stats are buffers)

    def linear(fin: int, fout: int) -> int:
        return fin * fout + fout

    def basic_block(cin: int, cout: int) -> int:
        n = conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
        if cin != cout:  # 1x1 projection shortcut
            n += conv(cin, cout, 1) + bn(cout)
        return n

    expected = conv(12, 64, 7) + bn(64)  # stem
    cin = 64
    for width in (64, 128, 256, 512):
        expected += basic_block(cin, width) + basic_block(width, width)
        cin = width
    expected += linear(512, 512) + linear(512, 5)  # head
    assert expected == 4_114_053

    model = create_model("resnet1d18", in_channels=12, num_classes=5, base_width=64)
    assert sum(p.numel() for p in model.parameters()) == expected
