"""The `study` command: plan, run, status, resume and report a transfer-learning study."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from study.errors import ConfigError, StudyError

DEFAULT_STORAGE = "studies"
#: Where `study submit` finds the job server by default: `ray dashboard cluster.yaml`
#: forwards the head's dashboard (which serves the Jobs API) there.
DEFAULT_JOB_SERVER = "http://127.0.0.1:8265"
#: Seconds to wait for the job server's port before saying there is none.
PROBE_TIMEOUT_S = 5.0


def _cmd_plan(args: argparse.Namespace) -> int:
    from study.sweep.load import load_spec
    from study.sweep.plan import make_plan

    spec = load_spec(args.spec)
    plan = make_plan(spec)
    counts = plan.counts()
    groups = _search_groups(spec, plan)
    wants_estimate = args.estimate or args.source is not None
    estimate = _plan_estimate(args, spec, plan) if wants_estimate else None
    if args.json:
        if estimate is not None:
            counts["estimate"] = estimate.to_dict()
        if groups is not None:
            counts["search"] = groups
        print(json.dumps(counts, indent=2))
        return 1 if wants_estimate and estimate is None else 0
    print(f"study {spec.name}: {counts['total']} units")
    for stage, info in counts["stages"].items():
        print(f"  {stage:<9} {info['units']:>6} units")
        for axis, values in info["axes"].items():
            shown = ", ".join(f"{k}: {v}" for k, v in values.items())
            print(f"      {axis:<14} {shown}")
    for why in plan.excluded:
        print(f"  excluded: {why}")
    n_pre = counts["stages"]["pretrain"]["units"]
    if n_pre:
        seeds = spec.pretrain.repeats
        print(
            f"  cost: {n_pre} pretraining runs of up to {spec.pretrain.epochs} epochs on "
            f"{spec.pretrain.num_workers} DDP workers each"
            + (
                f" ({seeds} pretraining seeds, pretrain.repeats: fine-tuning repeat r starts "
                f"from seed r mod {seeds}; {n_pre // seeds} runs with one seed)"
                if seeds > 1
                else ""
            )
        )
    n_fit = counts["total"] - n_pre
    print(f"  cost: {n_fit} fine-tuning / from-scratch runs of up to {spec.finetune.epochs} epochs")
    print(f"total {counts['total']}")
    if groups is not None:
        print("\n".join(_search_lines(spec, groups)))
    if estimate is not None:
        print("\n".join(_estimate_lines(estimate)))
    return 1 if wants_estimate and estimate is None else 0


def _search_groups(spec, plan) -> list[dict] | None:
    """The spec's search groups as plain data (None without a `search:` section)."""
    if spec.search is None:
        return None
    from study.sweep.search import search_groups

    return [
        {
            "group_id": g.group_id,
            "section": g.section,
            "key": {k: v for k, v in g.key},
            "arm": g.arm,
            "trials": spec.search.trials,
            "params": list(g.params),
            "waiting_units": len(g.unit_ids),
        }
        for g in search_groups(spec, plan)
    ]


def _search_lines(spec, groups: list[dict]) -> list[str]:
    """`study plan`'s search block: each group, its budget and the units waiting on it."""
    s = spec.search
    out = [
        f"search: {len(groups)} groups x {s.trials} trials ({len(groups) * s.trials} trials), "
        f"{s.sampler} sampler, pruner {s.pruner}, on {s.metric} (validation), "
        f"at data fraction {s.fraction}"
    ]
    for g in groups:
        key = ", ".join(f"{k}: {v}" for k, v in g["key"].items())
        out.append(
            f"  {g['group_id']}  {key}  tunes {', '.join(g['params'])}; "
            f"{g['waiting_units']} units wait for its values"
        )
    out.append(
        "  the units above are listed with the fixed options; `study run` runs each group's "
        "trials first, and its chosen values enter its units' configs (and ids)."
    )
    if s.applies_to == "both":
        out.append(
            "  the fine-tuning groups start from the pretraining units above: a pretraining "
            "group's choice gives them new ids, and their trials run after it."
        )
    return out


