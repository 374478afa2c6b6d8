"""Orchestration overhead: the same units through `run_study` (one Ray task each, via the
streaming scheduler) vs one after another in-process.

Runs N from-scratch units of a tiny spec (1 epoch each, so the figures are dominated by
what the sweep adds: task start-up, data opening, store writes) twice, into two fresh
stores: (a) sequentially in this process with `run_finetune_unit` and no Ray, (b) through
`run_study` on a local Ray with 2 concurrent 1-CPU units. Prints units/s of each and the
ratio; per-unit seconds of the study x concurrency estimates the per-unit cost.

    python benchmarks/bench_sweep.py [--units 24]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=24, help="from-scratch units (even)")
    args = ap.parse_args()
    import torch

    from study.store import Store
    from study.sweep.execute import run_finetune_unit
    from study.sweep.load import parse_spec
    from study.sweep.plan import make_plan
    from study.sweep.runner import init_study, prepare_datasets, run_study

    torch.set_num_threads(1)
    spec = parse_spec(
        {
            "name": "bench",
            "architectures": [{"name": "resnet1d18", "options": {"base_width": 4}}],
            "upstream": [],
            "downstream": ["synth_tiny"],
            "finetune": {
                "data_fractions": [1.0],
                "repeats": args.units,
                "epochs": 1,
                "batch_size": 16,
            },
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ECG_STUDY_CACHE"] = f"{tmp}/cache"
        store = Store(f"{tmp}/inproc/bench")
        plan = init_study(store, spec)
        prepare_datasets(store, spec)
        t0 = time.perf_counter()
        for u in plan.units:
            run_finetune_unit(u, store, {"code_version": "bench"})
        inproc = time.perf_counter() - t0

        import ray

        ray.init(
            address="local",
            num_cpus=2,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
        )
        store2 = Store(f"{tmp}/ray/bench")
        init_study(store2, spec)
        prepare_datasets(store2, spec)  # both arms start with data prepared
        t0 = time.perf_counter()
        outcome = run_study(spec, f"{tmp}/ray")
        ray_s = time.perf_counter() - t0
        ray.shutdown()
    n = len(make_plan(spec).units)
    assert outcome.complete, outcome.failed
    print(f"{n} from-scratch units, resnet1d18 base_width 4, synth_tiny, 1 epoch each")
    print(f"in-process, sequential : {n / inproc:6.2f} units/s ({inproc:.1f} s)")
    print(f"study, 2 concurrent    : {n / ray_s:6.2f} units/s ({ray_s:.1f} s)")
    print(f"ratio study/in-process : {inproc / ray_s:.2f} (2.0 = perfect use of 2 workers)")
    print(f"wall per unit x 2      : {2 * ray_s / n:.2f} s vs {inproc / n:.2f} s in-process")


if __name__ == "__main__":
    main()
