"""The streaming scheduler on a real local Ray: dependencies, windows, the longest runnable job
first, retries, failures blocking their dependents, and stopping."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from study.sweep.scheduler import Job, Scheduler


@pytest.fixture(scope="module")
def sleeper(ray_local):
    @ray_local.remote(num_cpus=0)
    def sleep(seconds: float, fail_flag: str | None = None) -> float:
        if fail_flag is not None:
            flag = Path(fail_flag)
            if not flag.exists():  # fail the first attempt only
                flag.write_text("failed once")
                raise RuntimeError("first attempt fails")
        time.sleep(seconds)
        return seconds

    return sleep


def _job(sleeper, key, seconds, depends_on=None, kind="unit", expected=None, fail_flag=None):
    return Job(
        key=key,
        submit=lambda: sleeper.remote(seconds, fail_flag),
        depends_on=depends_on,
        expected_seconds=seconds if expected is None else expected,
        kind=kind,
    )


class Log:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str, str]] = []

    def __call__(self, job: Job, outcome) -> None:
        self.events.append((time.monotonic() - self.t0, job.key, outcome.state))

    def at(self, key: str, state: str) -> float:
        return next(t for t, k, s in self.events if k == key and s == state)


def test_no_stage_barrier_dependents_start_when_their_dependency_ends(sleeper):
    log = Log()
    jobs = [_job(sleeper, "pt", 1.5, kind="pretrain")]
    jobs += [_job(sleeper, f"ft{i}", 0.1, depends_on="pt") for i in range(3)]
    jobs += [_job(sleeper, f"sc{i}", 0.1) for i in range(4)]
    out = Scheduler(jobs, window=8, on_event=log).run()
    assert {k: o.state for k, o in out.items()} == {j.key: "done" for j in jobs}
    pt_done = log.at("pt", "done")
    for i in range(4):  # from-scratch units ran while pretraining was still going
        assert log.at(f"sc{i}", "done") < pt_done
    for i in range(3):  # fine-tuning started only after its pretraining unit ended
        assert log.at(f"ft{i}", "started") >= pt_done


def test_the_window_and_kind_limits_bound_what_is_in_flight(sleeper):
    log = Log()
    jobs = [_job(sleeper, f"pt{i}", 0.2, kind="pretrain") for i in range(4)]
    jobs += [_job(sleeper, f"u{i}", 0.1) for i in range(12)]
    Scheduler(jobs, window=5, limits={"pretrain": 2}, on_event=log).run()
    flying = pre = 0
    peak = peak_pre = 0
    for _, key, state in sorted(log.events):
        step = 1 if state == "started" else -1
        flying += step
        pre += step if key.startswith("pt") else 0
        peak, peak_pre = max(peak, flying), max(peak_pre, pre)
    assert peak == 5 and peak_pre == 2


def test_the_longest_runnable_job_starts_first(sleeper):
    log = Log()
    jobs = [_job(sleeper, f"j{s}", 0.01, expected=s) for s in (1, 5, 3, 4, 2)]
    Scheduler(jobs, window=1, on_event=log).run()
    started = [k for _, k, s in log.events if s == "started"]
    assert started == ["j5", "j4", "j3", "j2", "j1"]


def test_a_failed_attempt_is_retried(sleeper, tmp_path):
    jobs = [_job(sleeper, "flaky", 0.01, fail_flag=str(tmp_path / "flag"))]
    out = Scheduler(jobs, max_retries=1).run()
    assert out["flaky"].state == "done" and out["flaky"].attempts == 2


def test_a_failure_blocks_its_dependents_and_nothing_else(sleeper, tmp_path):
    log = Log()
    jobs = [
        _job(sleeper, "pt", 0.01, fail_flag=str(tmp_path / "flag")),
        _job(sleeper, "ft", 0.01, depends_on="pt"),
        _job(sleeper, "ft2", 0.01, depends_on="ft"),
        _job(sleeper, "sc", 0.01),
    ]
    out = Scheduler(jobs, max_retries=0, on_event=log).run()
    assert out["pt"].state == "failed" and "first attempt fails" in out["pt"].error
    assert out["ft"].state == out["ft2"].state == "blocked"
    assert "pt" in out["ft2"].error
    assert out["sc"].state == "done"
    assert not any(k.startswith("ft") and s == "started" for _, k, s in log.events)


def test_done_keys_are_not_run_and_release_their_dependents(sleeper):
    log = Log()
    jobs = [_job(sleeper, "pt", 0.01), _job(sleeper, "ft", 0.01, depends_on="pt")]
    out = Scheduler(jobs, done={"pt"}, on_event=log).run()
    assert set(out) == {"ft"} and out["ft"].state == "done"


def test_stopping_cancels_what_is_in_flight(sleeper):
    t0 = time.monotonic()
    jobs = [_job(sleeper, f"long{i}", 30.0) for i in range(2)] + [_job(sleeper, "next", 0.01)]
    out = Scheduler(
        jobs, window=2, should_stop=lambda: time.monotonic() - t0 > 0.5, wait_timeout_s=0.2
    ).run()
    assert time.monotonic() - t0 < 10
    assert {o.state for o in out.values()} == {"stopped"}
    assert set(out) == {"long0", "long1", "next"}


def test_admit_holds_a_job_back_while_others_of_its_kind_run(sleeper):
    log = Log()
    asked = []

    def admit(job, busy):  # room for one pretraining run at a time, whatever the limit
        asked.append((job.key, busy))
        return False

    jobs = [_job(sleeper, f"pt{i}", 0.3, kind="pretrain") for i in range(3)]
    jobs.append(_job(sleeper, "u", 0.1))
    out = Scheduler(jobs, window=8, limits={"pretrain": 3}, admit=admit, on_event=log).run()
    assert all(o.state == "done" for o in out.values())
    starts = sorted(log.at(f"pt{i}", "started") for i in range(3))
    ends = sorted(log.at(f"pt{i}", "done") for i in range(3))
    assert starts[1] >= ends[0] and starts[2] >= ends[1]  # one after another
    assert asked and all(busy >= 1 for _, busy in asked)  # never asked with none running
    assert log.at("u", "started") < ends[0]  # another kind is not held back


def test_a_done_job_adds_jobs_that_run_with_their_dependencies(sleeper):
    """`then` gets the task's value on the driver; the jobs it returns run, waiting for a
    dependency still in flight (a search group's units wait for its pretraining unit)."""
    log, seen = Log(), []

    def then(value):
        seen.append(value)
        return [
            _job(sleeper, "after-pt", 0.01, depends_on="pt"),  # pt is still running
            _job(sleeper, "after-done", 0.01, depends_on="trial"),
            _job(sleeper, "free", 0.01),
        ]

    trial = Job("trial", submit=lambda: sleeper.remote(0.05), then=then)
    jobs = [_job(sleeper, "pt", 1.0, expected=0.5), trial]
    out = Scheduler(jobs, window=4, on_event=log).run()
    assert seen == [0.05]
    assert {k: o.state for k, o in out.items()} == {
        k: "done" for k in ("pt", "trial", "after-pt", "after-done", "free")
    }
    assert log.at("after-pt", "started") >= log.at("pt", "done")


def test_a_failing_then_fails_its_job_and_blocks_its_dependents(sleeper):
    def then(value):
        raise RuntimeError("nothing to choose")

    jobs = [
        Job("last-trial", submit=lambda: sleeper.remote(0.01), then=then),
        _job(sleeper, "waits", 0.01, depends_on="last-trial"),
    ]
    out = Scheduler(jobs, max_retries=3).run()
    assert out["last-trial"].state == "failed" and out["last-trial"].attempts == 1
    assert "nothing to choose" in out["last-trial"].error
    assert out["waits"].state == "blocked"