def _estimate_lines(est) -> list[str]:
    """`study plan --estimate`'s table: a line per stage and the basis of its numbers."""
    from study.sweep.estimate import MODEL

    out = [
        f"estimate from {est.measured} finished units of {est.source}",
        f"  model: {MODEL[0]}",
        f"  {MODEL[1]}",
        f"  {'stage':<9} {'units':>6} {'unit-hours':>11} {'GPUs/unit':>10} {'GPU-hours':>10}",
    ]
    for e in est.stages:
        out.append(
            f"  {e.stage:<9} {e.units:>6} {_hours(e.unit_hours):>11} {e.gpus_per_unit:>10g} "
            f"{_hours(e.gpu_hours):>10}"
        )
        if e.units:
            out.append(f"      basis: {e.basis}")
    out.append(
        f"  {'total':<9} {est.units:>6} {_hours(est.unit_hours):>11} {'':>10} "
        f"{_hours(est.gpu_hours):>10}"
    )
    if est.left_out:
        out.append(
            f"  ({est.left_out} stored rows left out: no duration, or a config this code "
            "cannot read)"
        )
    return out


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.2f}" if h >= 1 else f"{h:.3f}"


def _plan_estimate(args: argparse.Namespace, spec, plan):
    """The estimate from the durations stored in `--from`, else in the study `study run
    SPEC` writes (STUDY_STORAGE or ./studies, under the spec's name); None, with what to do
    printed, when that store holds no finished unit."""
    from study.store import Store
    from study.sweep.estimate import estimate_from_store
    from study.sweep.load import read_stored_spec

    storage = Store(os.environ.get("STUDY_STORAGE", DEFAULT_STORAGE))
    store = Store(args.source) if args.source else storage.child(spec.name)
    store.check_bucket()
    if args.source or store.exists("spec.yaml"):
        read_stored_spec(store)  # a study, or the error says why not
        est = estimate_from_store(plan, spec, store)
        if est.measured:
            return est
        where = f"{store.uri} has no finished unit"
    else:
        where = f"no study at {store.uri} (where `study run {args.spec}` writes it)"
    calibration = storage.child(f"{spec.name}-calibration").uri
    print(
        f"no estimate: {where}. Run a short calibration study first: a copy of the spec with "
        "`finetune: {repeats: 1, data_fractions: [0.1]}` (fewer epochs are fine: time scales "
        f"with data fraction x epochs), `study run calibration.yaml --name "
        f"{spec.name}-calibration`, then `study plan {args.spec} --from {calibration}`",
        file=sys.stderr,
    )
    return None


def _finish(outcome, report_dir: Path | None) -> int:
    uri = outcome.store.uri
    print(
        f"results: {uri}/results/trials ({outcome.trials_done}/{outcome.trials_planned} "
        f"fine-tune/scratch rows) and {uri}/results/pretrain ({outcome.done - outcome.trials_done}"
        f"/{outcome.planned - outcome.trials_planned} pretraining runs)"
    )
    if outcome.failed:
        print(
            f"{len(outcome.failed)} units not done; `study status {uri}` lists failures, "
            f"`study resume {uri}` runs them again",
            file=sys.stderr,
        )
    if report_dir is not None and outcome.done:
        from analysis import report_study

        paths = report_study(uri, report_dir)
        print(
            f"report: {report_dir} ({len(paths)} files; open {paths.get('index.html')} in a "
            f"browser; summary: {paths.get('summary.md')})"
        )
    return 0 if outcome.complete else 1


def _report_dir(args: argparse.Namespace, uri: str) -> Path | None:
    if args.no_report:
        return None
    if args.report:
        return Path(args.report)
    return Path(uri) / "report" if "://" not in uri else Path("report") / Path(uri).name


