"""Unit ids are pinned: resuming a study after upgrading the code depends on them staying put,
and when they do move, `study resume` says so instead of re-running everything."""

from __future__ import annotations

import hashlib
import io

import pyarrow.parquet as pq
import pytest

from study.cli import main
from study.errors import ConfigError
from study.store import Store
from study.sweep.load import load_spec, parse_spec
from study.sweep.plan import make_plan
from study.sweep.runner import init_study, load_study, resume_study, write_plan
from tests.conftest import ROOT

SPEC = {
    "name": "pinned",
    "seed": 3,
    "architectures": [{"name": "resnet1d18", "options": {"base_width": 8}}],
    "upstream": ["synth_up_a"],
    "downstream": ["synth_down_x"],
    "pretrain": {"epochs": 2},
    "finetune": {"freeze_depths": [0, "all"], "data_fractions": [0.5, 1.0], "repeats": 2},
}

# Every unit of SPEC, in plan order. A change here means stored studies can no longer be
# resumed by this code: make it on purpose and say so (study resume refuses such a study).
# Moved on purpose: resnet1d* revision 2 (the authors' 512-wide head; issue 9).
GOLDEN_IDS = [
    "pt-8f5aaf8b8f3109d4",
    "sc-2f6ddc03cb180247",
    "ft-64049ede995c2076",
    "ft-0f8e70decff3a89d",
    "sc-125e0ba079782cfc",
    "ft-3b59fe0e83c56820",
    "ft-d0a26850ebb1e1d4",
    "sc-622744c9fbed9f50",
    "ft-3351acc038b1bb1f",
    "ft-0cd08b94347cb575",
    "sc-bb2c1684eea27899",
    "ft-87bd0d3b1971a93c",
    "ft-bfe8083a79bfdc5d",
]

# sha256 of the newline-joined unit ids of each study file, in plan order.
GOLDEN_FILES = {
    "quickstart": "e67176f329699af0f879d7113da41f741202f1eb1ea248559deba08f7e4abcc3",
    "nguyen_do_2024": "34846fbcfd5de717e1c94616502ecc8861c4e236aa3b79414819d24af498e81e",
    "jang_2021": "b3dc9950204ef3d37212148ca60a5e45b778a2eff1033869f987bae1ef80a876",
    "huerta_2020": "5288583505b35a0afd41805a1518fc1226fa70cb1e713ec807f1f446546ae9d1",
    "weimann_conrad_2021": "574f696c9fbb4b9605346aeaefb29285d5e9aaf8ae21898b0694f0b512335294",
    "qrs_noise": "6e15a2dcb1eab7b568d1ad87d0c253fcb3e8ab527735d90f9a02ce707231218b",
}


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def test_the_ids_of_a_fixed_spec_are_pinned():
    assert [u.unit_id for u in make_plan(parse_spec(SPEC)).units] == GOLDEN_IDS


@pytest.mark.parametrize("name", sorted(GOLDEN_FILES))
def test_the_ids_of_every_study_file_are_pinned(name):
    plan = make_plan(load_spec(ROOT / "experiments" / f"{name}.yaml"))
    assert _digest([u.unit_id for u in plan.units]) == GOLDEN_FILES[name]


def _stored_by_older_code(store: Store) -> None:
    """Rewrite the stored plan as a release with other ids would have written it."""
    table = pq.read_table(io.BytesIO(store.read_bytes("plan.parquet")))
    moved = [
        uid[:3] + hashlib.sha256(uid.encode()).hexdigest()[:16]
        for uid in table.column("unit_id").to_pylist()
    ]
    for column in ("unit_id", "base_unit_id"):  # a plan without a search: the same ids
        table = table.set_column(table.schema.get_field_index(column), column, [moved])
    table = table.replace_schema_metadata(
        {b"code_version": b"0.0.9+g1234abc", b"planned_at": b"2026-11-01T10:00:00+00:00"}
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.write_bytes("plan.parquet", buf.getvalue())


def test_resume_refuses_a_study_whose_ids_moved_and_says_why(tmp_path, capsys):
    spec = parse_spec(SPEC)
    store = Store(str(tmp_path / "pinned"))
    init_study(store, spec)
    load_study(store.uri)  # the same code: no complaint
    _stored_by_older_code(store)
    with pytest.raises(ConfigError) as e:
        resume_study(store.uri)
    text = str(e.value)
    assert "stored plan does not match what this code plans" in text
    assert "13 units, planned by code version 0.0.9+g1234abc at 2026-11-01T10:00:00" in text
    assert "13 of the stored ids no longer among them and 13 new" in text
    # the command line says the same, without a traceback, and so does status
    assert main(["resume", store.uri, "--no-report"]) == 2
    assert "planned by code version 0.0.9+g1234abc" in capsys.readouterr().err
    assert main(["status", store.uri]) == 2
    assert "unit ids moved" in capsys.readouterr().err.lower()
    # `study run` with the same spec refuses too (it would resume the study)
    with pytest.raises(ConfigError, match="planned by code version 0.0.9"):
        init_study(store, spec)


def test_a_deleted_plan_is_written_again(tmp_path):
    spec = parse_spec(SPEC)
    store = Store(str(tmp_path / "pinned"))
    init_study(store, spec)
    meta = pq.read_metadata(store.path("plan.parquet")).metadata
    assert meta[b"code_version"] and meta[b"planned_at"]
    (tmp_path / "pinned" / "plan.parquet").unlink()
    init_study(store, spec)
    assert pq.read_table(store.path("plan.parquet")).num_rows == len(GOLDEN_IDS)
    write_plan(store, make_plan(spec))  # idempotent
    assert load_study(store.uri)[2].units[0].unit_id == GOLDEN_IDS[0]
