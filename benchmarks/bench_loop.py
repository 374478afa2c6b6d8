"""Throughput of the study's training loop against a bare PyTorch loop, in one run.

Prints samples/second of each and their ratio (ours / bare). Both train the same model on
the same data for the same number of epochs; the difference is what the study's loop adds:
per-epoch validation with metrics, early-stopping bookkeeping, best-state copies and the
checkpoint callback (serialised to bytes here, as a store would receive it).

    python benchmarks/bench_loop.py [--model resnet1d18] [--base-width 16] [--n 2048]
                                    [--epochs 3] [--threads 1] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from study.models import create_model
from study.training import FitConfig, fit, state_to_bytes


def bare_loop(model, x, y, epochs, batch_size, device):
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(epochs):
        perm = torch.randperm(len(xt), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(xt), batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = xt[idx].to(device), yt[idx].to(device)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet1d18")
    ap.add_argument("--base-width", type=int, default=16)
    ap.add_argument("--n", type=int, default=2048, help="training records")
    ap.add_argument("--val", type=int, default=256, help="validation records")
    ap.add_argument("--length", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, 12, args.length)).astype(np.float32)
    y = (rng.random((args.n, 5)) < 0.2).astype(np.float32)
    xv = rng.normal(size=(args.val, 12, args.length)).astype(np.float32)
    yv = (rng.random((args.val, 5)) < 0.2).astype(np.float32)
    opts = {"base_width": args.base_width} if args.model.startswith("resnet") else {}

    def new_model():
        torch.manual_seed(0)
        return create_model(
            args.model, in_channels=12, num_classes=5, input_length=args.length, **opts
        )

    bare_loop(new_model(), x[:256], y[:256], 1, args.batch_size, args.device)  # warm-up
    t0 = time.perf_counter()
    bare_loop(new_model(), x, y, args.epochs, args.batch_size, args.device)
    bare = time.perf_counter() - t0

    sink = []
    cfg = FitConfig(
        epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs + 1, device=args.device
    )
    t0 = time.perf_counter()
    fit(
        new_model(),
        (x, y),
        (xv, yv),
        cfg,
        on_epoch=lambda state, rec: sink.append(len(state_to_bytes(state))),
    )
    ours = time.perf_counter() - t0

    n = args.n * args.epochs
    print(
        f"model {args.model} (base_width {args.base_width}), {args.n} x 12 x {args.length}, "
        f"{args.epochs} epochs, batch {args.batch_size}, {args.threads} thread(s), {args.device}"
    )
    print(f"bare PyTorch loop : {n / bare:9.1f} samples/s ({bare:.2f} s)")
    print(
        f"study fit loop    : {n / ours:9.1f} samples/s ({ours:.2f} s, incl. validation of "
        f"{args.val} records/epoch and a {sink[-1] / 1e6:.1f} MB checkpoint/epoch)"
    )
    print(f"ratio ours/bare   : {bare / ours:.3f} (1.0 = no overhead)")


if __name__ == "__main__":
    main()
