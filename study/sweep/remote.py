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
    "run_pretrain_search_trial",
    "pretrain_loop",
    "pretrain_trial_loop",
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
    from study.errors import TrainingError
    from study.schema import pretrain_path

    store = Store(store_uri)
    config = {"unit": unit, "store_uri": store_uri, "env": env}
    trainer = _trainer(pretrain_loop, config, unit.unit_id, store, pretrain, max_failures)
    trainer.fit()
    if not store.exists(pretrain_path(unit.unit_id)):
        raise TrainingError(f"pretraining unit {unit.unit_id} ended without its result row")
    return unit.unit_id


def _trainer(loop, config: dict, name: str, store: Store, pretrain: dict, max_failures: int):
    """The TorchTrainer of a pretraining run (a unit's or a search trial's): `loop` on
    `pretrain["num_workers"]` workers, DDP over NCCL on GPUs or gloo on CPUs."""
    import uuid

    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        loop,
        train_loop_config={**config, "threads": pretrain["cpus_per_worker"]},
        scaling_config=ScalingConfig(
            num_workers=pretrain["num_workers"],
            use_gpu=pretrain["use_gpu"],
            resources_per_worker={"CPU": pretrain["cpus_per_worker"]},
        ),
        torch_config=TorchConfig(backend="nccl" if pretrain["use_gpu"] else "gloo"),
        run_config=RunConfig(
            # A fresh name per attempt: our own checkpoint in the store does the resuming.
            name=f"{name}-{uuid.uuid4().hex[:8]}",
            storage_path=store.path("_ray", "train"),
            storage_filesystem=store.fs,
            # Never retry forever: a unit whose workers cannot be placed must fail, not hang.
            failure_config=FailureConfig(
                max_failures=max_failures, controller_failure_limit=max_failures
            ),
        ),
    )


def pretrain_trial_loop(config: dict) -> None:
    """The Ray Train worker function of a pretraining group's search trial."""
    import ray.train
    import ray.train.torch
    import torch

    from study.sweep.search_run import run_pretrain_trial_worker

    ctx = ray.train.get_context()
    torch.set_num_threads(max(1, int(config["threads"])))
    run_pretrain_trial_worker(
        Store(config["store_uri"]),
        config["spec"],
        config["group"],
        config["unit"],
        config["number"],
        config["params"],
        config["env"],
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        device=str(ray.train.torch.get_device()),
    )


def run_pretrain_search_trial(
    store_uri: str,
    spec,
    group,
    unit: Unit,
    number: int,
    params: dict,
    env: dict,
    pretrain: dict,
    max_failures: int,
) -> dict:
    """Trial `number` of pretraining search group `group`: a Ray Train run of its
    representative pretraining unit with `params` (study.sweep.search_run
    .run_pretrain_trial_worker on each worker), to its row. Returns what the row says.

    Raises:
        TrainingError: the run ended without the trial's row in the store.
    """
    from study.errors import TrainingError
    from study.sweep.search import scan_search_trials

    store = Store(store_uri)
    config = {
        "spec": spec,
        "group": group,
        "unit": unit,
        "number": number,
        "params": params,
        "store_uri": store_uri,
        "env": env,
    }
    name = f"{group.group_id}-{number:05d}"
    _trainer(pretrain_trial_loop, config, name, store, pretrain, max_failures).fit()
    row = next(
        (r for r in scan_search_trials(store, group.group_id).trials if r.number == number), None
    )
    if row is None:
        raise TrainingError(f"search trial {number} of {group.group_id} ended without its row")
    return {"number": row.number, "state": row.state, "value": row.value, "epochs": row.epochs}


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
