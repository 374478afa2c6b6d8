"""The variant table: registration, capabilities on the class, model_info's cache and keys,
and what trains at the largest freeze depth."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from study.errors import ConfigError
from study.models import ECGModel, create_model, list_models, model_info
from study.models._factory import MODELS, _describe_cached, register_variant
from study.models.alexnet2d import AlexNet2d
from study.models.autoencoder import ConvAutoencoder1d
from study.models.resnet1d import BasicBlock1d, ResNet1d, resnet1d18
from study.models.unet1d import UNet1d, unet1d

torch.set_num_threads(1)

NAMES = [
    "alexnet2d",
    "bilstm",
    "cae",
    "gru",
    "lstm",
    "resnet18v2",
    "resnet1d101",
    "resnet1d18",
    "resnet1d50",
    "resnet34v2",
    "resnet50v2",
    "unet1d",
]
INFO_KEYS = {
    "name",
    "options",
    "freeze_groups",
    "max_freeze_depth",
    "head_prefixes",
    "classifier_prefixes",
    "requires_input_length",
    "input_kind",
    "output_kind",
    "pretext_prefixes",
    "can_reconstruct",
    "head_trainable",
    "body_trainable",
    "probe_kind",
}


# ---- the table ---------------------------------------------------------------------------


def test_list_models_is_unchanged() -> None:
    assert list_models() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_variant_has_a_doc_and_defaults_for_its_options(name: str) -> None:
    variant = MODELS.get(name)
    assert variant.name == name and variant.doc.strip()
    assert set(variant.option_names) <= set(variant.defaults)
    assert model_info(name)["options"] == {k: variant.defaults[k] for k in variant.option_names}


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("resnet1d18", ("base_width", "embedding_size")),
        ("resnet18v2", ("base_width",)),
        ("gru", ("hidden_size", "head")),
        ("alexnet2d", ("base_width", "hidden_size", "dropout")),
        ("cae", ("base_width", "depth", "kernel_size", "with_decoder")),
        ("unet1d", ("base_width", "depth", "kernel_size")),
    ],
)
def test_options_come_from_the_builder_signature(name: str, options: tuple[str, ...]) -> None:
    assert MODELS.get(name).option_names == options


@pytest.mark.parametrize(
    ("name", "given", "size", "default"),
    [
        ("resnet18v2", {"num_classes": 2}, "in_channels", 1),
        ("resnet34v2", {"num_classes": 2}, "in_channels", 1),
        ("resnet50v2", {"num_classes": 2}, "in_channels", 1),
        ("cae", {"num_classes": 2}, "in_channels", 1),
        ("alexnet2d", {"num_classes": 2}, "in_channels", 3),
        ("unet1d", {"in_channels": 2}, "num_classes", 1),
    ],
)
def test_variant_size_defaults(name: str, given: dict, size: str, default: int) -> None:
    # Calling the variant itself applies them; create_model takes both sizes as required.
    assert MODELS.get(name).defaults[size] == default
    with torch.device("meta"):
        model = MODELS.get(name)(**given)
    assert getattr(model, size) == default


def test_a_variant_is_callable_like_the_factory_it_replaces() -> None:
    torch.manual_seed(0)
    direct = resnet1d18(in_channels=2, num_classes=3, base_width=4)
    torch.manual_seed(0)
    via_registry = create_model("resnet1d18", in_channels=2, num_classes=3, base_width=4)
    assert direct.config == via_registry.config
    want = via_registry.state_dict()
    assert list(direct.state_dict()) == list(want)
    for k, v in direct.state_dict().items():
        assert torch.equal(v, want[k]), k
    assert unet1d(in_channels=1, base_width=2, depth=1).num_classes == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: resnet1d18(num_classes=2), "in_channels must be given for model 'resnet1d18'"),
        (lambda: resnet1d18(in_channels=1, num_classes=2, width=8), "valid options: base_width"),
        (
            lambda: register_variant("x", ResNet1d, fixed={"block": BasicBlock1d}, doc="x"),
            "fixed must set the structural arguments ['block', 'layers']",
        ),
        (
            lambda: register_variant(
                "x",
                ResNet1d,
                fixed={"block": BasicBlock1d, "layers": (1,), "width": 2},
                doc="x",
            ),
            "got ['block', 'layers', 'width']",
        ),
        (
            lambda: register_variant("x", UNet1d, defaults={"width": 2}, doc="x"),
            "defaults may only name options (base_width, depth, kernel_size) or sizes "
            "(in_channels, num_classes, input_length) for model variant 'x' over UNet1d, "
            "got ['width']",
        ),
        (
            lambda: register_variant("unet1d", UNet1d, doc="again"),
            "model 'unet1d' is registered twice",
        ),
    ],
)
def test_registration_and_call_errors(call, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        call()
    assert message in str(err.value)
    assert list_models() == NAMES  # a failed registration leaves the table as it was


# ---- capabilities live on the class -------------------------------------------------------


def test_capabilities_are_class_attributes() -> None:
    assert (ECGModel.input_kind, ECGModel.output_kind, ECGModel.pretext_prefixes) == (
        "signal",
        "record",
        (),
    )
    assert AlexNet2d.input_kind == "image"
    assert UNet1d.output_kind == "per_sample"
    assert ConvAutoencoder1d.pretext_prefixes == ("decoder.",)


@pytest.mark.parametrize(
    ("name", "options", "can_reconstruct"),
    [
        ("cae", {}, True),
        ("cae", {"with_decoder": False}, False),
        ("resnet1d18", {}, False),
        ("unet1d", {}, False),  # it has a decoder, but not one that reconstructs its input
    ],
)
def test_can_reconstruct(name: str, options: dict, can_reconstruct: bool) -> None:
    assert model_info(name, **options)["can_reconstruct"] is can_reconstruct


# ---- model_info: one build per (name, options), copies out --------------------------------


def test_model_info_keys() -> None:
    for name in NAMES:
        assert set(model_info(name)) == INFO_KEYS


def test_model_info_builds_each_name_and_options_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    init = ECGModel.__init__

    def counting_init(self: ECGModel, **kwargs) -> None:
        built.append(kwargs["name"])
        init(self, **kwargs)

    monkeypatch.setattr(ECGModel, "__init__", counting_init)
    _describe_cached.cache_clear()
    first = model_info("resnet1d18", base_width=12)
    # The same resolved options, given another way: explicit default, or as a mapping.
    assert model_info("resnet1d18", options={"base_width": 12}) == first
    assert built == ["resnet1d18"]
    model_info("resnet1d18")
    model_info("resnet1d18", base_width=64)
    assert built == ["resnet1d18", "resnet1d18"]


def test_model_info_returns_a_copy_callers_may_change() -> None:
    info = model_info("cae")
    info["options"]["depth"] = 99
    info["freeze_groups"] = ()
    again = model_info("cae")
    assert again["options"]["depth"] == 4
    assert again["freeze_groups"] == ("stem", "stages.0", "stages.1", "stages.2", "stages.3")


@pytest.mark.parametrize("value", [64.0, True, "64"])
def test_model_info_cache_keeps_types_apart(value: object) -> None:
    # 64.0 == 64 and True == 1 hash alike; the cache must not answer for them.
    model_info("resnet1d18", base_width=64)
    model_info("resnet1d18", base_width=1)
    with pytest.raises(ConfigError, match="base_width must be a positive int"):
        model_info("resnet1d18", base_width=value)


# ---- what trains at the largest freeze depth ----------------------------------------------

TRAINS = [
    ("resnet1d18", ("head.hidden", "head.fc"), (), "mlp"),
    ("resnet1d50", ("head.hidden", "head.fc"), (), "mlp"),
    ("resnet1d101", ("head.hidden", "head.fc"), (), "mlp"),
    ("resnet18v2", ("head.fc",), (), "linear"),
    ("resnet34v2", ("head.fc",), (), "linear"),
    ("resnet50v2", ("head.fc",), (), "linear"),
    ("gru", ("head.fc",), (), "linear"),
    ("lstm", ("head.fc",), (), "linear"),
    ("bilstm", ("head.fc",), (), "linear"),
    ("alexnet2d", ("head.fc",), (), "linear"),  # fc8
    ("cae", ("head.fc",), (), "linear"),  # the decoder is pretext-only: no gradient
    ("unet1d", ("head.fc",), ("decoder",), "partial"),  # the decoder always trains
]


def test_trains_table_covers_the_registry() -> None:
    assert sorted(name for name, *_ in TRAINS) == NAMES


@pytest.mark.parametrize(("name", "head", "body", "probe"), TRAINS)
def test_what_trains_at_max_depth(name: str, head: tuple, body: tuple, probe: str) -> None:
    info = model_info(name)
    assert (info["head_trainable"], info["body_trainable"], info["probe_kind"]) == (
        head,
        body,
        probe,
    )


@pytest.mark.parametrize("name", NAMES)
def test_what_trains_matches_freezing(name: str) -> None:
    # Freeze every group and read what still trains: the declared answer must match it.
    with torch.device("meta"):
        model = create_model(name, in_channels=1, num_classes=2, input_length=16)
    model.freeze(model.max_freeze_depth)
    trainable = [
        n
        for n, m in model.named_modules()
        if any(p.requires_grad for p in m.parameters(recurse=False))
        and not (n + ".").startswith(model.pretext_prefixes)
    ]
    head = [n for n in trainable if n.startswith("head.")]
    assert tuple(head) == model.head_trainable
    body = {n.split(".")[0] for n in trainable if not n.startswith("head.")}
    assert body == set(model.body_trainable)
    if model.probe_kind == "mlp":
        assert all(isinstance(model.get_submodule(n), nn.Linear) for n in head)


def test_a_variant_pickles_by_name() -> None:
    # The factory functions pickled by reference; a variant sent to a Ray worker must too.
    assert pickle.loads(pickle.dumps(resnet1d18)) is resnet1d18
