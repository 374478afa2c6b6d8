"""The streaming scheduler on a simulated grid: makespan against its lower bound, the old
stage-and-chunk schedule on the same grid, and the driver's memory for 20,000 units.

A local multi-node Ray cluster (`ray.cluster_utils.Cluster`: a head with no CPU, as in
cluster.yaml, and worker nodes) runs sleep tasks with known, heterogeneous durations shaped
like a study: pretraining units (long, two CPUs each: a DDP worker group), each with
fine-tuning units that depend on it, and from-scratch units that depend on nothing.

- lower bound = max(critical path, total CPU-seconds / CPU slots): no schedule beats it;
- streaming = study.sweep.scheduler.Scheduler (longest runnable first), with a window of
  as many units as slots (its order decides what starts next) and of twice that (Ray's
  queue of submitted units decides, as with `study run`'s default max_in_flight of 256);
- staged = what the driver did before: every pretraining unit first (then a barrier), then
  the other units in chunks, each chunk waiting for its slowest unit.

Then 20,000 zero-second units go through the scheduler and the driver's resident memory
(RSS, psutil) is sampled: its growth over the run is printed.

    python benchmarks/bench_scheduler.py [--nodes 3] [--cpus 4] [--seed 0] [--chunk 40]
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np

# ray.init(address="127.0.0.1:PORT") rewrites a loopback address to the machine's external
# one (services.resolve_ip_for_localhost), which this sandbox does not route; with this
# Ray resolves "this node" to loopback instead (its only other effect is on the CLI).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def grid(rng: np.random.Generator, n_pretrain: int, per_pretrain: int, n_scratch: int):
    """(key, seconds, cpus, depends_on) of a simulated study."""
    jobs = []
    for p in range(n_pretrain):
        jobs.append((f"pt{p}", float(rng.uniform(4.0, 6.0)), 2, None))
        for f in range(per_pretrain):
            jobs.append(
                (f"ft{p}-{f}", float(np.clip(rng.lognormal(-0.3, 0.7), 0.1, 4.0)), 1, f"pt{p}")
            )
    for s in range(n_scratch):
        jobs.append((f"sc{s}", float(np.clip(rng.lognormal(-0.3, 0.7), 0.1, 4.0)), 1, None))
    return jobs


def lower_bound(jobs, slots: int) -> float:
    seconds = {k: s for k, s, _, _ in jobs}
    chain = {k: s + (seconds[d] if d else 0.0) for k, s, _, d in jobs}
    work = sum(s * c for _, s, c, _ in jobs)
    return max(max(chain.values()), work / slots)


def run_streaming(ray, sleep, jobs, window: int) -> float:
    from study.sweep.scheduler import Job, Scheduler

    scheduled = [
        Job(
            key=k,
            submit=(lambda s=s, c=c: sleep.options(num_cpus=c).remote(s)),
            depends_on=d,
            expected_seconds=s,
            kind="pretrain" if c > 1 else "unit",
        )
        for k, s, c, d in jobs
    ]
    t0 = time.perf_counter()
    out = Scheduler(scheduled, window=window).run()
    assert all(o.state == "done" for o in out.values()), out
    return time.perf_counter() - t0


def run_staged(ray, sleep, jobs, chunk: int) -> float:
    t0 = time.perf_counter()
    pre = [sleep.options(num_cpus=c).remote(s) for k, s, c, d in jobs if k.startswith("pt")]
    ray.get(pre)  # the stage barrier
    rest = [(s, c) for k, s, c, d in jobs if not k.startswith("pt")]
    for i in range(0, len(rest), chunk):  # each chunk waits for its slowest unit
        ray.get([sleep.options(num_cpus=c).remote(s) for s, c in rest[i : i + chunk]])
    return time.perf_counter() - t0


def driver_memory(ray, sleep, n: int) -> tuple[float, float, float]:
    """Resident MB of this driver before, at the peak during, and after n trivial units."""
    import psutil

    from study.sweep.scheduler import Job, Scheduler

    proc = psutil.Process()
    before = proc.memory_info().rss / 2**20
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    jobs = (
        Job(key=f"u{i}", submit=(lambda: sleep.options(num_cpus=0.01).remote(0.0)))
        for i in range(n)
    )
    t0 = time.perf_counter()
    out = Scheduler(jobs, window=256).run()
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    assert len(out) == n and all(o.state == "done" for o in out.values())
    after = proc.memory_info().rss / 2**20
    print(f"  {n} units in {seconds:.1f} s ({n / seconds:.0f} units/s)")
    return before, peak[0], after


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3, help="worker nodes")
    ap.add_argument("--cpus", type=int, default=4, help="logical CPUs per worker node")
    ap.add_argument("--pretrain", type=int, default=4)
    ap.add_argument("--per-pretrain", type=int, default=30)
    ap.add_argument("--scratch", type=int, default=40)
    ap.add_argument("--chunk", type=int, default=40, help="units per chunk of the staged run")
    ap.add_argument("--memory-units", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=args.cpus, node_ip_address="127.0.0.1")
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()

    @ray.remote
    def sleep(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    slots = args.nodes * args.cpus
    jobs = grid(np.random.default_rng(args.seed), args.pretrain, args.per_pretrain, args.scratch)
    bound = lower_bound(jobs, slots)
    work = sum(s * c for _, s, c, _ in jobs)
    print(
        f"grid: {len(jobs)} units ({args.pretrain} pretraining x 2 CPUs, "
        f"{args.pretrain * args.per_pretrain} fine-tuning, {args.scratch} from scratch), "
        f"{work:.0f} CPU-s of work on {slots} CPU slots ({args.nodes} nodes x {args.cpus})"
    )
    run_streaming(ray, sleep, jobs[:10], slots)  # warm the workers up
    streaming = run_streaming(ray, sleep, jobs, slots)
    streaming_2x = run_streaming(ray, sleep, jobs, 2 * slots)
    staged = run_staged(ray, sleep, jobs, args.chunk)
    rows = [
        ("lower bound max(critical path, work/slots)", bound),
        ("streaming, window = slots", streaming),
        ("streaming, window = 2 x slots", streaming_2x),
        (f"staged + chunks of {args.chunk}", staged),
    ]
    for name, seconds in rows:
        print(f"{name:<43}: {seconds:6.2f} s  ({seconds / bound:.3f} x bound)")
    before, peak, after = driver_memory(ray, sleep, args.memory_units)
    print(
        f"driver RSS: {before:.0f} MB before, {peak:.0f} MB peak, {after:.0f} MB after "
        f"{args.memory_units} units (+{peak - before:.0f} MB at the peak)"
    )
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