def _output_folder(path: str, flag: str) -> Path:
    """`path` as a folder to write into (made if missing), checked before any work is done.

    Raises:
        ConfigError: `path`, or a folder above it, is an existing file.
    """
    out = Path(path)
    for p in (out, *out.parents):
        if p.exists():
            if p.is_dir():
                break
            if p == out:
                raise ConfigError(f"{flag} must be a folder, got {path!r}: an existing file")
            raise ConfigError(f"{flag} must be a folder, got {path!r}: {p} is a file")
    return out


def _check_run_options(args: argparse.Namespace) -> None:
    """What `run` and `resume` can check in a second, before any work: the report folder
    and the Ray address (an unreachable cluster fails here, not after the data is ready)."""
    from study.sweep.runner import check_ray_address

    if args.report and not args.no_report:
        _output_folder(args.report, "--report")
    check_ray_address(args.address)


def _cmd_run(args: argparse.Namespace) -> int:
    from study.sweep.load import check_study_name, load_spec
    from study.sweep.runner import run_study

    spec = load_spec(args.spec)
    if args.name is not None:
        check_study_name(args.name)
    _check_run_options(args)
    outcome = run_study(
        spec, args.storage, name=args.name, address=args.address, takeover=args.takeover
    )
    return _finish(outcome, _report_dir(args, outcome.store.uri))


def _cmd_resume(args: argparse.Namespace) -> int:
    from study.sweep.runner import resume_study

    _check_run_options(args)
    outcome = resume_study(args.study, address=args.address, takeover=args.takeover)
    return _finish(outcome, _report_dir(args, outcome.store.uri))


def _probe(host: str, port: int) -> str | None:
    """None when `host:port` accepts a TCP connection within PROBE_TIMEOUT_S, else why not."""
    try:
        with socket.create_connection((host, port), PROBE_TIMEOUT_S):
            return None
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        return f"{reason} within {PROBE_TIMEOUT_S:g} s"


