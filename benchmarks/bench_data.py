"""Training from the prepared cache's files: memory and throughput, in one run.

1. Peak resident memory of a training process (a fresh Python process that imports torch,
   opens a prepared dataset and trains one epoch over its whole training split, then
   predicts its validation split), on two prepared datasets of about 0.5 GB and 4 GB. The
   larger must not cost more than 300 MB over the smaller: a process holds batches, not
   the split.
2. Samples/s of the same batches (same order) read from the cache's files and from an
   in-memory array, on the 0.5 GB dataset with a warm page cache: reading alone (the
   DataLoader's batches), and a training epoch of a small model on each.

    python benchmarks/bench_data.py [--small-gb 0.5] [--large-gb 4] [--dir /tmp/bench]
                                    [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROW_SHAPE = (12, 1000)  # PTB-XL at 100 Hz: 12 leads x 10 s
ROW_BYTES = int(np.prod(ROW_SHAPE)) * 4


def make_dataset(path: Path, gb: float) -> Path:
    """A prepared multi-label dataset of about `gb` GB of signals, written through the
    cache's own writer (rows are a random block repeated, shifted per row)."""
    from study.data.config import DatasetConfig
    from study.data.prepared import _write
    from study.data.records import Rows, RowSource

    n = int(gb * 1e9 / ROW_BYTES)
    rng = np.random.default_rng(0)
    block = rng.normal(size=(256, *ROW_SHAPE)).astype(np.float32)
    labels = (rng.random((256, 5)) < 0.2).astype(np.uint8)

    def rows():
        for i in range(n):
            k = i % 256
            x = block[k : k + 1] + np.float32(i % 7)
            yield Rows(f"r{i}", f"p{i % 2000}", x, labels[k : k + 1], 100.0, tuple("ABCDEFGHIJKL"))

    path.mkdir(parents=True)
    source = RowSource(tuple("abcde"), "multi_label", n, rows())
    _write(source, "synth_tiny", path, DatasetConfig(), None)
    return path


