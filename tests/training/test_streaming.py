"""Training reads batches from the prepared cache's files: never the whole split in memory,
the same batches as from in-memory arrays, DataLoader workers and DDP shards alike."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from study.data import PreparedDataset
from study.data.config import DatasetConfig
from study.data.prepared import _write
from study.data.records import Rows, RowSource
from study.models import create_model
from study.training import ArrayRows, FitConfig, fit, predict
from study.training.data import batch_loader

torch.set_num_threads(1)


def _prepared(path, n: int, length: int, leads: int = 2, seed: int = 0) -> PreparedDataset:
    """A prepared multi-label dataset of `n` random rows written in the cache's format; row i's
    first sample is i (so a batch says which rows it holds)."""
    rng = np.random.default_rng(seed)

    def rows():
        for i in range(n):
            x = rng.normal(size=(1, leads, length)).astype(np.float32)
            x[0, 0, 0] = i
            label = np.array([[x[0, 1].mean() > 0, x[0, 1].std() > 1]], dtype=np.uint8)
            yield Rows(f"r{i}", f"p{i % 40}", x, label, 100.0, ("I", "II"))

    path.mkdir(parents=True)
    _write(
        RowSource(("a", "b"), "multi_label", n, rows()), "synth_tiny", path, DatasetConfig(), None
    )
    return PreparedDataset(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> PreparedDataset:
    return _prepared(tmp_path_factory.mktemp("stream") / "d", n=400, length=64)


def _model():
    return create_model("resnet1d18", in_channels=2, num_classes=2, base_width=4)


def test_a_split_reads_the_rows_it_is_asked_for(data):
    idx = data.split_indices("train")
    split = data.split(idx)
    pos = np.array([5, 0, 5, 3, len(split) - 1])
    x, y = split.x(pos), split.y(pos)
    np.testing.assert_array_equal(x, np.asarray(data.signals)[split.indices[pos]])
    np.testing.assert_array_equal(y, data.labels[split.indices[pos]].astype(np.float32))
    assert x.dtype == np.float32 and x[:, 0, 0].tolist() == split.indices[pos].tolist()


def test_fit_from_the_files_equals_fit_from_memory(data):
    train, val = data.split(data.split_indices("train")), data.split(data.split_indices("val"))
    cfg = FitConfig(epochs=2, batch_size=32, seed=1)
    torch.manual_seed(0)
    streamed = fit(_model(), train, val, cfg)
    torch.manual_seed(0)
    in_memory = fit(_model(), ArrayRows(*train.arrays()), ArrayRows(*val.arrays()), cfg)
    for a, b in zip(streamed.history, in_memory.history, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    # and DataLoader worker processes read the same batches
    torch.manual_seed(0)
    workers = fit(_model(), train, val, cfg.model_copy(update={"loader_workers": 2}))
    assert [h["val_loss"] for h in workers.history] == [h["val_loss"] for h in streamed.history]


def test_training_holds_a_batch_not_the_split(tmp_path):
    """The defect: the split was copied into float32 memory and wrapped in a TensorDataset,
    so every DDP worker held the whole training split."""
    big = _prepared(tmp_path / "big", n=6000, length=2048)  # ~98 MB of signals
    train = big.split(big.split_indices("train"))
    val = big.split(big.split_indices("val"))
    split_bytes = len(train) * int(np.prod(train.x_shape)) * 4
    model = _model()
    tracemalloc.start()
    try:
        fit(model, train, val, FitConfig(epochs=1, batch_size=16))
        predict(model, val)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # numpy's allocations are traced: a batch or two (an evaluation batch of 256 rows is
    # 4 MB here), the labels, the validation outputs; never the split's 78 MB
    assert peak < split_bytes / 6, (peak, split_bytes)


def _shard(rank: int, world: int, path: str, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = PreparedDataset(path)
        split = data.split(data.split_indices("train"))
        for epoch in (0, 1):
            loader = batch_loader(split, 8, shuffle=True, seed=4, epoch=epoch)
            rows = [int(v) for x, _ in loader for v in x[:, 0, 0].tolist()]
            out.put((rank, epoch, rows))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_read_disjoint_shards_that_cover_the_split(data):
    from tests.conftest import free_port

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.spawn(_shard, args=(2, str(data.path), free_port(), queue), nprocs=2, join=True)
    got = {}
    for _ in range(4):
        rank, epoch, rows = queue.get(timeout=60)
        got[rank, epoch] = rows
    train = set(data.split_indices("train").tolist())
    for epoch in (0, 1):
        a, b = set(got[0, epoch]), set(got[1, epoch])
        assert len(got[0, epoch]) == len(got[1, epoch]) == -(-len(train) // 2)
        assert a | b == train and len(a & b) <= 1  # DistributedSampler pads an odd split
    assert got[0, 0] != got[0, 1]  # a new order each epoch
