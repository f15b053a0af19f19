"""The trainer on a tiny model: learning, accumulation, clipping, decay groups, log, hooks."""

from __future__ import annotations

import copy
import json
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scratchformer.training import (
    LOG_FIELDS,
    TrainConfig,
    Trainer,
    build_adamw,
    decay_split,
    param_groups,
    read_log,
    to_device,
    warmup_cosine,
)
from scratchformer.training.trainer import resolve_autocast

VOCAB = 12


class TinyLM(nn.Module):
    """Embedding -> dropout -> LayerNorm -> linear head: predicts (3x + 1) mod VOCAB from x."""

    def __init__(self, dim: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.drop(self.emb(x))))


def tiny_batches(batch: int = 32):
    def make(step: int, micro: int, generator: torch.Generator) -> dict:
        x = torch.randint(VOCAB, (batch,), generator=generator)
        return {"x": x, "y": (3 * x + 1) % VOCAB}

    return make


def lm_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    return F.cross_entropy(model(batch["x"]), batch["y"]), batch["y"].numel()


def tiny_trainer(model: nn.Module | None = None, *, log_path: Path | None = None,
                 train_batches=None, **overrides) -> Trainer:
    cfg = {"max_steps": 20, "lr": 3e-2, "log_interval": 1, "progress": False, **overrides}
    torch.manual_seed(0)
    return Trainer(model or TinyLM(), TrainConfig(**cfg),
                   train_batches=train_batches or tiny_batches(), loss_fn=lm_loss,
                   log_path=log_path)


def test_loss_decreases() -> None:
    history = tiny_trainer(max_steps=60, warmup_steps=5).fit()
    first, last = history[0]["loss"], history[-1]["loss"]
    assert first > 2.0  # about log(12) = 2.48 at initialisation
    assert last < 0.2 * first


