"""Plan expansion: counts computed by hand, stable content ids, no redundant units."""

from __future__ import annotations

import copy

from study.sweep.load import parse_spec
from study.sweep.plan import DOWNSTREAM_FOLDS, UPSTREAM_FOLDS, make_plan

BASE = {
    "name": "p",
    "architectures": [{"name": "resnet1d18", "options": {"base_width": 8}}, "gru"],
    "upstream": ["synth_up_a", "synth_up_b"],
    "downstream": ["synth_down_x", "synth_down_y"],
    "finetune": {"freeze_depths": [0, "all"], "data_fractions": [0.1, 1.0], "repeats": 3},
}


def test_counts_match_a_hand_computation():
    plan = make_plan(parse_spec(BASE))
    # pretrain: 2 architectures x 2 upstream = 4
    # scratch: 2 arch x 2 downstream x 2 fractions x 3 repeats = 24 (no upstream, no depth)
    # finetune: resnet: 2 up x 2 down x 2 depths {0, 5} x 2 fr x 3 rep = 48;
    #           gru: depths {0, 1} -> also 48
    counts = plan.counts()
    assert counts["stages"]["pretrain"]["units"] == 4
    assert counts["stages"]["scratch"]["units"] == 24
    assert counts["stages"]["finetune"]["units"] == 96
    assert counts["total"] == 124
    assert counts["stages"]["finetune"]["axes"]["freeze_depth"] == {0: 48, 1: 24, 5: 24}
    assert len({u.unit_id for u in plan.units}) == 124


def test_scratch_units_do_not_vary_with_upstream_or_depth():
    plan = make_plan(parse_spec(BASE))
    scratch = plan.by_stage("scratch")
    keys = {
        (
            u.config.architecture_label,
            u.config.downstream,
            u.config.data_fraction,
            u.config.repeat,
        )
        for u in scratch
    }
    assert len(keys) == len(scratch)
    assert all("upstream" not in u.config and u.config.freeze_depth == 0 for u in scratch)


def test_paired_arms_share_subset_and_seed():
    plan = make_plan(parse_spec(BASE))
    scratch = {
        (
            u.config.architecture_label,
            u.config.downstream,
            u.config.data_fraction,
            u.config.repeat,
        ): u
        for u in plan.by_stage("scratch")
    }
    for u in plan.by_stage("finetune"):
        twin = scratch[
            (
                u.config.architecture_label,
                u.config.downstream,
                u.config.data_fraction,
                u.config.repeat,
            )
        ]
        assert u.config.seed == twin.config.seed
        assert u.config.data_key == twin.config.data_key
        assert u.depends_on == u.config.pretrain_unit


def test_ids_are_stable_and_change_with_any_config_change():
    a = make_plan(parse_spec(BASE))
    b = make_plan(parse_spec(copy.deepcopy(BASE)))
    assert [u.unit_id for u in a.units] == [u.unit_id for u in b.units]
    changed = copy.deepcopy(BASE)
    changed["finetune"]["lr"] = 5e-4
    c = make_plan(parse_spec(changed))
    ids_a = {u.unit_id for u in a.units if u.stage != "pretrain"}
    ids_c = {u.unit_id for u in c.units if u.stage != "pretrain"}
    assert not ids_a & ids_c
    # ... while the pretraining units, which do not depend on finetune.lr, keep theirs.
    assert {u.unit_id for u in a.by_stage("pretrain")} == {
        u.unit_id for u in c.by_stage("pretrain")
    }
    pre = copy.deepcopy(BASE)
    pre["pretrain"] = {"epochs": 3}
    d = make_plan(parse_spec(pre))
    # A new pretraining changes every fine-tuning unit that starts from it, not scratch.
    assert not {u.unit_id for u in a.by_stage("finetune")} & {
        u.unit_id for u in d.by_stage("finetune")
    }
    assert {u.unit_id for u in a.by_stage("scratch")} == {u.unit_id for u in d.by_stage("scratch")}


def test_specs_sharing_a_unit_share_its_id():
    small = copy.deepcopy(BASE)
    small["finetune"]["repeats"] = 1
    small["name"] = "other-name"
    ids_small = {u.unit_id for u in make_plan(parse_spec(small)).units}
    assert ids_small <= {u.unit_id for u in make_plan(parse_spec(BASE)).units}


def test_self_pairs_are_excluded_unless_patient_disjoint():
    spec = copy.deepcopy(BASE)
    spec["downstream"] = ["synth_up_a", "synth_down_x"]
    plan = make_plan(parse_spec(spec))
    assert not [u for u in plan.by_stage("finetune") if u.config.upstream == u.config.downstream]
    assert any("synth_up_a as upstream of synth_up_a" in w for w in plan.excluded)
    spec["self_pairs"] = "patient_disjoint"
    split = make_plan(parse_spec(spec))
    selfs = [u for u in split.by_stage("finetune") if u.config.upstream == u.config.downstream]
    assert selfs
    # the dataset in both roles trains on disjoint folds in each; the others are untouched
    for u in split.units:
        role = u.config.upstream if u.stage == "pretrain" else u.config.downstream
        if role == "synth_up_a":
            expected = (1, 2, 3, 4) if u.stage == "pretrain" else (5, 6, 7, 8)
            assert u.config.train_folds == expected, u
        else:
            assert u.config.train_folds is None
            assert "train_folds" not in u.config.canonical()  # nor in its id
    # both arms of a self-pair comparison train on the same (downstream-role) folds
    scratch = [u for u in split.by_stage("scratch") if u.config.downstream == "synth_up_a"]
    assert scratch and all(u.config.train_folds == (5, 6, 7, 8) for u in scratch)


