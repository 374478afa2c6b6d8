"""What runs on the cluster: one unit per Ray task (study.sweep.scheduler submits them).

A fine-tuning or from-scratch unit's task trains it in the task's own process, with the
task's CPUs (and GPU share). A pretraining unit's task needs no resources of its own: it
drives the unit's Ray Train run (TorchTrainer, DDP over gloo or NCCL), whose controller Ray
places on the task's node and whose workers take the pretraining resources; the task is
placed on the driver's node where it can be (a head node is not a spot instance), so
losing a worker node costs the Train run a restart of its worker group, not its controller.

Killing a unit's task (the driver stopping: `ray.cancel(force=True)`) ends the Train run
with it: the controller and its workers belong to the task's process.
"""

from __future__ import annotations

from study.store import Store
from study.sweep.plan import Unit

__all__ = [
    "run_unit",
    "run_search_trial",
    "run_pretraining",
    "pretrain_loop",
    "keep_credentials_out_of_tune",
]


def run_unit(unit: Unit, store_uri: str, env: dict, threads: float, use_gpu: bool) -> str:
    """A fine-tuning or from-scratch unit, to its result row (resuming from its checkpoint
    when an earlier attempt left one). Returns the unit id."""
    import torch

    from study.sweep.execute import run_finetune_unit

    torch.set_num_threads(max(1, int(threads)))
    device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
    run_finetune_unit(unit, Store(store_uri), env, device=device)
    return unit.unit_id


def run_search_trial(
    store_uri: str,
    spec,
    group,
    unit: Unit,
    number: int,
    params: dict,
    env: dict,
    threads: float,
    use_gpu: bool,
) -> dict:
    """Trial `number` of search group `group` (study.sweep.search_run.run_search_trial), to
    its row. Returns what the row says: number, state, value, epochs."""
    import torch

    from study.sweep.search_run import run_search_trial as run_trial

    torch.set_num_threads(max(1, int(threads)))
    device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
    row = run_trial(Store(store_uri), spec, group, unit, number, params, env, device=device)
    return {"number": row.number, "state": row.state, "value": row.value, "epochs": row.epochs}


def pretrain_loop(config: dict) -> None:
    """The Ray Train worker function of a pretraining unit."""
    import ray.train
    import ray.train.torch
    import torch

    from study.sweep.execute import run_pretrain_worker

    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(config["threads"])))
    run_pretrain_worker(
        config["unit"],
        Store(config["store_uri"]),
        config["env"],
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        report=ray.train.report,
        device=str(device),
    )


def run_pretraining(
    unit: Unit, store_uri: str, env: dict, pretrain: dict, max_failures: int
) -> str:
    """A pretraining unit's Ray Train run, to its result row. Returns the unit id.

    Args:
        pretrain: num_workers, use_gpu, cpus_per_worker (the spec's `pretrain`).
        max_failures: restarts of the worker group within this run (a lost node: the group
            restarts and resumes from the unit's checkpoint in the store); Ray Train gives
            up after them and the task fails (the scheduler may try the unit again).

    Raises:
        TrainingError: the run ended without the unit's row in the store.
    """
    import uuid

    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from study.errors import TrainingError
    from study.schema import pretrain_path

    store = Store(store_uri)
    trainer = TorchTrainer(
        pretrain_loop,
        train_loop_config={
            "unit": unit,
            "store_uri": store_uri,
            "env": env,
            "threads": pretrain["cpus_per_worker"],
        },
        scaling_config=ScalingConfig(
            num_workers=pretrain["num_workers"],
            use_gpu=pretrain["use_gpu"],
            resources_per_worker={"CPU": pretrain["cpus_per_worker"]},
        ),
        torch_config=TorchConfig(backend="nccl" if pretrain["use_gpu"] else "gloo"),
        run_config=RunConfig(
            # A fresh name per attempt: our own checkpoint in the store does the resuming.
            name=f"{unit.unit_id}-{uuid.uuid4().hex[:8]}",
            storage_path=store.path("_ray", "train"),
            storage_filesystem=store.fs,
            # Never retry forever: a unit whose workers cannot be placed must fail, not hang.
            failure_config=FailureConfig(
                max_failures=max_failures, controller_failure_limit=max_failures
            ),
        ),
    )
    trainer.fit()
    if not store.exists(pretrain_path(unit.unit_id)):
        raise TrainingError(f"pretraining unit {unit.unit_id} ended without its result row")
    return unit.unit_id


def keep_credentials_out_of_tune() -> None:
    """Stop Ray Tune from copying the driver's AWS_* variables (the secret key included) into
    every trial actor's runtime_env (ray/tune/execution/class_cache.py), which Ray's
    runtime-env agent writes to its session log: call it before any Tune experiment (unit
    tasks carry no runtime_env; trials take credentials from their own node's chain: the
    raylet's environment, ~/.aws, the instance profile)."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = {
        v for v in class_cache.ENV_VARS_TO_PROPAGATE if not v.startswith("AWS_")
    }
