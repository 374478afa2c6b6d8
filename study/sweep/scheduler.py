"""A streaming scheduler for a study's units on Ray: no stage barrier, no chunk barrier.

Each unit of work is a `Job`: a key, the key it depends on (or None), its expected seconds,
the kind of slot it needs, and a `submit` that starts it on the cluster and returns a Ray
ObjectRef (a Ray task; for a pretraining unit, a task that drives its Ray Train run). The
scheduler keeps a bounded window of jobs in flight per kind and refills it as jobs end,
with `ray.wait`, never polling with sleeps:

- a job is runnable when its dependency is done (jobs without one, e.g. from-scratch units,
  at once; a fine-tuning unit the moment its pretraining unit ends);
- among runnable jobs the longest expected runs first (the LPT rule: it keeps the end of a
  grid from waiting on one long job started last);
- a job that fails is retried up to `max_retries` times (a lost node, a preempted spot
  instance: the unit resumes from its last checkpoint in the store); then it is failed, and
  every job depending on it, directly or not, is blocked (never started);
- a job may add jobs when it is done (`Job.then`, called on the driver with its task's
  value): e.g. a search group's last trial writes the chosen values and returns the units
  that train with them;
- `should_stop` is asked between waits (e.g. a lost lease): no new job starts, `on_stop`
  is called, the jobs in flight are cancelled (their processes killed), and the run returns
  what it knows once their tasks have ended (`stop_timeout_s` at most). An exception in the
  driver (Ctrl-C, SIGTERM) does the same, then propagates.

Why Ray tasks and `ray.wait` rather than Tune: Tune runs a fixed list of trials per
experiment, so a study had to be cut into chunks (each waiting for its slowest trial) and
stages (fine-tuning waiting for the last pretraining run); Tune also costs ~0.5 s per trial
(benchmarks/README.md) and its driver state grows with the trials of an experiment. Here
the driver holds only the window's ObjectRefs and one small record per job.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Job", "Outcome", "Scheduler"]


@dataclass(frozen=True)
class Job:
    """One unit of work for the scheduler.

    Attributes:
        key: unique name (a unit id).
        submit: starts the work on the cluster; returns its ObjectRef (the task's value is
            ignored: a job is done when its task ends without error).
        depends_on: the key that must be done first, or None.
        expected_seconds: what the job is expected to take (orders the runnable jobs).
        kind: the slot pool it runs in (e.g. "pretrain" or "unit"), each with its own limit.
        then: called on the driver with the task's value once the job is done; returns
            jobs to add to the run (keys not yet known to it; their dependencies may be
            done, in flight or pending). An exception from it fails the job (no retry: its
            task did its part) and blocks what depends on it.
    """

    key: str
    submit: Callable[[], Any]
    depends_on: str | None = None
    expected_seconds: float = 1.0
    kind: str = "unit"
    then: Callable[[Any], Iterable[Job]] | None = None


@dataclass
class Outcome:
    """What became of one job: "done", "failed" (error: the last one), "blocked" (a job it
    depends on failed; error names it) or "stopped" (the run was stopped first)."""

    state: str
    attempts: int = 0
    error: str | None = None
    seconds: float | None = None


@dataclass
class _Flight:
    job: Job
    started: float


@dataclass
class Scheduler:
    """Runs jobs on Ray as their dependencies finish (module docstring).

    Args:
        jobs: every job to run (keys unique).
        limits: jobs in flight at once per kind; a kind without an entry has no limit of
            its own beyond `window`.
        window: jobs in flight at once in all (bounds the driver's memory and the
            cluster's queue).
        done: keys already done (in the store): their dependents are runnable at once.
        max_retries: attempts after the first for a job whose task fails.
        on_event: called as (job, outcome) whenever a job ends (done, failed, blocked) and
            with outcome state "started" when it starts (progress, markers).
        should_stop: asked between waits; True stops the run (module docstring).
        wait_timeout_s: the longest a `ray.wait` blocks before `should_stop` is asked again.
        on_stop: called before the jobs in flight are cancelled (with the exception that
            stops the run, or None when `should_stop` did): e.g. to record that what fails
            from now on was interrupted.
        stop_timeout_s: how long a stopping run waits for its cancelled tasks to end.
        admit: asked before a runnable job starts while another of its kind is in flight,
            as (job, jobs of its kind in flight): False keeps it waiting (e.g. a DDP run
            while the cluster has no room for its whole worker group, which would wait
            for workers and time out). A job whose kind has none in flight always starts:
            its demand is what makes an autoscaler add nodes.
    """

    jobs: Iterable[Job]
    limits: dict[str, int] = field(default_factory=dict)
    window: int = 64
    done: set[str] = field(default_factory=set)
    max_retries: int = 1
    on_event: Callable[[Job, Outcome], None] | None = None
    should_stop: Callable[[], bool] | None = None
    wait_timeout_s: float = 5.0
    on_stop: Callable[[BaseException | None], None] | None = None
    stop_timeout_s: float = 30.0
    admit: Callable[[Job, int], bool] | None = None

    def run(self) -> dict[str, Outcome]:
        """Run every job not already done; return the outcome of each job run or blocked."""
        import ray

        if self.window < 1 or any(v < 1 for v in self.limits.values()):
            raise ValueError(f"window and limits must be >= 1, got {self.window}, {self.limits}")
        jobs: dict[str, Job] = {}
        done = set(self.done)
        outcomes: dict[str, Outcome] = {}
        dependents: dict[str, list[str]] = {}
        ready: list[tuple[float, int, str]] = []  # (-expected seconds, order, key)
        order: dict[str, int] = {}

        def add(job: Job, at_start: bool) -> None:
            key = job.key
            if key in jobs:
                raise ValueError(f"job {key} is added twice")
            jobs[key] = job
            order[key] = len(order)
            if key in done:
                return
            dep = job.depends_on
            if dep is None or dep in done:
                heapq.heappush(ready, (-job.expected_seconds, order[key], key))
            elif dep in outcomes and outcomes[dep].state in ("failed", "blocked"):
                outcomes[key] = Outcome("blocked", error=f"it depends on {dep}, which failed")
                emit(job, outcomes[key])
            elif dep in jobs or at_start:  # at the start: a job listed later
                dependents.setdefault(dep, []).append(key)
            else:
                outcomes[key] = Outcome("blocked", error=f"{dep} is neither planned nor done")
                emit(job, outcomes[key])

        in_flight: dict[Any, _Flight] = {}
        running: dict[str, int] = {}
        attempts: dict[str, int] = {}
        deferred: list[tuple[float, int, str]] = []  # runnable, but its kind is at its limit

        def emit(job: Job, outcome: Outcome) -> None:
            if self.on_event is not None:
                self.on_event(job, outcome)

        def block(key: str, why: str) -> None:
            for child in dependents.pop(key, []):
                outcomes[child] = Outcome("blocked", error=why)
                emit(jobs[child], outcomes[child])
                block(child, why)

        for job in self.jobs:
            add(job, at_start=True)
        for dep in [d for d in dependents if d not in jobs]:
            for key in dependents.pop(dep):
                outcomes[key] = Outcome("blocked", error=f"{dep} is neither planned nor done")

        def fill() -> None:
            while ready and len(in_flight) < self.window:
                item = heapq.heappop(ready)
                job = jobs[item[2]]
                limit = self.limits.get(job.kind)
                busy = running.get(job.kind, 0)
                if (limit is not None and busy >= limit) or (
                    busy and self.admit is not None and not self.admit(job, busy)
                ):
                    deferred.append(item)
                    continue
                attempts[job.key] = attempts.get(job.key, 0) + 1
                in_flight[job.submit()] = _Flight(job, time.monotonic())
                running[job.kind] = running.get(job.kind, 0) + 1
                emit(job, Outcome("started", attempts=attempts[job.key]))
            for item in deferred:
                heapq.heappush(ready, item)
            deferred.clear()

        def stop(cause: BaseException | None) -> None:
            if self.on_stop is not None:
                self.on_stop(cause)
            refs = list(in_flight)
            for ref in refs:
                ray.cancel(ref, force=True)
            if refs:  # their processes are gone before the caller settles their markers
                ray.wait(refs, num_returns=len(refs), timeout=self.stop_timeout_s)
            for flight in in_flight.values():
                outcomes[flight.job.key] = Outcome("stopped", attempts[flight.job.key])
                emit(flight.job, outcomes[flight.job.key])
            in_flight.clear()
            for _, _, key in ready:
                outcomes[key] = Outcome("stopped")

        def wait() -> None:
            finished, _ = ray.wait(
                list(in_flight), num_returns=1, timeout=self.wait_timeout_s, fetch_local=False
            )
            for ref in finished:
                flight = in_flight.pop(ref)
                job = flight.job
                running[job.kind] -= 1
                seconds = time.monotonic() - flight.started
                try:
                    value = ray.get(ref)
                except Exception as e:  # a task error, a lost worker or node, a cancellation
                    error = f"{type(e).__name__}: {e}"[-2000:]
                    if attempts[job.key] <= self.max_retries:
                        heapq.heappush(ready, (-job.expected_seconds, order[job.key], job.key))
                        emit(job, Outcome("retrying", attempts[job.key], error, seconds))
                    else:
                        outcomes[job.key] = Outcome("failed", attempts[job.key], error, seconds)
                        emit(job, outcomes[job.key])
                        block(job.key, f"it depends on {job.key}, which failed")
                    continue
                try:
                    added = list(job.then(value)) if job.then is not None else []
                except Exception as e:  # what the job's end decides failed (e.g. a choice)
                    error = f"{type(e).__name__}: {e}"[-2000:]
                    outcomes[job.key] = Outcome("failed", attempts[job.key], error, seconds)
                    emit(job, outcomes[job.key])
                    block(job.key, f"it depends on {job.key}, which failed")
                    continue
                done.add(job.key)
                outcomes[job.key] = Outcome("done", attempts[job.key], None, seconds)
                emit(job, outcomes[job.key])
                for child in dependents.pop(job.key, []):
                    c = jobs[child]
                    heapq.heappush(ready, (-c.expected_seconds, order[child], child))
                for new_job in added:
                    add(new_job, at_start=False)

        try:
            fill()
            while in_flight:
                if self.should_stop is not None and self.should_stop():
                    stop(None)
                    return outcomes
                wait()
                fill()
        except BaseException as e:  # Ctrl-C, SIGTERM, a driver error: no task outlives it
            stop(e)
            raise
        for key in dependents:  # dependencies that never ran (cannot happen unless a cycle)
            for child in dependents[key]:
                outcomes.setdefault(child, Outcome("blocked", error=f"{key} never ran"))
        return outcomes
