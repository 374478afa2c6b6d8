"""The command line on bad input, as a user meets it: exit code 2, one line on stderr that
names the problem (the rule and the value), no traceback; and a study missing its plan
comes back whole. Nothing here starts Ray."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.cli import main
from study.schema import PRETRAIN_SCHEMA, TRIALS_SCHEMA, trial_path
from study.store import Store
from study.sweep.load import spec_to_yaml
from study.sweep.plan import make_plan
from study.sweep.runner import init_study
from tests.conftest import free_port
from tests.sweep._smoke import smoke_spec

ROOT = Path(__file__).resolve().parents[1]
STUDY = str(ROOT / ".venv" / "bin" / "study")


def _one_error_line(err: str) -> str:
    """The single line a failed command printed (no traceback, nothing else)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line and not line.startswith("[study]")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def _run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`study ARGS...` in a subprocess, as a user runs it."""
    return subprocess.run(
        [STUDY, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def _study(path: Path, **finetune) -> Store:
    """A planned study (spec.yaml and plan.parquet) of the smoke spec, nothing run."""
    store = Store(str(path))
    init_study(store, smoke_spec(**finetune))
    return store


def _finished(path: Path) -> Store:
    """A study whose every planned unit has its result row (written in the exact on-disk
    format), so resume, status and report run without Ray."""
    spec = smoke_spec(freeze_depths=[0], data_fractions=[1.0])
    store = _study(path, freeze_depths=[0], data_fractions=[1.0])
    when = pd.Timestamp("2026-12-01 10:00", tz="UTC")
    for row in make_plan(spec).table().to_dict("records"):
        uid = row["unit_id"]
        if row["stage"] == "pretrain":
            part = {"unit_id": uid, "architecture": row["architecture"], "finished_at": when}
            table = pa.Table.from_pylist([part], schema=PRETRAIN_SCHEMA)
            store.write_table(f"results/pretrain/{uid}.parquet", table)
            continue
        part = {
            **{k: row[k] for k in ("unit_id", "architecture", "init", "downstream")},
            "upstream": row["upstream"] if row["init"] == "pretrained" else None,
            "pretrain_task": row["pretrain_task"] if row["init"] == "pretrained" else None,
            "freeze_depth": 0,
            "data_fraction": 1.0,
            "repeat": 0,
            "seed": 0,
            "test_macro_auroc": 0.8 if row["init"] == "pretrained" else 0.7,
            "task": "multi_label",
            "code_version": "0.1.0+test",
            "finished_at": when,
        }
        store.write_table(trial_path(uid), pa.Table.from_pylist([part], schema=TRIALS_SCHEMA))
    return store


# --- 1. a spec that is not a YAML text file ---------------------------------------------------
@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_binary_spec_is_named_as_not_a_yaml_text_file(tmp_path, capsys, command):
    spec = tmp_path / "model.yaml"
    spec.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert main([command, str(spec)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"experiment spec {spec} is not a YAML text file" in line
    assert "byte 0x89 at offset 0 is not utf-8" in line


def test_a_yaml_syntax_error_in_a_spec_names_the_line(tmp_path, capsys):
    spec = tmp_path / "broken.yaml"
    spec.write_text("name: x\narchitectures: [resnet1d18\nupstream: [synth_tiny]\n")
    assert main(["plan", str(spec)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"experiment spec {spec} is not valid YAML: line 3, column 9:" in line


# --- 2. a damaged stored spec -----------------------------------------------------------------
def _damage(store: Store, how: str) -> None:
    text = spec_to_yaml(smoke_spec())
    damaged = {
        # cut off in the middle of a key, as an interrupted copy leaves it
        "truncated": text[: text.index("finetune:")] + "finetune:\n  epochs: 2\n  batch_si",
        "syntax": text.replace("downstream:\n", "downstream: : [\n"),
        "binary": b"\x00\xff" * 64,
    }[how]
    store.write_bytes("spec.yaml", damaged if isinstance(damaged, bytes) else damaged.encode())


@pytest.mark.parametrize(
    ("how", "where"),
    [
        ("truncated", "is not valid YAML: line 36, column 11: could not find expected ':'"),
        ("syntax", "is not valid YAML: line 10, column 13: mapping values are not allowed"),
        ("binary", "is not a YAML text file: byte 0xff at offset 1 is not utf-8"),
    ],
)
@pytest.mark.parametrize(
    "command", [["resume", "--no-report"], ["status"], ["report", "--out", "OUT"]]
)
def test_a_damaged_stored_spec_is_named_with_its_line_and_how_to_recover(
    tmp_path, capsys, how, where, command
):
    store = _study(tmp_path / "s")
    _damage(store, how)
    args = [a.replace("OUT", str(tmp_path / "report")) for a in command]
    assert main([args[0], store.uri, *args[1:]]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"the study's stored spec is damaged: {store.uri}/spec.yaml {where}" in line
    recover = "restore it from a backup, or copy the experiment file the study was run with to"
    assert f"{recover} {store.uri}/spec.yaml" in line
    assert "refuse the study" in line


def test_a_stored_spec_that_no_longer_validates_says_it_is_the_stored_one(tmp_path, capsys):
    store = _study(tmp_path / "s")
    text = spec_to_yaml(smoke_spec())
    store.write_bytes("spec.yaml", text[: text.index("downstream:")].encode())  # at a line end
    assert main(["status", store.uri]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"invalid experiment spec {store.uri}/spec.yaml:" in err
    assert "downstream: required key is missing" in err
    assert "this is the study's stored spec: damaged, edited, or written by a version" in err


# --- 3. --out / --report must be folders ------------------------------------------------------
def test_report_out_must_be_a_folder(tmp_path, capsys):
    store = _finished(tmp_path / "s")
    out = tmp_path / "report.html"
    out.write_text("an existing file")
    assert main(["report", store.uri, "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"error: --out must be a folder, got {str(out)!r}: an existing file"
    assert main(["report", store.uri, "--out", str(out / "sub")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"error: --out must be a folder, got {str(out / 'sub')!r}: {out} is a file"
    assert out.read_text() == "an existing file"


def test_run_refuses_a_report_path_that_is_a_file_before_running(tmp_path, capsys):
    out = tmp_path / "report"
    out.write_text("x")
    spec = ROOT / "experiments" / "quickstart.yaml"
    args = ["run", str(spec), "--storage", str(tmp_path / "st"), "--report", str(out)]
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"error: --report must be a folder, got {str(out)!r}: an existing file"
    assert not (tmp_path / "st").exists()  # nothing was planned or prepared


# --- 4. a Ray address with no cluster behind it -----------------------------------------------
def test_an_address_without_a_cluster_fails_within_seconds(tmp_path):
    port = free_port()  # nothing listens there
    spec = ROOT / "experiments" / "quickstart.yaml"
    start = time.monotonic()
    done = _run("run", str(spec), "--storage", str(tmp_path), "--address", f"127.0.0.1:{port}")
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stderr)
    assert line.startswith(f"error: no Ray cluster at 127.0.0.1:{port} (--address): ")
    assert "ray start --head --port=6379" in line
    # the same from RAY_ADDRESS (what `ray job submit` and cluster shells set)
    store = _study(tmp_path / "s")
    done = _run("resume", store.uri, env={"RAY_ADDRESS": f"127.0.0.1:{port}"})
    assert done.returncode == 2, done.stderr
    assert _one_error_line(done.stderr).startswith(
        f"error: no Ray cluster at 127.0.0.1:{port} (RAY_ADDRESS): "
    )
    assert time.monotonic() - start < 60  # two interpreter starts; Ray would retry minutes
    assert not list((tmp_path / "s").glob("prepared/*"))  # refused before preparing data


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("ray://127.0.0.1:10001", "Ray Client and other protocol addresses are not supported"),
        ("http://127.0.0.1:8265", "that is a job server (dashboard) address: run the study"),
        ("head-node", "--address must be a Ray cluster address HOST:PORT"),
    ],
)
def test_client_job_server_and_portless_addresses_are_refused(tmp_path, capsys, address, says):
    store = _study(tmp_path / "s")
    assert main(["resume", store.uri, "--address", address]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert says in line and address in line


# --- 5. --name stays inside --storage ---------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "a/b", ".", "..", "/tmp/x", ".hidden", ""])
def test_a_name_that_is_not_a_study_name_is_refused(tmp_path, capsys, name):
    storage = tmp_path / "storage"
    spec = ROOT / "experiments" / "quickstart.yaml"
    assert main(["run", str(spec), "--storage", str(storage), "--name", name]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--name must be a study name like a spec's name: letters, digits and _.- only" in line
    assert line.endswith(f"got {name!r}")
    assert not storage.exists() and not (tmp_path / "x").exists()


# --- 6. a missing bucket is named by every command that opens a study -------------------------
@pytest.mark.parametrize(
    "command", [["resume", "--no-report"], ["status"], ["report", "--out", "OUT"]]
)
def test_a_missing_bucket_is_named(s3_server, tmp_path, capsys, command):
    uri = "s3://no-such-bucket/studies/quickstart"
    args = [a.replace("OUT", str(tmp_path / "report")) for a in command]
    assert main([args[0], uri, *args[1:]]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"store {uri}: bucket 'no-such-bucket' does not exist" in line


def test_a_prefix_without_a_study_in_an_existing_bucket_is_not_a_study(s3_server, capsys):
    _, bucket, _ = s3_server
    uri = f"s3://{bucket}/no-study-here"
    assert main(["status", uri]) == 2
    assert _one_error_line(capsys.readouterr().err) == f"error: {uri} is not a study (no spec.yaml)"


# --- 7. a deleted plan.parquet is written again -----------------------------------------------
@pytest.mark.parametrize(
    "command",
    [["resume", "--no-report"], ["status"], ["report", "--out", "OUT", "--bootstrap", "0"]],
)
def test_a_deleted_plan_is_written_again_by_every_command(tmp_path, capsys, command):
    store = _finished(tmp_path / "s")
    planned = Path(store.path("plan.parquet")).read_bytes()
    Path(store.path("plan.parquet")).unlink()
    args = [a.replace("OUT", str(tmp_path / "report")) for a in command]
    assert main([args[0], store.uri, *args[1:]]) == 0, capsys.readouterr().err
    again = pq.read_table(store.path("plan.parquet"))
    assert again.equals(pq.read_table(pa.BufferReader(planned)))  # the same units
    assert b"code_version" in again.schema.metadata
    assert "plan.parquet is missing: writing it again from its spec.yaml" in capsys.readouterr().err


# --- study submit: what it refuses before anything reaches a cluster --------------------------
QUICKSTART = "experiments/quickstart.yaml"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--storage", "studies"],
            "study submit --storage must be s3://bucket/prefix or an absolute path every node sees",
        ),
        (
            ["--storage", "/shared/studies", "--address", "127.0.0.1:6379"],
            "study submit --address must be a Ray job server http://HOST:PORT",
        ),
        (
            ["--storage", "/shared/studies", "--name", "../x"],
            "--name must be a study name like a spec's name",
        ),
        (
            ["--storage", "/shared/studies", "--", "--address", "127.0.0.1:6379"],
            "give --storage and --name to study submit itself, and no --address",
        ),
    ],
    ids=["relative-storage", "gcs-address", "bad-name", "address-after-dashes"],
)
def test_submit_refuses_bad_options(monkeypatch, capsys, args, says):
    monkeypatch.chdir(ROOT)
    assert main(["submit", QUICKSTART, *args]) == 2
    assert says in _one_error_line(capsys.readouterr().err)


def test_submit_refuses_a_spec_outside_the_working_dir(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "quickstart.yaml"
    shutil.copy(ROOT / QUICKSTART, spec)
    monkeypatch.chdir(ROOT)
    assert main(["submit", str(spec), "--storage", "/shared/studies"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"SPEC must lie inside the working directory {ROOT}, which the job receives" in line


def test_submit_refuses_to_run_outside_a_checkout_of_this_code(tmp_path, monkeypatch, capsys):
    shutil.copy(ROOT / QUICKSTART, tmp_path / "quickstart.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["submit", "quickstart.yaml", "--storage", "/shared/studies"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "run it from the repository root" in line and str(tmp_path) in line


def test_submit_without_a_job_server_fails_within_seconds(monkeypatch, capsys):
    port = free_port()
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # --address wins over it
    start = time.monotonic()
    args = ["--storage", "/shared/studies", "--address", f"http://127.0.0.1:{port}"]
    assert main(["submit", QUICKSTART, *args]) == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if not x.startswith("warning:")]
    assert _one_error_line("\n".join(line)).startswith(
        f"error: no Ray job server at http://127.0.0.1:{port} (Connection refused"
    )
    assert "ray start --head" in err
    assert time.monotonic() - start < 20