def test_a_variant_of_an_upstream_dataset_is_a_self_pair():
    """A noisy copy of the upstream dataset holds the same patients: it is never paired with
    its source unless the study splits that dataset by patient between the roles."""
    spec = copy.deepcopy(BASE)
    spec["downstream"] = ["up_a_noisy"]
    spec["datasets"] = {
        "up_a_noisy": {
            "dataset": "synth_up_a",
            "preprocessing": {"noise": {"kind": "gaussian", "snr_db": 6}},
        }
    }
    plan = make_plan(parse_spec(spec))
    assert not any(u.config.upstream == "synth_up_a" for u in plan.by_stage("finetune"))
    assert any("synth_up_a as upstream of up_a_noisy" in w for w in plan.excluded)
    spec["self_pairs"] = "patient_disjoint"
    split = make_plan(parse_spec(spec))
    pre = [u for u in split.by_stage("pretrain") if u.config.upstream == "synth_up_a"]
    assert pre and all(u.config.train_folds == UPSTREAM_FOLDS for u in pre)
    down = [u for u in split.units if u.config.downstream == "up_a_noisy"]
    assert down and all(u.config.train_folds == DOWNSTREAM_FOLDS for u in down)


def test_per_stage_learning_rates_apply_to_the_pretrained_arm_only():
    spec = copy.deepcopy(BASE)
    spec["architectures"] = spec["architectures"][:1]
    spec["finetune"]["stage_lr"] = {"stem": 0.0}
    plan = make_plan(parse_spec(spec))
    assert all(u.config.train.stage_lr == {"stem": 0.0} for u in plan.by_stage("finetune"))
    assert all(u.config.train.stage_lr is None for u in plan.by_stage("scratch"))


def test_pretraining_seeds_multiply_pretraining_and_rotate_through_repeats():
    spec = copy.deepcopy(BASE)
    spec["pretrain"] = {"repeats": 2}
    plan = make_plan(parse_spec(spec))
    one_seed = make_plan(parse_spec(BASE))
    pre = plan.by_stage("pretrain")
    assert len(pre) == 2 * len(one_seed.by_stage("pretrain")) == 8
    # seed 0 is the same unit as the single-seed study's: adding seeds re-uses it
    assert {u.unit_id for u in one_seed.by_stage("pretrain")} <= {u.unit_id for u in pre}
    seeds = {u.unit_id: (u.config.pretrain_repeat or 0, u.config.seed) for u in pre}
    assert sorted(set(seeds.values())) == [(0, 0), (1, 1)]
    for u in plan.by_stage("finetune"):  # repeat r starts from pretraining seed r mod 2
        assert seeds[u.config.pretrain_unit][0] == u.config.repeat % 2
        assert u.depends_on == u.config.pretrain_unit
    # scratch units do not depend on pretraining: they are the same units as before
    assert {u.unit_id for u in plan.by_stage("scratch")} == {
        u.unit_id for u in one_seed.by_stage("scratch")
    }
    assert plan.counts()["stages"]["pretrain"]["axes"]["pretrain_repeat"] == {0: 4, 1: 4}


def test_matched_validation_is_part_of_the_units_below_full_data():
    spec = copy.deepcopy(BASE)
    spec["finetune"]["val_fraction"] = "match"
    plan = make_plan(parse_spec(spec))
    full = {u.unit_id for u in make_plan(parse_spec(BASE)).units}
    for u in plan.units:
        if u.stage == "pretrain" or u.config.data_fraction == 1.0:
            assert u.config.val_fraction is None and u.unit_id in full
        else:
            assert u.config.val_fraction == "match" and u.unit_id not in full


def test_two_sources_of_the_same_recordings_are_never_paired():
    """cpsc2018_original and cpsc2018 (CinC 2020's copy) read the same recordings, split
    independently: neither pretrains for the other, whatever self_pairs says."""
    for self_pairs in ("exclude", "patient_disjoint"):
        spec = copy.deepcopy(BASE)
        spec.update(
            architectures=["gru"],
            upstream=["cpsc2018_original", "synth_up_a"],
            downstream=["cpsc2018"],
            self_pairs=self_pairs,
            datasets={
                "cpsc2018_original": {"source": "/nonexistent/a"},
                "cpsc2018": {"source": "/nonexistent/b"},
            },
        )
        plan = make_plan(parse_spec(spec))
        ups = {u.config.upstream for u in plan.by_stage("finetune")}
        assert ups == {"synth_up_a"}, self_pairs
        assert any("both read the cpsc2018 recordings" in w for w in plan.excluded)


def test_a_changed_model_gets_new_unit_ids():
    """resnet1d* revision 2 (the authors' head) is in its units' configs, so no result of
    the earlier model is taken for one of it; models never changed keep their ids."""
    from study.models import model_revision

    plan = make_plan(parse_spec(BASE))
    for u in plan.units:
        revision = model_revision(u.config.architecture)
        expected = revision if revision > 1 else None
        assert u.config.architecture_revision == expected
    assert model_revision("resnet1d50") == 2 and model_revision("gru") == 1


def test_study_plan_prints_the_cost_of_pretraining_seeds(tmp_path, capsys):
    import yaml

    from study.cli import main

    spec = copy.deepcopy(BASE)
    spec["pretrain"] = {"repeats": 3, "epochs": 7}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cost: 12 pretraining runs of up to 7 epochs" in out
    assert "3 pretraining seeds" in out and "4 runs with one seed" in out
    assert "pretrain_repeat" in out  # the axis of the pretraining stage
