"""The `study` command: plan, run, status, resume and report a transfer-learning study."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from study.errors import ConfigError, StudyError

DEFAULT_STORAGE = "studies"


def _cmd_plan(args: argparse.Namespace) -> int:
    from study.sweep.load import load_spec
    from study.sweep.plan import make_plan

    spec = load_spec(args.spec)
    plan = make_plan(spec)
    counts = plan.counts()
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
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
    return 0


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


def _cmd_run(args: argparse.Namespace) -> int:
    from study.sweep.load import load_spec
    from study.sweep.runner import run_study

    spec = load_spec(args.spec)
    outcome = run_study(spec, args.storage, name=args.name, address=args.address)
    return _finish(outcome, _report_dir(args, outcome.store.uri))


def _cmd_resume(args: argparse.Namespace) -> int:
    from study.sweep.runner import resume_study

    outcome = resume_study(args.study, address=args.address)
    return _finish(outcome, _report_dir(args, outcome.store.uri))


def _cmd_status(args: argparse.Namespace) -> int:
    from study.sweep.runner import failures, study_status

    table = study_status(args.study)
    print(table.to_string())
    for m in failures(args.study)[: args.show_failures]:
        print(f"failed {m['unit_id']} on {m['host']} at {m['updated_at']}: {m.get('error')}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from analysis import report_study

    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, got {args.bootstrap}")
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

    s = sub.add_parser("resume", help="finish an interrupted study from its store")
    s.add_argument("study", help="the study's URI, e.g. studies/quickstart or s3://b/p/name")
    run_opts(s)
    s.set_defaults(fn=_cmd_resume)

    s = sub.add_parser("status", help="done / running / failed / pending units per stage")
    s.add_argument("study")
    s.add_argument("--show-failures", type=int, default=10, help="failures to list (default 10)")
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
    args = build_parser().parse_args(argv)
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
        return 130


if __name__ == "__main__":
    sys.exit(main())