def test_grad_accumulation_equals_one_big_batch_float64() -> None:
    """k micro-batches of size b with loss/k give the gradient of one batch of k*b."""
    k, b, dim = 4, 8, 16

    def data(step: int, micro: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(1000 * step + micro)
        return torch.randint(VOCAB, (b,), generator=g)

    def small(step: int, micro: int, generator: torch.Generator) -> dict:
        x = data(step, micro)
        return {"x": x, "y": (3 * x + 1) % VOCAB}

    def big(step: int, micro: int, generator: torch.Generator) -> dict:
        x = torch.cat([data(step, m) for m in range(k)])
        return {"x": x, "y": (3 * x + 1) % VOCAB}

    torch.manual_seed(0)
    model = TinyLM(dim).double()
    runs = []
    for accum, batches in ((k, small), (1, big)):
        m = copy.deepcopy(model)
        # Plain SGD at a constant rate: the update is proportional to the gradient itself, so a
        # wrong 1/k scale would show (Adam would hide it by normalising).
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        cfg = TrainConfig(max_steps=5, lr=0.5, min_lr=0.5, grad_clip=None,
                          grad_accum_steps=accum, log_interval=1, progress=False)
        history = Trainer(m, cfg, train_batches=batches, loss_fn=lm_loss, optimizer=opt).fit()
        runs.append((m, history))
    (m_acc, h_acc), (m_big, h_big) = runs
    for r_acc, r_big in zip(h_acc, h_big, strict=True):
        assert r_acc["loss"] == pytest.approx(r_big["loss"], rel=1e-12)
        assert r_acc["grad_norm"] == pytest.approx(r_big["grad_norm"], rel=1e-10)
        assert r_acc["tokens"] == r_big["tokens"] == r_acc["step"] * k * b
    for (name, p_acc), p_big in zip(m_acc.named_parameters(), m_big.parameters(), strict=True):
        torch.testing.assert_close(p_acc, p_big, rtol=1e-10, atol=1e-12, msg=name)
    assert not torch.equal(m_acc.head.weight.cpu(), model.head.weight)  # it did train


@pytest.mark.parametrize("clip", [1e-3, 1e3])
def test_grad_clip_caps_the_update_and_logs_the_preclip_norm(clip: float) -> None:
    torch.manual_seed(0)
    model = TinyLM().double()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # update = -clipped gradient
    cfg = TrainConfig(max_steps=1, lr=1.0, min_lr=1.0, grad_clip=clip, progress=False)
    trainer = Trainer(model, cfg, train_batches=tiny_batches(), loss_fn=lm_loss, optimizer=opt)
    before = [p.detach().clone() for p in model.parameters()]
    (record,) = trainer.fit()
    delta = torch.cat([(p.detach() - q).flatten() for p, q in zip(model.parameters(), before,
                                                                   strict=True)])
    step_norm = torch.linalg.vector_norm(delta).item()
    assert record["grad_norm"] > 1e-2  # the real gradient norm, not the clipped one
    assert step_norm == pytest.approx(min(clip, record["grad_norm"]), rel=1e-6)


class Tied(nn.Module):
    """Every kind of parameter the decay rule must sort."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(10, 4)
        self.pos_emb = nn.Parameter(torch.zeros(6, 4))  # plain Parameter, exempt by name
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.gain = nn.Parameter(torch.ones(4, 1))  # 2-D but flagged
        self.gain.no_weight_decay = True
        self.scales = Flagged()
        self.tokens = PlainEmbedding()  # a hand-made table: exempt by its class name
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.tok.weight  # tied: owned by an Embedding -> exempt
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)


class PlainEmbedding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(5, 4))


class Flagged(nn.Module):
    no_weight_decay = True

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(3, 4))


def test_weight_decay_only_on_weight_matrices() -> None:
    model = Tied()
    decay, no_decay = decay_split(model)
    assert decay == ["proj.weight"]
    assert sorted(no_decay) == sorted(["tok.weight", "pos_emb", "proj.bias", "norm.weight",
                                       "norm.bias", "gain", "scales.table", "tokens.weight"])
    groups = param_groups(model, 0.1)
    assert [(g["name"], g["weight_decay"], len(g["params"])) for g in groups] == [
        ("decay", 0.1, 1), ("no_decay", 0.0, 8)]
    opt = build_adamw(model, lr=1e-3, weight_decay=0.1)
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == 9  # each trainable parameter exactly once
    assert opt.param_groups[0]["params"][0] is model.proj.weight
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(model, -1.0)


def test_jsonl_log_has_the_documented_fields(tmp_path: Path) -> None:
    log = tmp_path / "run" / "log.jsonl"
    trainer = tiny_trainer(log_path=log, max_steps=6, warmup_steps=2, log_interval=2,
                           eval_interval=3)
    trainer.eval_fn = lambda model: {"val_loss": 1.5}
    history = trainer.fit()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == history == read_log(log)
    assert [r["step"] for r in lines] == [2, 3, 4, 6]  # log steps, eval steps and the last
    for r in lines:
        assert set(LOG_FIELDS) <= set(r)
        assert r["lr"] == warmup_cosine(r["step"] - 1, max_lr=3e-2, min_lr=3e-3,
                                        warmup_steps=2, total_steps=6)
        assert r["tokens"] == 32 * r["step"]
        assert r["tokens_per_s"] > 0 and r["ms_per_step"] > 0 and r["grad_norm"] > 0
    assert [("val_loss" in r) for r in lines] == [False, True, False, True]
    assert lines[0]["elapsed_s"] <= lines[-1]["elapsed_s"]


def test_eval_runs_without_grad_in_eval_mode_and_leaves_training_alone() -> None:
    seen = []

    def eval_fn(model: nn.Module) -> dict:
        seen.append((model.training, torch.is_grad_enabled()))
        torch.rand(100)  # draws from the global RNG that dropout also uses
        return {"val_metric": 1.0}

    runs = []
    for fn in (eval_fn, None):
        torch.manual_seed(0)
        trainer = tiny_trainer(TinyLM(dropout=0.3), max_steps=8, eval_interval=2)
        trainer.eval_fn = fn
        runs.append(([r["loss"] for r in trainer.fit()], trainer.model))
    assert seen == [(False, False)] * 4
    assert runs[0][0] == runs[1][0]  # evaluating changed neither the losses...
    assert torch.equal(runs[0][1].head.weight, runs[1][1].head.weight)  # ...nor the weights
    assert runs[0][1].training  # back in training mode


def test_eval_names_that_clash_with_training_fields_are_refused() -> None:
    trainer = tiny_trainer(max_steps=2)
    trainer.eval_fn = lambda model: {"loss": 0.0}
    with pytest.raises(ValueError, match="val_loss"):
        trainer.fit()


def test_hooks_see_every_step_and_can_stop_training() -> None:
    calls, evals = [], []

    def on_step(trainer: Trainer, step: int, record: dict | None) -> None:
        calls.append((step, record is not None))
        if step == 5:
            trainer.should_stop = True

    trainer = tiny_trainer(max_steps=20, log_interval=2, eval_interval=4)
    trainer.eval_fn = lambda model: {"val_metric": 2.0}
    trainer.on_step.append(on_step)
    trainer.on_eval.append(lambda tr, step, metrics: evals.append((step, metrics)))
    trainer.fit()
    assert calls == [(1, False), (2, True), (3, False), (4, True), (5, False)]
    assert evals == [(4, {"val_metric": 2.0})]
    assert trainer.step == 5


def test_an_iterator_of_batches_works_and_running_out_is_explained() -> None:
    make, g = tiny_batches(), torch.Generator().manual_seed(0)
    batches = [make(0, 0, g) for _ in range(6)]
    history = tiny_trainer(max_steps=3, grad_accum_steps=2, train_batches=iter(batches)).fit()
    assert [r["step"] for r in history] == [1, 2, 3]
    with pytest.raises(RuntimeError, match="ran out at step 3"):
        tiny_trainer(max_steps=4, grad_accum_steps=2, train_batches=batches).fit()


@pytest.mark.parametrize(
    ("overrides", "error", "needle"),
    [
        ({"max_steps": 0}, ValueError, "max_steps"),
        ({"max_steps": 2.0}, TypeError, "max_steps"),
        ({"grad_accum_steps": 0}, ValueError, "grad_accum_steps"),
        ({"log_interval": 0}, ValueError, "log_interval"),
        ({"warmup_steps": 20}, ValueError, "warmup_steps"),
        ({"lr": -1.0}, ValueError, "TrainConfig.lr"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay"),
        ({"betas": (0.9, 1.0)}, ValueError, "betas"),
        ({"min_lr": 1.0}, ValueError, "min_lr"),
        ({"grad_clip": 0.0}, ValueError, "grad_clip"),
        ({"autocast": "fp16"}, ValueError, "autocast"),
        ({"device": "no-such-device"}, ValueError, "device"),
    ],
)
def test_bad_settings_fail_early_naming_the_setting(overrides: dict, error: type,
                                                    needle: str) -> None:
    with pytest.raises(error, match=needle):
        tiny_trainer(**overrides)


def test_bad_loss_and_diverging_loss_are_explained() -> None:
    trainer = tiny_trainer(max_steps=2)
    trainer.loss_fn = lambda model, batch: model(batch["x"])  # not a scalar
    with pytest.raises(TypeError, match="scalar loss"):
        trainer.fit()
    trainer = tiny_trainer(max_steps=2)
    trainer.loss_fn = lambda model, batch: model(batch["x"]).sum() * float("nan")
    with pytest.raises(FloatingPointError, match="step 1"):
        trainer.fit()


def test_to_device_moves_nested_tensors_and_keeps_containers() -> None:
    Pair = namedtuple("Pair", "a b")
    meta = torch.device("meta")
    batch = {"x": torch.ones(2), "rest": [Pair(torch.zeros(1), 3), (torch.ones(1), "s")]}
    moved = to_device(batch, meta)
    assert moved["x"].device == meta and isinstance(moved["rest"][0], Pair)
    assert moved["rest"][0].a.device == meta and moved["rest"][0].b == 3
    assert moved["rest"][1][0].device == meta and moved["rest"][1][1] == "s"
    assert isinstance(moved["rest"][1], tuple)


def test_bf16_autocast_is_allowed_on_cpu_but_off_by_default() -> None:
    cpu = torch.device("cpu")
    assert resolve_autocast("auto", cpu) is None
    assert resolve_autocast("bf16", cpu) is torch.bfloat16
    history = tiny_trainer(max_steps=15, autocast="bf16").fit()
    assert history[-1]["loss"] < history[0]["loss"]
