"""Weimann & Conrad's `future` (CPC) pretraining task: layout, gradients, learning, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

from study.errors import ConfigError, DataError
from study.models import create_model
from study.training.cpc import CPC, PRETEXT_PREFIXES, cpc_input_length

torch.set_num_threads(1)


def _small(name: str = "resnet18v2", **kw) -> CPC:
    opts = {"base_width": 8} if name != "gru" else {"hidden_size": 16, "head": "pooled"}
    encoder = create_model(name, in_channels=1, num_classes=2, **opts)
    return CPC(encoder, **{"window_length": 32, "context_windows": 2, "num_negatives": 2, **kw})


def test_input_length_follows_their_generator_layout():
    # trainer.py defaults: 8 context frames of 2048 samples, then the positive.
    assert cpc_input_length() == 9 * 2048
    # context frames 64 - 16 apart, one skipped window, then the positive
    assert cpc_input_length(64, 4, positive_offset=1, context_overlap=16) == 4 * 48 + 2 * 64
    cpc = CPC(create_model("resnet18v2", in_channels=1, num_classes=2, base_width=8))
    assert cpc.input_length == 18432
    assert cpc.options == {
        "window_length": 2048,
        "context_windows": 8,
        "num_negatives": 1,
        "positive_offset": 0,
        "context_overlap": 0,
        "num_layers": 3,
        "num_heads": 8,
        "eval_seed": 0,
    }
    assert len(cpc.context.layers) == 3 and cpc.num_candidates == 2


@pytest.mark.parametrize("name", ["resnet18v2", "resnet34v2", "resnet50v2", "resnet1d18", "gru"])
def test_forward_is_a_finite_scalar_loss_for_every_kind_of_encoder(name):
    torch.manual_seed(0)
    cpc = _small(name)
    x = torch.randn(3, 1, cpc.input_length)
    assert cpc.logits(x).shape == (3, 3)
    loss = cpc(x)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss, acc = cpc.loss_and_accuracy(x)
    assert 0.0 <= float(acc) <= 1.0 and not acc.requires_grad


def test_windows_are_cut_where_their_generator_cuts_them():
    torch.manual_seed(0)
    w, k, offset, overlap = 16, 3, 1, 4
    cpc = _small(
        window_length=w, context_windows=k, positive_offset=offset, context_overlap=overlap
    )
    n, length = 4, cpc.input_length
    # every sample tells its row and position: x[i, 0, t] = 1000 * i + t
    x = (1000 * torch.arange(n)[:, None] + torch.arange(length)).float()[:, None, :]
    seen = []
    real_embed = cpc.embed

    def spy(windows):
        seen.append(windows.detach().clone())
        return real_embed(windows)

    cpc.embed = spy
    cpc.logits(x)
    context, candidates = seen
    stride = w - overlap
    starts = context[:, 0, 0].view(n, k)
    expected = 1000 * torch.arange(n)[:, None] + stride * torch.arange(k)
    assert torch.equal(starts, expected.float())
    candidates = candidates.view(n, 1 + cpc.num_negatives, 1, w)[:, :, 0]
    # positive: k * (w - overlap) + w * offset samples after the row start
    assert torch.equal(candidates[:, 0, 0], 1000 * torch.arange(n).float() + k * stride + w)
    # every candidate is w consecutive samples; negatives come from other rows
    assert torch.all(candidates.diff(dim=-1) == 1)
    neg_rows = (candidates[:, 1:, 0] // 1000).long()
    assert torch.all(neg_rows != torch.arange(n)[:, None])
    assert torch.all(candidates[:, 1:, -1] % 1000 < length)


def test_gradients_reach_encoder_and_context_but_not_the_unused_classifier():
    torch.manual_seed(0)
    cpc = _small()
    cpc(torch.randn(4, 1, cpc.input_length)).backward()
    for name in (
        "encoder.stem.conv.weight",
        "encoder.stages.3.1.conv2.weight",
        "context.pool_token",
        "context.layers.0.q.weight",
        "context.layers.2.ff2.weight",
    ):
        grad = cpc.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    fc = cpc.encoder.head.fc
    assert not fc.weight.requires_grad and fc.weight.grad is None


def test_state_dict_is_encoder_plus_pretext_prefixes_and_the_encoder_transfers():
    cpc = _small()
    for key in cpc.state_dict():
        assert key.startswith(("encoder.", *PRETEXT_PREFIXES)), key
    fresh = create_model("resnet18v2", in_channels=1, num_classes=5, base_width=8)
    fresh.reset_head(2)
    fresh.load_state_dict(cpc.encoder.state_dict())  # strict: same keys and shapes


def test_eval_negatives_are_repeatable_and_train_negatives_are_random():
    torch.manual_seed(0)
    cpc = _small(num_negatives=4).eval()
    x = torch.randn(6, 1, cpc.input_length)
    with torch.no_grad():
        assert torch.equal(cpc.logits(x), cpc.logits(x))
        cpc.train()
        first = cpc._negatives(x)
        assert not torch.equal(first, cpc._negatives(x))


def test_under_ddp_every_trainable_parameter_takes_part(tmp_path):
    # DDP without find_unused_parameters fails on the 2nd step if a parameter got no grad.
    torch.manual_seed(0)
    cpc = _small()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        net = nn.parallel.DistributedDataParallel(cpc)
        x = torch.randn(4, 1, cpc.input_length)
        for _ in range(2):
            net(x).backward()
    finally:
        dist.destroy_process_group()


def _sines(n: int, length: int, g: torch.Generator) -> torch.Tensor:
    # Per row a random frequency, phase, amplitude and offset: the future windows share them
    # with the context, windows of other rows mostly do not.
    t = torch.arange(length, dtype=torch.float32)
    freq = torch.empty(n, 1, 1).uniform_(0.01, 0.12, generator=g)
    phase = torch.empty(n, 1, 1).uniform_(0, 2 * math.pi, generator=g)
    amp = torch.exp(torch.empty(n, 1, 1).uniform_(-1.5, 1.5, generator=g))
    offset = torch.empty(n, 1, 1).uniform_(-2, 2, generator=g)
    x = amp * torch.sin(2 * math.pi * freq * t + phase) + offset
    return x + 0.05 * torch.randn(n, 1, length, generator=g)


def test_the_cpc_task_loss_falls_on_a_tiny_synthetic_run():
    torch.manual_seed(0)
    encoder = create_model("resnet18v2", in_channels=1, num_classes=2, base_width=8)
    cpc = CPC(encoder, window_length=64, context_windows=4, num_negatives=4)
    chance = math.log(cpc.num_candidates)
    val = _sines(64, cpc.input_length, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(1)
    steps = 150
    # their optimizer (Adam, beta_2 0.98, eps 1e-9); a cosine decay steadies the short run
    opt = torch.optim.Adam(
        [p for p in cpc.parameters() if p.requires_grad], lr=2e-3, betas=(0.9, 0.98), eps=1e-9
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def evaluate():
        cpc.eval()
        with torch.no_grad():
            loss, acc = cpc.loss_and_accuracy(val)
        cpc.train()
        return float(loss), float(acc)

    start_loss, _ = evaluate()
    for _ in range(steps):
        loss = cpc(_sines(16, cpc.input_length, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    end_loss, end_acc = evaluate()
    assert end_loss < start_loss / 3
    assert end_loss < 0.75 * chance
    assert end_acc > 2 / cpc.num_candidates


_R18 = ("resnet18v2", {"in_channels": 1, "base_width": 8})


@pytest.mark.parametrize(
    ("encoder", "kw", "message"),
    [
        (_R18, {"window_length": 0}, "window_length must be a positive int for CPC, got 0"),
        (_R18, {"context_windows": 0}, "context_windows must be a positive int"),
        (_R18, {"context_windows": 600}, "context_windows must be <= 511"),
        (_R18, {"positive_offset": -1}, "positive_offset must be an int >= 0 for CPC, got -1"),
        (_R18, {"window_length": 64, "context_overlap": 64}, "context_overlap must be < window_"),
        (_R18, {"num_negatives": 0}, "num_negatives must be a positive int"),
        (_R18, {"num_heads": 3}, "num_heads must divide .* resnet18v2 gives 64 features"),
        (None, {}, "encoder must be an ECGModel from create_model for CPC, got Linear"),
        (
            ("unet1d", {"in_channels": 1, "base_width": 4, "depth": 2}),
            {},
            "unet1d takes signal input and gives per_sample output",
        ),
        (
            ("alexnet2d", {"in_channels": 3, "base_width": 4, "hidden_size": 8}),
            {},
            "alexnet2d takes image input",
        ),
        (
            ("gru", {"in_channels": 1, "input_length": 100, "hidden_size": 8}),
            {"window_length": 64},
            "input_length=100 .* build it with input_length=64",
        ),
    ],
)
def test_config_errors_name_the_rule_and_the_value(encoder, kw, message):
    model = (
        nn.Linear(4, 4)
        if encoder is None
        else create_model(encoder[0], num_classes=2, **encoder[1])
    )
    with pytest.raises(ConfigError, match=message):
        CPC(model, **kw)


def test_input_errors_name_the_needed_shape():
    cpc = _small()
    with pytest.raises(DataError, match=r"shape \(N, 1, 96\).*see cpc_input_length.*\(3, 1, 95\)"):
        cpc(torch.randn(3, 1, 95))
    with pytest.raises(DataError, match=r"shape \(N, 1, 96\)"):
        cpc(torch.randn(3, 2, 96))
    with pytest.raises(DataError, match="at least 2 rows per batch"):
        cpc(torch.randn(1, 1, 96))
