"""Spec validation: every bad spec fails at load time with a message naming key, rule, value."""

from __future__ import annotations

import copy

import pytest

from study.errors import ConfigError
from study.sweep.load import load_spec, parse_spec, spec_to_yaml
from study.sweep.resolve import freeze_depths_for

GOOD = {
    "name": "t",
    "architectures": [{"name": "resnet1d18", "options": {"base_width": 8}}],
    "upstream": ["synth_up_a"],
    "downstream": ["synth_down_x"],
    "finetune": {"freeze_depths": [0, 5], "data_fractions": [0.5, 1.0], "repeats": 2},
}


def _with(path: str, value):
    spec = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return spec


BAD = [
    (_with("colour", "red"), ["colour: unknown key", "valid keys: name"]),
    (_with("finetune.learning_rate", 0.1), ["finetune.learning_rate: unknown key", "lr"]),
    (
        _with("finetune.data_fractions", [0.0, 1.0]),
        ["finetune.data_fractions", "must be in (0, 1], got 0.0"],
    ),
    (_with("finetune.data_fractions", [1.5]), ["(0, 1], got 1.5"]),
    (
        _with("finetune.freeze_depths", [7]),
        ["finetune.freeze_depths: freeze_depth must be <= 5 for resnet1d18[base_width=8], got 7"],
    ),
    (_with("finetune.freeze_depths", [-1]), [">= 0 or 'all', got -1"]),
    (_with("upstream", ["ptbxl_typo"]), ["upstream", "unknown dataset 'ptbxl_typo'", "synth_up_a"]),
    (
        _with("architectures", [{"name": "resnet99"}]),
        ["unknown architecture 'resnet99'", "resnet1d18"],
    ),
    (
        _with("architectures", [{"name": "resnet1d18", "options": {"width": 3}}]),
        ["unknown option", "width", "base_width"],
    ),
    (_with("finetune.repeats", "ten"), ["finetune.repeats", "integer", "'ten'"]),
    (_with("finetune.repeats", 0), ["finetune.repeats", "greater than or equal to 1"]),
    (_with("pretrain.epochs", 0), ["pretrain.epochs", "greater than or equal to 1"]),
    (_with("name", "has space"), ["name", "pattern"]),
    ({k: v for k, v in GOOD.items() if k != "downstream"}, ["downstream: required key"]),
    (
        _with("finetune.stage_lr", {"layer9": 0.1}),
        ["finetune.stage_lr: resnet1d18[base_width=8] has no stage 'layer9'", "stem, stages.0"],
    ),
    (_with("finetune.stage_lr", {"stem": -1}), ["multiplier must be >= 0, got stem: -1"]),
    (
        _with("architectures", [{"name": "alexnet2d"}]),
        ["alexnet2d takes scalogram images", "datasets.synth_down_x.preprocessing.scalogram"],
    ),
    (
        _with("architectures", [{"name": "unet1d"}]),
        [
            "pretrain.task: the classification task cannot pretrain unet1d: it gives "
            "per_sample outputs; multi_label needs one per record",
            "architectures: unet1d cannot be fine-tuned on synth_down_x (multi_label)",
        ],
    ),
    (
        _with("pretrain.task", "qrs"),
        [
            "pretrain.task: the qrs task trains on the upstream label set 'qrs', which synth_up_a "
            "does not have (datasets with it: cpsc2019"
        ],
    ),
    (
        {
            **GOOD,
            "upstream": ["cpsc2019"],
            "datasets": {"cpsc2019": {"source": "/data/cpsc2019"}},
            "pretrain": {"task": "qrs"},
        },
        [
            "pretrain.task: the qrs task cannot pretrain resnet1d18[base_width=8]: it gives "
            "one output per record, not per sample"
        ],
    ),
    (_with("pretrain.task", "beat"), ["the beat task", "synth_up_a does not have"]),
    (_with("pretrain.task", ["future", "future"]), ["tasks must be distinct"]),
    (_with("pretrain.task", "jigsaw"), ["pretrain.task: unknown task 'jigsaw'", "future"]),
    (
        _with("pretrain.task_options", {"classification": {"x": 1}}),
        ["pretrain.task_options.classification: the classification task takes no options"],
    ),
    (
        _with("pretrain.task_options", {"beat": {"x": 1}}),
        ["pretrain.task_options.beat: 'beat' is not a pretraining task of this study"],
    ),
    (
        {
            **_with("pretrain.task", "future"),
            "pretrain": {"task": "future", "task_options": {"future": {"steps": 4}}},
        },
        ["pretrain.task_options.future: the future task has no option 'steps'", "window_length"],
    ),
    (
        {**GOOD, "pretrain": {"task": "autoencoder", "loss": "weighted_bce"}},
        ["pretrain.loss: the autoencoder task has no labels to weight"],
    ),
    (_with("finetune.optimizer", "lamb"), ["finetune.optimizer", "'adamw' or 'sgd'", "'lamb'"]),
    (_with("pretrain.loss", "focal"), ["pretrain.loss", "'focal'"]),
]