def peak_rss_mb() -> float:
    """The peak resident memory of this process (VmHWM: its memory map's high-water mark,
    which starts anew at exec; getrusage's ru_maxrss would carry the parent's peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(path: str) -> None:
    """The measured training process: one epoch over the whole training split."""
    import torch

    from study.data import PreparedDataset
    from study.models import create_model
    from study.training import FitConfig, fit, predict

    torch.set_num_threads(1)
    data = PreparedDataset(path)
    train = data.split(data.split_indices("train"))
    val = data.split(data.split_indices("val"))
    model = create_model("resnet1d18", in_channels=12, num_classes=5, base_width=2)
    before = peak_rss_mb()
    t0 = time.perf_counter()
    fit(model, train, val, FitConfig(epochs=1, batch_size=256))
    predict(model, val)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "rows": len(train) + len(val),
                "gb": (data.signals.nbytes) / 1e9,
                "before_mb": before,
                "peak_mb": peak_rss_mb(),
                "seconds": seconds,
            }
        )
    )


def make_in_child(path: Path, gb: float) -> None:
    # in a process of its own: writing through open_memmap puts the file's pages in the
    # writer's resident set, which would then be this process's peak
    subprocess.run([sys.executable, __file__, "--make", str(path), str(gb)], check=True)


def peak_of_training(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def throughput(path: Path) -> None:
    import torch

    from study.data import PreparedDataset
    from study.models import create_model
    from study.training import ArrayRows, FitConfig, fit
    from study.training.data import batch_loader

    torch.set_num_threads(1)
    data = PreparedDataset(path)
    files = data.split(data.split_indices("train"))
    memory = ArrayRows(*files.arrays())  # the same rows, in memory; also warms the page cache

    def read_all(rows) -> float:
        t0 = time.perf_counter()
        n = 0
        for x, _ in batch_loader(rows, 256, shuffle=True, seed=0, epoch=0):
            n += len(x)
        return n / (time.perf_counter() - t0)

    def read_tensor_dataset() -> float:
        # the loop before batches were read from the files: a TensorDataset in memory,
        # one __getitem__ per example and a collate per batch
        from torch.utils.data import DataLoader, TensorDataset

        ds = TensorDataset(torch.from_numpy(memory._x), torch.from_numpy(memory._y))
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        n = sum(len(x) for x, _ in DataLoader(ds, batch_size=256, shuffle=True, generator=g))
        return n / (time.perf_counter() - t0)

    for _ in range(2):  # warm-up
        read_all(files), read_all(memory)
    reads = {"files": [], "memory": [], "tensor": []}
    for _ in range(5):  # interleaved, so drift on a noisy machine hits every path alike
        reads["files"].append(read_all(files))
        reads["memory"].append(read_all(memory))
        reads["tensor"].append(read_tensor_dataset())
    f, m, t = (np.median(reads[k]) for k in ("files", "memory", "tensor"))
    print(
        f"reading batches of 256 ({len(files)} rows of {ROW_SHAPE}, warm page cache; medians of 5):"
    )
    print(f"  from the cache's files          : {f:10.0f} samples/s")
    print(f"  from an in-memory array         : {m:10.0f} samples/s")
    print(f"  in-memory TensorDataset (before): {t:10.0f} samples/s")
    print(f"  ratio files/in-memory array     : {f / m:.3f}")
    print(f"  ratio files/TensorDataset       : {f / t:.3f}")

    n = min(len(files), 3000)
    sub = data.split(files.indices[:n])
    sub_memory = ArrayRows(*sub.arrays())
    val = ArrayRows(*data.split(data.split_indices("val")[:256]).arrays())
    cfg = FitConfig(epochs=1, batch_size=64)

    def epoch(rows) -> float:
        torch.manual_seed(0)
        model = create_model("resnet1d18", in_channels=12, num_classes=5, base_width=8)
        t0 = time.perf_counter()
        fit(model, rows, val, cfg)
        return n / (time.perf_counter() - t0)

    epoch(sub_memory)  # warm-up
    pairs = []
    for k in range(6):  # paired runs, the order alternating: machine drift hits both alike
        if k % 2:
            m, f = epoch(sub_memory), epoch(sub)
        else:
            f, m = epoch(sub), epoch(sub_memory)
        pairs.append((f, m))
    f, m = np.median([p[0] for p in pairs]), np.median([p[1] for p in pairs])
    ratio = np.median([p[0] / p[1] for p in pairs])
    print(
        f"training one epoch (resnet1d18 base_width 8, {n} rows, batch 64, 1 thread; "
        "medians of 6 paired runs):"
    )
    print(f"  from the cache's files : {f:10.1f} samples/s")
    print(f"  from an in-memory array: {m:10.1f} samples/s")
    print(f"  ratio files/memory     : {ratio:.3f} (median of the pairs' ratios; >= 0.9 required)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--make", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--small-gb", type=float, default=0.5)
    ap.add_argument("--large-gb", type=float, default=4.0)
    ap.add_argument("--dir", default=None, help="where to write the datasets (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the datasets afterwards")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    if args.make:
        make_dataset(Path(args.make[0]), float(args.make[1]))
        return
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-data-"))
    try:
        sizes = {"small": args.small_gb, "large": args.large_gb}
        paths = {}
        for name, gb in sizes.items():
            path = root / f"{name}-{gb:g}gb"
            if not (path / "meta.json").exists():
                t0 = time.perf_counter()
                make_in_child(path, gb)
                print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            paths[name] = path
        peaks = {name: peak_of_training(p) for name, p in paths.items()}
        print("peak resident memory of a training process (one epoch over the training split):")
        for r in peaks.values():
            print(
                f"  {r['gb']:5.2f} GB prepared ({r['rows']} rows): peak {r['peak_mb']:7.0f} MB "
                f"(before training {r['before_mb']:.0f} MB), epoch {r['seconds']:.0f} s"
            )
        extra = peaks["large"]["peak_mb"] - peaks["small"]["peak_mb"]
        print(f"  the larger costs {extra:+.0f} MB over the smaller (<= 300 MB required)")
        throughput(paths["small"])
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
