"""Batches for training and evaluation, read from a prepared dataset's files as they are
needed (`study.data.Split`) or from in-memory arrays (`ArrayRows`, for tests and small data).

`batch_loader` hands a DataLoader whole batches of row positions (a `BatchSampler` as its
sampler, `batch_size=None`), so a batch is one read of the rows it names, not one call per
example; DataLoader worker processes, pinned memory on CUDA and `DistributedSampler`
sharding under DDP all apply.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
)

from study.errors import TrainingError

__all__ = ["Rows", "ArrayRows", "as_rows", "batch_loader"]


class Rows(Protocol):
    """What training reads: rows by position (study.data.Split is one)."""

    labels: np.ndarray  # float32 (N, K): the labels of every row (small)

    def __len__(self) -> int: ...

    def x(self, positions: np.ndarray) -> np.ndarray: ...

    def y(self, positions: np.ndarray) -> np.ndarray: ...

    def batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def batches(self, batch_size: int): ...

    def targets_sum(self) -> tuple[float, int]: ...


class ArrayRows:
    """In-memory (x, y) with the interface of `study.data.Split`."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        if len(x) != len(y):
            raise TrainingError(f"inputs have {len(x)} rows but targets {len(y)}")
        self._x = np.asarray(x, dtype=np.float32)
        self._y = np.asarray(y, dtype=np.float32)
        self.labels = self._y

    def __len__(self) -> int:
        return len(self._x)

    def x(self, positions: np.ndarray) -> np.ndarray:
        return self._x[np.asarray(positions, dtype=np.int64)]

    def y(self, positions: np.ndarray) -> np.ndarray:
        return self._y[np.asarray(positions, dtype=np.int64)]

    def batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.sort(np.asarray(positions, dtype=np.int64))
        return self._x[pos], self._y[pos]

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            yield self._x[start : start + batch_size], self._y[start : start + batch_size]

    def targets_sum(self) -> tuple[float, int]:
        return float(self._y.sum()), int(self._y.size)


def as_rows(data) -> Rows:
    """`data` as Rows: a Split or ArrayRows as is, an (x, y) pair of arrays wrapped."""
    if isinstance(data, tuple):
        return ArrayRows(*data)
    return data


class _Batches(Dataset):
    """Item i of this dataset is a whole batch: `dataset[positions]` -> (x, y) tensors."""

    def __init__(self, rows: Rows) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.rows.batch(np.asarray(positions, dtype=np.int64))
        return torch.from_numpy(x), torch.from_numpy(y)


def batch_loader(
    rows: Rows,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader of (x, y) batches of `rows`.

    Shuffled batches are drawn from a generator seeded by (seed, epoch), so an epoch's order
    is the same on every run and after a resume; under torch.distributed each rank takes
    its `DistributedSampler` shard (seeded alike, reshuffled per epoch).

    Args:
        rows: what to read.
        batch_size: rows per batch.
        shuffle: a new order each epoch (training) or the rows' order (evaluation).
        seed, epoch: seed the order.
        drop_last: drop a short last batch.
        workers: DataLoader worker processes reading batches ahead (0: in this process).
        pin_memory: page-locked batches, for fast copies to a CUDA device.
    """
    indices = range(len(rows))
    g = torch.Generator().manual_seed(seed * 10_007 + epoch)
    if shuffle and dist.is_available() and dist.is_initialized():
        sampler = DistributedSampler(indices, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
    elif shuffle:
        sampler = RandomSampler(indices, generator=g)
    else:
        sampler = SequentialSampler(indices)
    return DataLoader(
        _Batches(rows),
        sampler=BatchSampler(sampler, batch_size, drop_last),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        generator=g,
        persistent_workers=False,
    )