@pytest.mark.parametrize(("data", "expected"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_specs_fail_with_a_message_naming_key_rule_and_value(data, expected):
    with pytest.raises(ConfigError) as exc:
        parse_spec(data)
    for fragment in expected:
        assert fragment in str(exc.value), str(exc.value)


def test_good_spec_resolves_defaults_and_round_trips(tmp_path):
    spec = parse_spec(GOOD)
    assert spec.finetune.data_fractions == [0.5, 1.0]
    assert spec.pretrain.num_workers == 2
    path = tmp_path / "s.yaml"
    path.write_text(spec_to_yaml(spec))
    assert load_spec(path) == spec
    assert load_spec(path).digest() == spec.digest()


def test_freeze_depth_all_resolves_per_architecture():
    spec = parse_spec(_with("finetune.freeze_depths", [0, "all"]))
    assert freeze_depths_for(spec, spec.architectures[0]) == [0, 5]


@pytest.mark.parametrize(
    ("text", "fragment"), [("a: [", "not valid YAML"), ("- 1\n- 2", "expected a mapping")]
)
def test_malformed_yaml_is_a_config_error(tmp_path, text, fragment):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        load_spec(path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_a_task_list_is_an_axis_of_the_plan():
    from study.sweep.plan import make_plan

    one = make_plan(parse_spec(GOOD))
    two = make_plan(parse_spec(_with("pretrain.task", ["classification", "future"])))
    n_pt, n_ft = len(one.by_stage("pretrain")), len(one.by_stage("finetune"))
    assert len(two.by_stage("pretrain")) == 2 * n_pt
    assert len(two.by_stage("finetune")) == 2 * n_ft
    assert len(two.by_stage("scratch")) == len(one.by_stage("scratch"))  # no task in scratch
    # the classification units are the same units (same ids) as in the one-task spec
    assert {u.unit_id for u in one.units} <= {u.unit_id for u in two.units}
    tasks = {u.config.pretrain_task for u in two.by_stage("finetune")}
    assert tasks == {"classification", "future"}


def test_a_dataset_variant_is_its_own_downstream_with_the_same_records():
    from study.data.prepared import prepared_key
    from study.sweep.plan import make_plan
    from study.sweep.runner import study_datasets

    spec = parse_spec(
        {
            **GOOD,
            "downstream": ["synth_down_x", "x_noisy"],
            "datasets": {
                "x_noisy": {
                    "dataset": "synth_down_x",
                    "preprocessing": {"noise": {"kind": "gaussian", "snr_db": 6}},
                }
            },
        }
    )
    assert spec.source_name("x_noisy") == "synth_down_x"
    plan = make_plan(spec)
    keys = {u.config.downstream: u.config.data_key for u in plan.by_stage("scratch")}
    assert keys["synth_down_x"] == prepared_key("synth_down_x")
    assert keys["x_noisy"] != keys["synth_down_x"] and keys["x_noisy"].startswith("synth_down_x-")
    assert {name for name, _ in study_datasets(spec).values()} == {"synth_up_a", "synth_down_x"}


@pytest.mark.parametrize(
    ("datasets", "message"),
    [
        ({"x_noisy": {}}, "x_noisy is not a dataset; a variant needs `dataset:`"),
        ({"x_noisy": {"dataset": "nope"}}, "datasets.x_noisy.dataset: unknown dataset 'nope'"),
        ({"synth_down_x": {"dataset": "synth_up_a"}}, "is itself a dataset"),
    ],
)
def test_bad_variants_fail_at_load_time(datasets, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec({**GOOD, "downstream": ["synth_down_x"], "datasets": datasets})