@contextlib.contextmanager
def _without_env(*names: str):
    """Ray's job client lets RAY_API_SERVER_ADDRESS and RAY_ADDRESS override the address it
    is given: hide them while it connects, so that --address means what it says."""
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _job_client(address: str | None):
    """A Ray JobSubmissionClient for the job server at `address` (else
    RAY_API_SERVER_ADDRESS, an http:// RAY_ADDRESS, else DEFAULT_JOB_SERVER).

    Raises:
        ConfigError: the address is not http(s)://HOST:PORT, or no job server answers there.
    """
    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    env = os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS", "")
    address = address or (env if env.startswith(("http://", "https://")) else DEFAULT_JOB_SERVER)
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(
            "study submit --address must be a Ray job server http://HOST:PORT (the head's "
            f"dashboard, port 8265 by default), got {address!r}"
        )
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    start = (
        "start a cluster with `ray start --head --dashboard-host=0.0.0.0` (its job server "
        "listens on port 8265), or forward one with `ray dashboard cluster.yaml`"
    )
    why = _probe(parsed.hostname, port)
    if why is None:
        try:
            with _without_env("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
                return JobSubmissionClient(address)
        except AuthenticationError as e:  # Ray's token authentication
            refused = "refused the token given" if "failed" in str(e) else "requires a token"
            raise ConfigError(
                f"the Ray job server at {address} {refused} ({str(e).splitlines()[0]}): set "
                "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or "
                "~/.ray/auth_token (`ray get-auth-token` on the head prints it)"
            ) from None
        except (ConnectionError, RuntimeError, requests.RequestException) as e:
            why = " ".join(str(e).split())
    raise ConfigError(f"no Ray job server at {address} ({why}); {start}")


def _cmd_submit(args: argparse.Namespace) -> int:
    from study.sweep.load import check_study_name, load_spec
    from study.sweep.runner import CODE_VERSION_ENV, describe_commit

    spec = load_spec(args.spec)  # a broken spec fails here, not on the cluster
    name = check_study_name(args.name) if args.name is not None else spec.name
    root = Path.cwd()
    if not (root / "study" / "cli.py").is_file():
        raise ConfigError(
            "study submit uploads the working directory as the job's code: run it from the "
            f"repository root (the folder holding study/ and pyproject.toml), not {root}"
        )
    try:
        spec_rel = Path(args.spec).resolve().relative_to(root)
    except ValueError:
        raise ConfigError(
            f"SPEC must lie inside the working directory {root}, which the job receives, "
            f"got {args.spec}"
        ) from None
    storage = args.storage
    if "://" not in storage and not Path(storage).is_absolute():
        raise ConfigError(
            "study submit --storage must be s3://bucket/prefix or an absolute path every "
            "node sees (a shared filesystem): a relative path would land in the job's "
            f"temporary working directory on the cluster, got {storage!r}"
        )
    extra = args.extra
    taken = [a for a in extra if a.split("=", 1)[0] in ("--storage", "--name", "--address")]
    if taken:
        raise ConfigError(
            f"give --storage and --name to study submit itself, and no --address (the job "
            f"runs on the cluster and connects to it); got {' '.join(taken)} after --"
        )
    command = ["run", spec_rel.as_posix(), "--storage", storage, "--name", name, *extra]
    build_parser().parse_args(command)  # a bad option fails here (argparse, exit 2)
    commit = describe_commit(root)
    if commit is None:
        print(
            f"warning: {root} is not a git checkout: the study's rows will record an unknown "
            "commit",
            file=sys.stderr,
        )
    runtime_env: dict = {"working_dir": "."}
    if commit:
        runtime_env["env_vars"] = {CODE_VERSION_ENV: commit}
    client = _job_client(args.address)
    try:
        job_id = client.submit_job(
            entrypoint=shlex.join(["python", "-m", "study.cli", *command]),
            runtime_env=runtime_env,
            metadata={"study": name, "storage": storage, "commit": commit or "unknown"},
        )
    except (RuntimeError, ValueError, OSError) as e:  # e.g. a working dir over Ray's limit
        raise ConfigError(
            f"the Ray job server at {client.get_address()} did not take the job: "
            f"{' '.join(str(e).split())}"
        ) from None
    uri = storage.rstrip("/") + "/" + name
    server = client.get_address()
    print(f"submitted job {job_id} (study {name}, commit {commit or 'unknown'}) to {server}")
    print(f"follow it: ray job logs --follow --address {server} {job_id}")
    print(f"then: study status {uri}; study report {uri} --out report/")
    if not args.wait:
        return 0
    return _wait_for_job(client, job_id)


def _wait_for_job(client, job_id: str) -> int:
    """Wait for the job to end; 0 if it succeeded, else 1 with its last log lines."""
    from ray.job_submission import JobStatus

    status = client.get_job_status(job_id)
    while not status.is_terminal():
        time.sleep(2)
        status = client.get_job_status(job_id)
    print(f"job {job_id}: {status.value}")
    if status == JobStatus.SUCCEEDED:
        return 0
    tail = client.get_job_logs(job_id).splitlines()[-20:]
    print("\n".join(f"  {line}" for line in tail), file=sys.stderr)
    return 1


def _cmd_status(args: argparse.Namespace) -> int:
    from study.sweep.status import inspect_study

    state = inspect_study(args.study)
    print(state.table.to_string())
    if state.search is not None:
        print("\n".join(_search_status_lines(state.search)))
    lease, shown = state.lease, args.show_failures
    if lease is None:
        print("driver: none (no driver holds the study)")
    elif lease.live():
        print(f"driver: {lease.describe()}")
    else:
        gone = "stopping" if lease.state == "stopping" and not lease.gone() else "expired"
        gone = "of a dead driver" if lease.holder_dead() else gone
        print(f"driver: lease {gone}: {lease.describe()}")
    running = state.markers("running")
    for m in running[: args.show_running]:
        print(_running_line(m, state.checked_at))
    if len(running) > args.show_running:
        print(f"... and {len(running) - args.show_running} more running (--show-running N)")
    print("\n".join(_eta_lines(state.eta, args.study)))
    for rel, why in sorted(state.corrupt.items()):
        print(f"corrupt {rel}: {why} (`study resume` moves it aside and runs its unit again)")
    for kind in ("interrupted", "failed"):
        rows = state.markers(kind)
        for m in rows[:shown]:
            print(f"{kind} {m['unit_id']} on {_where(m)} at {m['updated_at']}: {_one_line(m)}")
        if len(rows) > shown:
            print(f"... and {len(rows) - shown} more {kind} (--show-failures N lists more)")
    if state.markers("failed")[:shown]:
        print(f"(each failed unit's whole error and traceback: {args.study}/runs/UNIT_ID.json)")
    return 0


def _search_status_lines(groups: list) -> list[str]:
    """`study status`'s search block: per group its trials by state of the budget, the best
    so far and whether its values are chosen, the unreadable trial parts, then a total."""
    out = []
    for g in groups:
        key = ", ".join(f"{k}: {v}" for k, v in g.key.items())
        if g.section == "pretrain":
            key += " (pretraining)"
        elif g.arm is None:
            key += " (both arms)"
        counts = f"{g.complete} complete, {g.pruned} pruned, {g.failed} failed"
        if g.corrupt:
            counts += f", {len(g.corrupt)} corrupt"
        if g.best_number is None:
            best = "no complete trial yet"
            if g.finished >= g.budget:
                best = "no trial completed: nothing to choose"
        else:
            params = ", ".join(f"{k}={_param(v)}" for k, v in sorted(g.best_params.items()))
            best = f"best {g.metric} {g.best_value:.4g} (trial {g.best_number}: {params})"
        chosen = "; chosen" if g.chosen else ""
        out.append(
            f"  {g.group_id}  {key}  {g.finished}/{g.budget} trials ({counts}); {best}{chosen}"
        )
        for rel, why in sorted(g.corrupt.items()):
            out.append(f"  corrupt {rel}: {why} (not counted as a trial)")
    done = sum(g.chosen for g in groups)
    finished, budget = sum(g.finished for g in groups), sum(g.budget for g in groups)
    metric = f"{groups[0].metric} ({groups[0].direction})" if groups else "its metric"
    return [
        f"search: {len(groups)} groups, on {metric}",
        *out,
        f"search total: {done} of {len(groups)} groups chosen, {finished} of {budget} trials "
        "finished",
    ]


def _param(value) -> str:
    """A sampled value on a status line: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


_ERROR_CHARS = 300  # of an error shown on a status line (the marker keeps all of it)


def _one_line(marker: dict) -> str:
    """A marker's error on one line, cut to _ERROR_CHARS."""
    text = " ".join(str(marker.get("error") or "no error recorded").split())
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def _where(marker: dict) -> str:
    """The host of a marker, and its Ray node when the marker names one."""
    host, node = marker.get("host") or "an unrecorded host", marker.get("node")
    return f"{host} (node {node})" if node else host


def _age(iso: str | None, now) -> float | None:
    """Seconds from the ISO time `iso` to `now`; None when absent or not a time."""
    from datetime import datetime

    try:
        return (now - datetime.fromisoformat(iso)).total_seconds()
    except (TypeError, ValueError):
        return None


def _duration(seconds: float) -> str:
    """A span of time, to the precision worth reading: 45 s, 12 min, 3 h 05 min, 2 d 4 h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 48 * 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _running_line(m: dict, now) -> str:
    """One running unit: id, stage, node (or host), epoch k/N, how long it has run."""
    epoch = m.get("epoch")
    epoch = int(epoch) if isinstance(epoch, int | float) and epoch == epoch else 0
    where = m.get("node") or m.get("host") or "an unrecorded host"
    parts = [f"running {m['unit_id']} {m['stage']} on {where}", f"epoch {epoch}/{m['max_epochs']}"]
    started, marked = _age(m.get("started_at"), now), _age(m.get("updated_at"), now)
    if started is not None:
        parts.append(f"for {_duration(started)}")
    if marked is not None and (started is None or epoch):
        parts.append(f"last marker {_duration(marked)} ago")
    attempt = m.get("attempt")
    if isinstance(attempt, int | float) and attempt == attempt and attempt > 1:
        parts.append(f"attempt {int(attempt)}")
    return ", ".join(parts)


def _units(n: int) -> str:
    return f"{n} unit" if n == 1 else f"{n} units"


def _eta_lines(eta, uri: str) -> list[str]:
    """When the study should end, and what that rests on."""
    if eta.units_left == 0:
        return ["ETA: nothing left to run (every planned unit is done)"]
    if eta.work_left_s is None:
        return ["no ETA yet: no unit has finished"]
    s = "" if eta.finished == 1 else "s"
    basis = f"from {eta.finished} finished unit{s}; {eta.running} running"
    left = f"  {eta.work_left_s / 3600:.2f} unit-hours left in {_units(eta.units_left)}"
    if eta.wall_s is None:
        head = f"no ETA: no unit is running ({basis}; `study resume {uri}` runs the rest)"
    else:
        head = f"ETA: {_duration(eta.wall_s)}, {basis}"
        left += f", {eta.running} at a time"
    if eta.relative_only:
        left += (
            f"; {eta.relative_only} of them of a stage without a finished unit (relative cost only)"
        )
    return [head, left]


def _open_for_report(uri: str) -> None:
    """What a report needs of the study before reading its results: the store (a missing
    bucket is named), a readable spec.yaml, and plan.parquet (written again if deleted).

    The spec is not checked against this code's rules here unless the plan must be
    rewritten: a study planned by an older version still gets its report.
    """
    from study.store import Store
    from study.sweep.load import read_stored_spec

    store = Store(uri)
    store.check_bucket()
    read_stored_spec(store)
    if not store.exists("plan.parquet"):
        from study.sweep.runner import load_study

        load_study(uri, check_plan=False)


def _cmd_report(args: argparse.Namespace) -> int:
    from analysis import report_study

    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    _output_folder(args.out, "--out")
    _open_for_report(args.study)
    paths = report_study(args.study, Path(args.out), n_boot=args.bootstrap)
    for name, p in sorted(paths.items()):
        print(f"{name}: {p}")
    print(f"open {Path(args.out) / 'index.html'} in a browser for the whole report")
    return 0


def _cmd_data_list(args: argparse.Namespace) -> int:
    from study.data import dataset_source, list_datasets
    from study.data.sources import describe_split

    for name in list_datasets():
        source = dataset_source(name)
        if not source.reads_folder:
            print(f"{name:<14} {source.kind} (built in)")
            continue
        sets = ", ".join(source.label_sets) or "-"
        print(
            f"{name:<14} {source.kind}; label sets: {sets}; {source.url} ({source.licence}); "
            f"{describe_split(source.split_by, source.split_basis)}"
        )
    return 0


def _cmd_data_download(args: argparse.Namespace) -> int:
    from study.data.download import download

    report = download(args.name, Path(args.dest), base_url=args.base_url, include=args.include)
    print(report)
    from study.data.download import SOURCES

    extra = SOURCES[args.name].prepare_args
    print(f"next: study data prepare {args.name} --source {args.dest} {extra}".rstrip())
    return 0


def _parse_options(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise StudyError(f"--option takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    import yaml
    from pydantic import ValidationError

    from study.data import prepare
    from study.data.config import DatasetConfig
    from study.data.sources import dataset_source, describe_split
    from study.errors import ConfigError

    pre = {
        k: v
        for k, v in {
            "fs": args.fs,
            "length": args.length,
            "normalize": args.normalize,
            "leads": args.leads.split(",") if args.leads else None,
            "bandpass": tuple(args.bandpass) if args.bandpass else None,
        }.items()
        if v is not None
    }
    try:
        config = DatasetConfig(
            source=args.source,
            label_set=args.label_set,
            options=_parse_options(args.option),
            preprocessing=pre,
            on_bad_record=args.on_bad_record,
        )
    except ValidationError as e:
        raise ConfigError(f"invalid preparation options: {e}") from None
    path = prepare(args.name, Path(args.cache) if args.cache else None, config, progress=True)
    meta = json.loads((path / "meta.json").read_text())
    report = meta.get("report", {})
    rows = "frames" if report.get("frames") else "records"
    print(
        f"prepared {args.name}: {meta['n_records']} {rows} of {meta['n_patients']} patients "
        f"-> {path}"
    )
    if meta.get("source_fingerprint"):
        print(
            f"  source {config.source}: {meta['source_files']} files, "
            f"{meta['source_bytes'] / 1e6:.1f} MB (fingerprint {meta['source_fingerprint'][:12]})"
        )
    print(
        f"  each {meta.get('input_kind', 'signal')} {tuple(meta.get('input_shape', ()))}, "
        f"{meta.get('label_kind', 'multi_label')} labels"
    )
    print(f"  classes ({report.get('label_set', '-')}): {', '.join(meta['classes'])}")
    for caveat in report.get("caveats", []):
        print(f"  caveat: {caveat}")
    print(f"  splits: {meta['split_counts']} ({meta['split_rule']})")
    if "split_by" in meta:
        print(f"  {describe_split(meta['split_by'], meta['split_basis'])}")
    else:  # a copy prepared before meta.json recorded it: the source's declaration
        print(f"  {dataset_source(args.name).describe_split()}")
    if report:
        print(
            f"  listed {report['records_listed']}, dropped without a label "
            f"{report['unlabelled_dropped']}, bad {len(report['bad_records'])}: "
            f"{report['bad_reasons']} (each listed in {path / 'meta.json'})"
        )
    print("spec entry (datasets:):")
    entry = {args.name: config.model_dump(mode="json", exclude_defaults=True)}
    print("  " + yaml.safe_dump(entry, sort_keys=False).replace("\n", "\n  ").rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="study", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("plan", help="print the units a spec expands to, without running")
    s.add_argument("spec")
    s.add_argument("--json", action="store_true", help="print the counts as JSON")
    s.add_argument(
        "--estimate",
        action="store_true",
        help="unit-hours and GPU-hours per stage, from the durations of the units stored in "
        "--from (default: the study `study run SPEC` writes, under STUDY_STORAGE or ./studies)",
    )
    s.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="STUDY_URI",
        help="a study (e.g. a short calibration run of this spec) whose finished units time "
        "the estimate; implies --estimate",
    )
    s.set_defaults(fn=_cmd_plan)

    def run_opts(s: argparse.ArgumentParser) -> None:
        s.add_argument(
            "--address",
            default=None,
            help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)",
        )
        s.add_argument(
            "--report",
            default=None,
            help="where to write the report (default: STUDY/report for a local store)",
        )
        s.add_argument("--no-report", action="store_true", help="do not write a report at the end")
        s.add_argument(
            "--takeover",
            action="store_true",
            help="take the study's lease from another driver whose heartbeat is still fresh "
            "(it stops at its next heartbeat); an expired lease is taken over without it",
        )

    s = sub.add_parser("run", help="run a study (units already in the store are not re-run)")
    s.add_argument("spec")
    s.add_argument(
        "--storage",
        default=os.environ.get("STUDY_STORAGE", DEFAULT_STORAGE),
        help="local path or s3://bucket/prefix (default ./studies)",
    )
    s.add_argument("--name", default=None, help="study name under the storage (default: spec's)")
    run_opts(s)
    s.set_defaults(fn=_cmd_run)

    s = sub.add_parser(
        "submit",
        help="run a study on a cluster as a Ray job (the code and its commit travel with it)",
        usage="study submit SPEC [--storage URI] [--name NAME] [--address http://HEAD:8265] "
        "[--wait] [-- RUN_OPTION ...]",
        description="Submit `python -m study.cli run SPEC ...` to a Ray job server, with the "
        "working directory as the job's code and its git commit recorded in every row. "
        "Options after -- go to `study run` (e.g. -- --no-report).",
    )
    s.add_argument("spec", help="the experiment file, inside the working directory")
    s.add_argument(
        "--storage",
        default=os.environ.get("STUDY_STORAGE"),
        required="STUDY_STORAGE" not in os.environ,
        help="s3://bucket/prefix, or an absolute path every node sees (default STUDY_STORAGE)",
    )
    s.add_argument("--name", default=None, help="study name under the storage (default: spec's)")
    s.add_argument(
        "--address",
        default=None,
        help="the job server, http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS, an http:// "
        f"RAY_ADDRESS, else {DEFAULT_JOB_SERVER})",
    )
    s.add_argument("--wait", action="store_true", help="wait for the job; exit 0 if it succeeds")
    s.set_defaults(fn=_cmd_submit)

    s = sub.add_parser("resume", help="finish an interrupted study from its store")
    s.add_argument("study", help="the study's URI, e.g. studies/quickstart or s3://b/p/name")
    run_opts(s)
    s.set_defaults(fn=_cmd_resume)

    s = sub.add_parser(
        "status",
        help="done / running / interrupted / failed / corrupt / pending units per stage, "
        "what runs where, an ETA, and the failures with their error",
    )
    s.add_argument("study")
    s.add_argument(
        "--show-failures",
        type=int,
        default=10,
        help="interrupted and failed units to list, each (default 10)",
    )
    s.add_argument(
        "--show-running",
        type=int,
        default=20,
        metavar="N",
        help="running units to list, with node, epoch and time (default 20)",
    )
    s.set_defaults(fn=_cmd_status)

    data = sub.add_parser("data", help="list, download and prepare datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("list", help="every dataset a spec can name")
    d.set_defaults(fn=_cmd_data_list)
    d = dsub.add_parser("download", help="fetch a dataset from its public source")
    d.add_argument("name")
    d.add_argument("dest")
    d.add_argument("--base-url", default=None, help="a mirror of the source")
    d.add_argument("--include", default=None, help="only files matching this glob")
    d.set_defaults(fn=_cmd_data_download)
    d = dsub.add_parser("prepare", help="prepare a dataset once into the cache")
    d.add_argument("name")
    d.add_argument("--source", default=None, help="the downloaded dataset's folder")
    d.add_argument("--label-set", default=None)
    d.add_argument("--fs", type=float, default=None, help="resample to this rate (Hz)")
    d.add_argument("--length", type=int, default=None, help="crop or pad to this many samples")
    d.add_argument("--leads", default=None, help="comma-separated lead names, in order")
    d.add_argument("--normalize", choices=["zscore", "minmax"], default=None)
    d.add_argument("--bandpass", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    d.add_argument("--on-bad-record", choices=["skip", "fail"], default="skip")
    d.add_argument("--option", action="append", default=[], help="reader option KEY=VALUE")
    d.add_argument("--cache", default=None, help="cache folder (default ~/.cache/ecg-study)")
    d.set_defaults(fn=_cmd_data_prepare)

    s = sub.add_parser("report", help="figures, tables and index.html from the stored results")
    s.add_argument("study")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument(
        "--bootstrap",
        type=int,
        default=2000,
        metavar="N",
        help="paired bootstrap replicates per cell from the stored test predictions "
        "(default 2000; 0: t-intervals over repeats only)",
    )
    s.set_defaults(fn=_cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    as_process = argv is None  # the `study` command itself, not a call from Python
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if argv[:1] == ["submit"] and "--" in argv:  # what follows -- is for `study run`
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    args.extra = extra
    if as_process and args.fn in (_cmd_run, _cmd_resume):
        from study.sweep import runner

        runner.STOP_GRACE_S = 60.0
    try:
        return args.fn(args)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: the store keeps every finished unit; `study resume STUDY` finishes "
            "the rest",
            file=sys.stderr,
        )
        if as_process:
            # The driver has stopped its units, settled their markers and released the
            # lease; a thread still waiting on a Ray Train run that Ray's shutdown orphaned
            # must not keep the process alive (it hung past 3 minutes once under load).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130


if __name__ == "__main__":
    sys.exit(main())
