r"""Study ``timeseries.ett``: time series as a language, on ETT under the Informer protocol.

Protocol (`scratchformer.data.ett`): ETTh1/ETTh2 split 12/4/4 months by time, channels
standardised on the train split, sliding test windows; MSE and MAE on the standardised scale
at horizons 24, 96 and 336, **multivariate** (all 7 channels, every model channel-independent)
and **univariate** (the OT channel). Quantile forecasts also get the weighted quantile loss
(levels 0.1..0.9, on the original scale, as Chronos reports it) and every forecast MASE
(seasonal-naive scale, 24 h, on the window's history).

Methods, all on the same windows:

* ``gpt``: Chronos-style tokens (`scratchformer.models.forecast`): each context of ``context``
  hours scaled by its mean absolute value and quantized into ``B`` uniform bins over
  ``[-bin_range, bin_range]``; a `GPT` trained with next-token cross-entropy on windows of
  ``context + chunk`` values drawn from the train split of every channel. It forecasts by
  sampling ``samples`` paths with its KV cache (``gpt``: their median; quantiles from them;
  ``gpt_mean``: their mean) and by greedy decoding (``gpt_greedy``). ``B`` is swept
  (``bins``): one model per value is trained and scored on **validation** windows at
  ``select_horizon``; the best validation MSE picks the ``B`` that gets ``seeds`` seeds.
  Test figures of the other values are reported, never used to choose.
* ``patchtst``: PatchTST-style encoder of the library's blocks on patches of ``lookback``
  values, trained with MSE on every channel (`scratchformer.models.forecast_nets`).
* ``dlinear``: DLinear, trained on every channel (multivariate, CI); ``dlinear_ot``: the same
  trained on OT alone (the published univariate setting).
* ``repeat_last``, ``seasonal_naive`` (24 h); ``arima`` (2,1,2) and ``ets`` (damped additive
  Holt-Winters, 24 h season) from statsmodels when it is installed.

DLinear and PatchTST keep the weights of their best validation MSE (checked every
``2 * eval_every`` steps on validation windows every ``model_eval_stride`` hours). Every method
but the GPT and ARIMA/ETS forecasts every ``test_stride``-th test window (the full profile: all
of them, stride 1, as the published figures do). Sampling costs far more than a direct forecast,
so the GPT is scored on the test windows whose start is a multiple of ``gpt_stride`` hours after
the test split's start and whose longest target fits; the forecasts at shorter horizons are the
first steps of the same paths (the chunked sampler makes them the same in distribution as
shorter runs). ARIMA and ETS are fitted on every ``classical_stride``-th hour's window of those.
Every method is scored on every subset it covers, so each comparison is on identical windows.

Transfer: the ETTh1 GPT forecasts ETTh2 zero-shot (ETTh2 standardised with its own train
statistics, as the protocol does) against a GPT of the same size trained on ETTh2.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from scratchformer.analysis.forecast_metrics import (
    mase,
    per_step,
    point_scores,
    point_wql,
    sample_quantiles,
    wql,
)
from scratchformer.data.ett import CHANNELS, SPLIT_HOURS, TARGET, ETTData, load_ett
from scratchformer.experiments.kit import (
    TrainingConfig,
    at_least,
    choice,
    each,
    in_range,
    mean_std,
    positive,
    positive_real,
    torch_threads,
    train,
    train_config,
)
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.functional.positional import sinusoidal_positional_encoding
from scratchformer.models.forecast import MeanScaleTokenizer, TokenForecaster, save_forecaster
from scratchformer.models.forecast_baselines import (
    classical_forecast,
    repeat_last,
    seasonal_naive,
    statsmodels_available,
)
from scratchformer.models.forecast_nets import DLinear, PatchTST
from scratchformer.models.gpt import GPT, INIT_STD, GPTConfig
from scratchformer.viz.figures import new_figure, save_figure

OT = CHANNELS.index(TARGET)
MODEL_DIR = "model"
PUBLISHED = {  # lookback 336, test MSE; DLinear and PatchTST papers, Chronos (zero-shot)
    "dlinear_multi": {"ETTh1": {24: None, 96: 0.375, 336: 0.439},
                      "ETTh2": {24: None, 96: 0.289, 336: 0.448}},
    "dlinear_uni_ot": {"ETTh1": {96: 0.056}},
    "patchtst64_multi": {"ETTh1": {96: 0.370, 336: 0.422}},
    "chronos_zero_shot_multi": {"ETTh1": {96: 0.47}},
}


@dataclass
class Config(TrainingConfig):
    """Quick profile: ETTh1 only, horizons 24/96, small models, few sampled windows."""

    transfer: bool = False  # ETTh2: baselines, DLinear, zero-shot and in-domain GPT
    horizons: tuple[int, ...] = (24, 96)
    select_horizon: int = 96  # horizon of the validation score that picks the bin count
    lookback: int = 336  # history of DLinear, PatchTST, ARIMA/ETS and of MASE's scale
    seeds: int = 1
    transfer_seeds: int = 1
    # tokenized GPT
    context: int = 64
    chunk: int = 32
    bins: tuple[int, ...] = (64, 256)
    bin_range: float = 15.0
    n_layers: int = 1
    positional: str = "learned"  # the GPT's positions: "learned", "sinusoidal" or "learned_sin"
    top_k: int = 50  # sampling keeps the top_k most likely bins (Chronos's default); 0 = all
    d_model: int = 32
    n_heads: int = 2
    batch_size: int = 16
    steps: int = 20
    warmup_steps: int = 2
    lr: float = 2e-3
    min_lr: float = 2e-4
    beta2: float = 0.95
    eval_every: int = 10
    val_windows: int = 64  # validation windows of the GPT's cross-entropy
    samples: int = 8
    test_stride: int = 24  # test windows of every method: every test_stride hours (full: 1)
    gpt_stride: int = 720  # test windows the GPT is scored on: every gpt_stride hours
    val_stride: int = 720  # validation windows of the bin selection
    max_rows: int = 2048  # sampled paths decoded at once
    # PatchTST
    patch_len: int = 16
    patch_stride: int = 8
    patch_d_model: int = 16
    patch_heads: int = 4
    patch_layers: int = 1
    patch_hidden: int = 64
    patch_dropout: float = 0.2
    patch_steps: int = 20
    patch_lr: float = 1e-3
    patch_batch: int = 64
    # DLinear
    dlinear_steps: int = 40
    dlinear_lr: float = 5e-3
    dlinear_batch: int = 224
    model_eval_stride: int = 48  # validation windows of DLinear/PatchTST model selection
    # ARIMA / ETS
    classical: bool = False
    classical_stride: int = 1440
    device: str = "cpu"

    RULES: ClassVar[dict[str, Rule]] = {
        "horizons": each(positive),
        "select_horizon": positive, "lookback": at_least(25), "seeds": positive,
        "transfer_seeds": positive, "context": at_least(25), "chunk": positive,
        "bins": each(at_least(2)),
        "bin_range": positive_real, "n_layers": positive, "steps": positive,
        "positional": choice("learned", "sinusoidal", "learned_sin"),
        "lr": positive_real, "min_lr": positive_real,
        "beta2": in_range(0.0, 1.0, high_inclusive=False),
        "eval_every": positive, "val_windows": positive, "samples": at_least(2),
        "test_stride": positive, "gpt_stride": positive, "val_stride": positive,
        "max_rows": positive,
        "patch_len": positive, "patch_stride": positive, "patch_d_model": positive,
        "patch_heads": positive, "patch_layers": positive, "patch_hidden": positive,
        "patch_dropout": in_range(0.0, 1.0, high_inclusive=False), "patch_steps": positive,
        "patch_lr": positive_real, "patch_batch": positive, "dlinear_steps": positive,
        "dlinear_lr": positive_real, "dlinear_batch": positive, "model_eval_stride": positive,
        "classical_stride": positive,
    }

    def check(self) -> None:
        """Cross-field checks: horizons, strides, sizes and the schedule."""
        super().check()
        if not self.horizons or len(set(self.horizons)) != len(self.horizons):
            raise ValueError(f"horizons must be distinct and non-empty, got {self.horizons}")
        if self.select_horizon not in self.horizons:
            raise ValueError(f"select_horizon={self.select_horizon} must be one of the "
                             f"horizons {self.horizons}")
        if max(self.horizons) > 720:
            raise ValueError(f"horizons must be <= 720, got {max(self.horizons)}")
        if not self.bins or len(set(self.bins)) != len(self.bins):
            raise ValueError(f"bins must be distinct and non-empty, got {self.bins}")
        if self.gpt_stride % self.test_stride:
            raise ValueError(f"gpt_stride={self.gpt_stride} must be a multiple of "
                             f"test_stride={self.test_stride}")
        if self.classical_stride % self.gpt_stride:
            raise ValueError(f"classical_stride={self.classical_stride} must be a multiple of "
                             f"gpt_stride={self.gpt_stride} (its windows are then GPT windows)")
        if self.patch_d_model % self.patch_heads:
            raise ValueError("patch_d_model must be divisible by patch_heads")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps must be < steps={self.steps}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr must be <= lr={self.lr}")


FULL: dict[str, Any] = {
    "transfer": True, "horizons": (24, 96, 336), "seeds": 3, "transfer_seeds": 1,
    "context": 128, "chunk": 64, "bins": (64, 256, 1024), "n_layers": 2, "d_model": 64,
    "n_heads": 4, "batch_size": 32, "steps": 200, "warmup_steps": 20, "eval_every": 100,
    "val_windows": 256, "samples": 20, "test_stride": 1, "gpt_stride": 96, "val_stride": 96,
    "patch_layers": 3, "patch_hidden": 128, "patch_steps": 400, "patch_batch": 128,
    "dlinear_steps": 500, "model_eval_stride": 24, "classical": True, "classical_stride": 192,
}


# --- windows ----------------------------------------------------------------------------------


def gather(values: np.ndarray, t0: np.ndarray, start: int, length: int) -> np.ndarray:
    """``values[t0 + start : t0 + start + length]`` for every window: (n, channels, length)."""
    idx = np.asarray(t0)[:, None] + start + np.arange(length)
    return np.ascontiguousarray(values[idx].transpose(0, 2, 1))


@dataclass
class Windows:
    """The stride-1 test windows of one data set and horizon, and the subsets methods cover."""

    data: ETTData
    horizon: int
    history: int
    t0: np.ndarray
    subsets: dict[str, np.ndarray] = field(default_factory=dict)  # name -> indices into t0

    @property
    def target(self) -> np.ndarray:
        """Standardised targets (n, 7, horizon)."""
        return gather(self.data.values, self.t0, 0, self.horizon)

    def past(self, length: int, idx: np.ndarray | None = None) -> np.ndarray:
        """The last ``length`` standardised values before each window (n, 7, length)."""
        t0 = self.t0 if idx is None else self.t0[idx]
        return gather(self.data.values, t0, -length, length)


def test_windows(data: ETTData, cfg: Config, history: int) -> dict[int, Windows]:
    """Every horizon's test windows with the ``gpt`` and ``classical`` subsets."""
    longest = max(cfg.horizons)
    start = SPLIT_HOURS["test"][0]
    out = {}
    for h in cfg.horizons:
        t0 = data.windows("test", h, history, cfg.test_stride)
        offset = t0 - start
        fits = t0 + longest <= SPLIT_HOURS["test"][1]
        subsets = {"all": np.arange(len(t0)),
                   "gpt": np.flatnonzero(fits & (offset % cfg.gpt_stride == 0))}
        if cfg.classical and statsmodels_available():
            subsets["classical"] = np.flatnonzero(fits & (offset % cfg.classical_stride == 0))
        out[h] = Windows(data, h, history, t0, subsets)
    return out


# --- scoring ----------------------------------------------------------------------------------


def _raw(x: np.ndarray, data: ETTData, channels: np.ndarray) -> np.ndarray:
    """Standardised values (..., channel, step) back on the original scale."""
    return x * data.std[channels, None] + data.mean[channels, None]


def score(w: Windows, idx: np.ndarray, point: np.ndarray,
          quantiles: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """MSE, MAE, WQL (original scale) and MASE of a forecast of windows ``idx``, over all
    channels (``multi``) and OT (``uni``); a point forecast stands for its own quantiles."""
    target = gather(w.data.values, w.t0[idx], 0, w.horizon)
    history = w.past(w.history, idx)
    out = {}
    for name, ch in (("multi", np.arange(len(CHANNELS))), ("uni", np.array([OT]))):
        p, t, hist = point[:, ch], target[:, ch], history[:, ch]
        raw_t = _raw(t, w.data, ch)
        loss = (point_wql(_raw(p, w.data, ch), raw_t) if quantiles is None
                else wql(_raw(quantiles[:, :, ch], w.data, ch), raw_t))
        out[name] = {**point_scores(p, t), "wql": loss, "mase": mase(p, t, hist)}
    return out


def summarise(per_seed: list[dict]) -> dict:
    """Seed scores (same nested keys) -> the same keys holding mean, std and the values."""
    first = per_seed[0]
    if isinstance(first, dict):
        return {k: summarise([s[k] for s in per_seed]) for k in first}
    return mean_std(per_seed)


# --- training ---------------------------------------------------------------------------------


def _series_batches(values: np.ndarray, channels: np.ndarray, length: int, batch: int,
                    first: int, last: int) -> Callable[[int, int, torch.Generator], Tensor]:
    """Random windows ``values[s : s + length, c]`` with ``first <= s <= last``, c in channels."""
    series = torch.from_numpy(np.ascontiguousarray(values[:, channels].T))  # (C, T)
    ch = torch.from_numpy(np.asarray(channels))

    def batches(step: int, micro: int, gen: torch.Generator) -> Tensor:
        c = torch.randint(len(ch), (batch,), generator=gen)
        s = torch.randint(first, last + 1, (batch,), generator=gen)
        return series[c[:, None], s[:, None] + torch.arange(length)]

    return batches


def _keep_best(metric: str) -> tuple[Callable, Callable[[nn.Module], None]]:
    """An on_eval hook remembering the weights of the lowest ``metric``, and their restorer."""
    best: dict[str, Any] = {"value": math.inf, "state": None}

    def on_eval(trainer: Any, step: int, metrics: dict) -> None:
        if metrics[metric] < best["value"]:
            best["value"] = metrics[metric]
            best["state"] = copy.deepcopy(trainer.model.state_dict())

    def restore(model: nn.Module) -> None:
        if best["state"] is not None:
            model.load_state_dict(best["state"])

    return on_eval, restore


def _forecast(model: nn.Module, history: np.ndarray, batch: int = 4096) -> np.ndarray:
    """A direct model's forecasts of histories (n, channels, L): (n, channels, horizon)."""
    n, c, length = history.shape
    flat = torch.from_numpy(history.reshape(n * c, length))
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(flat[i:i + batch]) for i in range(0, len(flat), batch)])
    return out.numpy().reshape(n, c, -1)


def train_direct(kind: str, data: ETTData, horizon: int, channels: np.ndarray, cfg: Config,
                 seed: int) -> tuple[nn.Module, dict]:
    """DLinear or PatchTST for ``horizon`` trained with MSE on the train split's ``channels``,
    keeping the weights of the best validation MSE (validation windows every
    ``model_eval_stride`` hours)."""
    L = cfg.lookback
    torch.manual_seed(seed)
    if kind == "dlinear":
        model: nn.Module = DLinear(L, horizon)
        steps, lr, batch, wd = cfg.dlinear_steps, cfg.dlinear_lr, cfg.dlinear_batch, 0.0
    else:
        model = PatchTST(L, horizon, patch_len=cfg.patch_len, stride=cfg.patch_stride,
                         d_model=cfg.patch_d_model, n_heads=cfg.patch_heads,
                         n_layers=cfg.patch_layers, d_hidden=cfg.patch_hidden,
                         dropout=cfg.patch_dropout)
        steps, lr, batch, wd = cfg.patch_steps, cfg.patch_lr, cfg.patch_batch, cfg.weight_decay
    values = data.values
    train_end = SPLIT_HOURS["train"][1]
    batches = _series_batches(values, channels, L + horizon, batch, 0, train_end - L - horizon)
    val_t0 = data.windows("val", horizon, L, cfg.model_eval_stride)
    val_hist = gather(values, val_t0, -L, L)[:, channels]
    val_target = gather(values, val_t0, 0, horizon)[:, channels]

    def loss_fn(m: nn.Module, x: Tensor) -> Tensor:
        return nn.functional.mse_loss(m(x[:, :L]), x[:, L:])

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return {"val_mse": float(np.mean((_forecast(m, val_hist) - val_target) ** 2))}

    on_eval, restore = _keep_best("val_mse")
    tcfg = train_config(cfg, seed, max_steps=steps, lr=lr, min_lr=lr / 10,
                        warmup_steps=max(1, steps // 20), weight_decay=wd, betas=(0.9, 0.999),
                        eval_interval=min(cfg.eval_every * 2, steps),
                        log_interval=max(1, min(50, steps // 4)), progress=False)
    result = train(model, tcfg, batches, loss_fn=loss_fn, eval_fn=eval_fn, on_eval=[on_eval])
    restore(model)
    return model.eval(), {"train_s": result.train_s, "best_val_mse": min(result.curve["val_mse"]),
                          "parameters": sum(p.numel() for p in model.parameters())}


def gpt_model(cfg: Config, n_bins: int) -> TokenForecaster:
    """The study's token GPT with ``n_bins`` bins (context ``context + chunk``)."""
    gcfg = GPTConfig(vocab_size=n_bins, context_len=cfg.context + cfg.chunk,
                     n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_model=cfg.d_model,
                     dropout=0.0, bias=False, attention_backend="sdpa",
                     positional="sinusoidal" if cfg.positional == "sinusoidal" else "learned")
    gpt = GPT(gcfg)
    if cfg.positional == "learned_sin":  # learned table started from sin/cos at the embeddings'
        with torch.no_grad():  # scale: relative offsets are linear maps from the first step
            table = sinusoidal_positional_encoding(gcfg.context_len, gcfg.d_model)
            gpt.pos_emb.weight.copy_(table * INIT_STD * math.sqrt(2))
    return TokenForecaster(gpt, MeanScaleTokenizer(n_bins, -cfg.bin_range, cfg.bin_range),
                           cfg.context, cfg.chunk)


def train_gpt(data: ETTData, cfg: Config, n_bins: int, seed: int, out: Path | None = None
              ) -> tuple[TokenForecaster, dict]:
    """A token GPT trained on windows of every channel of the train split; validation
    cross-entropy on ``val_windows`` fixed validation windows; the log goes under ``out``."""
    torch.manual_seed(seed)
    model = gpt_model(cfg, n_bins)
    length = cfg.context + cfg.chunk
    values = data.values
    channels = np.arange(len(CHANNELS))
    batches = _series_batches(values, channels, length, cfg.batch_size, 0,
                              SPLIT_HOURS["train"][1] - length)
    rng = np.random.default_rng(seed + 1)
    v0, v1 = SPLIT_HOURS["val"]
    starts = rng.integers(v0 - cfg.context, v1 - length + 1, cfg.val_windows)
    chans = rng.integers(0, len(CHANNELS), cfg.val_windows)
    val = torch.from_numpy(values[starts[:, None] + np.arange(length), chans[:, None]])

    def loss_fn(m: nn.Module, x: Tensor) -> tuple[Tensor, int]:
        return m(x)[1], x.numel()

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return {"val_loss": float(m(val)[1])}

    tcfg = train_config(cfg, seed, log_interval=max(1, min(25, cfg.steps // 4)),
                        progress=False)
    log = None if out is None else out / f"train_log_gpt_{data.name}_{n_bins}_{seed}.jsonl"
    result = train(model, tcfg, batches, loss_fn=loss_fn, eval_fn=eval_fn, log_path=log)
    return model.eval(), {"train_s": result.train_s, "ms_per_step": result.ms_per_step,
                          "val_loss": result.final("val_loss"),
                          "curve": {"step": result.curve["step"],
                                    "val_loss": result.curve["val_loss"]},
                          "parameters": model.gpt.num_parameters()}


@dataclass
class Sampled:
    """Sampled forecasts of GPT windows: paths' median, mean, quantiles and the greedy path."""

    median: np.ndarray  # (n, 7, H)
    mean: np.ndarray
    quantiles: np.ndarray  # (K, n, 7, H)
    greedy: np.ndarray
    ms_per_series: float  # sampled paths of one (window, channel), longest horizon
    ms_per_series_greedy: float

    def cut(self, horizon: int, idx: np.ndarray | None = None) -> Sampled:
        """The first ``horizon`` steps, of windows ``idx`` (default all)."""
        sel = slice(None) if idx is None else idx
        return Sampled(self.median[sel, :, :horizon], self.mean[sel, :, :horizon],
                       self.quantiles[:, sel, :, :horizon], self.greedy[sel, :, :horizon],
                       self.ms_per_series, self.ms_per_series_greedy)


def sample_gpt(model: TokenForecaster, history: np.ndarray, horizon: int, cfg: Config,
               seed: int) -> Sampled:
    """Sampled (``samples`` paths) and greedy forecasts of histories (n, 7, context)."""
    n, c, length = history.shape
    flat = torch.from_numpy(history.reshape(n * c, length))
    gen = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    paths = model.sample(flat, horizon, cfg.samples, generator=gen, max_rows=cfg.max_rows,
                         top_k=cfg.top_k or None)
    sampled_s = time.perf_counter() - t
    t = time.perf_counter()
    greedy = model.sample(flat, horizon, greedy=True, max_rows=cfg.max_rows)[:, 0]
    greedy_s = time.perf_counter() - t
    p = paths.numpy().reshape(n, c, cfg.samples, horizon)
    q = sample_quantiles(p)  # (K, n, c, H)
    return Sampled(np.median(p, 2), p.mean(2), q, greedy.numpy().reshape(n, c, horizon),
                   1e3 * sampled_s / (n * c), 1e3 * greedy_s / (n * c))


def gpt_scores(sampled: Sampled, w: Windows, idx_in: np.ndarray, idx: np.ndarray) -> dict:
    """Scores of ``gpt``, ``gpt_mean`` and ``gpt_greedy`` on windows ``idx`` of ``w``;
    ``idx_in`` are the positions of those windows in ``sampled``."""
    s = sampled.cut(w.horizon, idx_in)
    return {"gpt": score(w, idx, s.median, s.quantiles), "gpt_mean": score(w, idx, s.mean),
            "gpt_greedy": score(w, idx, s.greedy)}


# --- the study --------------------------------------------------------------------------------


@register("timeseries.ett", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """Tokenized GPT vs PatchTST, DLinear, naive and statistical baselines on ETT."""
    start = time.perf_counter()
    costs: dict[str, float] = {}
    names = ["ETTh1", "ETTh2"] if cfg.transfer else ["ETTh1"]
    with torch_threads(cfg.threads):
        data = {n: load_ett(n) for n in names}
        history = max(cfg.lookback, cfg.context)
        windows = {n: test_windows(d, cfg, history) for n, d in data.items()}
        per_seed: dict[str, dict[int, dict[str, list[dict]]]] = {
            n: {h: {} for h in cfg.horizons} for n in names}
        examples: dict[str, np.ndarray] = {}

        def add(ds: str, h: int, method: str, scores: dict) -> None:
            per_seed[ds][h].setdefault(method, []).append(scores)

        # naive baselines: every window
        t = time.perf_counter()
        for ds in names:
            for h, w in windows[ds].items():
                past = w.past(history)
                for method, fc in (("repeat_last", repeat_last(past, h)),
                                   ("seasonal_naive", seasonal_naive(past, h))):
                    add(ds, h, method, {sub: score(w, idx, fc[idx])
                                        for sub, idx in w.subsets.items()})
                    if ds == "ETTh1" and h == max(cfg.horizons):
                        examples[method] = fc[w.subsets["gpt"]]
        costs["naive_s"] = time.perf_counter() - t

        # DLinear (multivariate CI, and OT only) and PatchTST
        direct_info: dict[str, list[dict]] = {}
        t = time.perf_counter()
        all_ch, ot_ch = np.arange(len(CHANNELS)), np.array([OT])
        jobs = [("dlinear", all_ch, names), ("dlinear_ot", ot_ch, names),
                ("patchtst", all_ch, ["ETTh1"])]
        for method, channels, sets in jobs:
            for ds in sets:
                for h, w in windows[ds].items():
                    for s in range(cfg.seeds):
                        kind = "patchtst" if method == "patchtst" else "dlinear"
                        model, info = train_direct(kind, data[ds], h, channels, cfg,
                                                   cfg.seed + s)
                        direct_info.setdefault(f"{method}/{ds}/{h}", []).append(info)
                        past = w.past(cfg.lookback)
                        if method == "dlinear_ot":  # OT only: uni scores
                            fc = np.repeat(_forecast(model, past[:, ot_ch]), len(CHANNELS), 1)
                            scores = {sub: {"uni": score(w, idx, fc[idx])["uni"]}
                                      for sub, idx in w.subsets.items()}
                        else:
                            fc = _forecast(model, past)
                            scores = {sub: score(w, idx, fc[idx])
                                      for sub, idx in w.subsets.items()}
                        add(ds, h, method, scores)
                        if ds == "ETTh1" and h == max(cfg.horizons) and s == 0:
                            examples[method] = fc[w.subsets["gpt"]]
                            if method == "patchtst":
                                t1 = time.perf_counter()
                                _forecast(model, past[:64])
                                costs["patchtst_ms_per_series"] = (
                                    1e3 * (time.perf_counter() - t1) / (64 * len(CHANNELS)))
        costs["direct_s"] = time.perf_counter() - t

        # ARIMA / ETS on the classical subset: one fit per (window, channel), longest horizon
        classical_info: dict[str, Any] = {}
        if cfg.classical and statsmodels_available():
            t = time.perf_counter()
            longest = max(cfg.horizons)
            for ds in names:
                w_long = windows[ds][longest]
                t0 = w_long.t0[w_long.subsets["classical"]]
                past = gather(data[ds].values, t0, -cfg.lookback, cfg.lookback)
                n, c, _ = past.shape
                for method in ("arima", "ets"):
                    t1 = time.perf_counter()
                    fc, failed = classical_forecast(past.reshape(n * c, -1), longest, method)
                    fc = fc.reshape(n, c, longest)
                    classical_info[f"{method}/{ds}"] = {
                        "fits": n * c, "failed": failed,
                        "ms_per_series": 1e3 * (time.perf_counter() - t1) / (n * c)}
                    for h, w in windows[ds].items():
                        pos = {v: i for i, v in enumerate(w.t0)}
                        idx = np.array([pos[v] for v in t0])
                        add(ds, h, method, {"classical": score(w, idx, fc[:, :, :h])})
            costs["classical_s"] = time.perf_counter() - t

        # token GPT: bin sweep on validation, then seeds of the chosen bin count
        t = time.perf_counter()
        d1 = data["ETTh1"]
        sel = cfg.select_horizon
        val_t0 = d1.windows("val", sel, cfg.context, cfg.val_stride)
        val_hist = gather(d1.values, val_t0, -cfg.context, cfg.context)
        val_target = gather(d1.values, val_t0, 0, sel)
        sweep: dict[int, dict] = {}
        models: dict[int, TokenForecaster] = {}
        for b in cfg.bins:
            model, info = train_gpt(d1, cfg, b, cfg.seed, out)
            models[b] = model
            vs = sample_gpt(model, val_hist, sel, cfg, cfg.seed + 7)
            sweep[b] = {**info, "val": {
                "gpt": point_scores(vs.median, val_target),
                "gpt_greedy": point_scores(vs.greedy, val_target),
                "gpt_mean": point_scores(vs.mean, val_target)}}
        best_bins = min(cfg.bins, key=lambda b: sweep[b]["val"]["gpt"]["mse"])
        costs["gpt_sweep_s"] = time.perf_counter() - t

        t = time.perf_counter()
        gpt_info = []
        main = windows["ETTh1"][max(cfg.horizons)]
        gpt_t0 = main.t0[main.subsets["gpt"]]
        pos = {v: i for i, v in enumerate(gpt_t0)}
        first: dict[int, dict] = {}
        for s in range(cfg.seeds):
            if s == 0:
                model = models[best_bins]
                info = {k: v for k, v in sweep[best_bins].items() if k != "val"}
            else:
                model, info = train_gpt(d1, cfg, best_bins, cfg.seed + s, out)
            hist = gather(d1.values, gpt_t0, -cfg.context, cfg.context)
            sampled = sample_gpt(model, hist, max(cfg.horizons), cfg, cfg.seed + s)
            gpt_info.append({**info, "ms_per_series_sampled": sampled.ms_per_series,
                             "ms_per_series_greedy": sampled.ms_per_series_greedy})
            if s == 0:
                first_model, first_sampled = model, sampled
            for h, w in windows["ETTh1"].items():
                by_method: dict[str, dict] = {}
                for sub, idx in w.subsets.items():
                    if sub == "all":
                        continue
                    inside = np.array([pos[v] for v in w.t0[idx]])
                    for method, sc in gpt_scores(sampled, w, inside, idx).items():
                        by_method.setdefault(method, {})[sub] = sc
                for method, sc in by_method.items():
                    add("ETTh1", h, method, sc)
                if s == 0:
                    first[h] = by_method
        costs["gpt_seeds_s"] = time.perf_counter() - t

        # the other bin counts on the test windows at select_horizon (reported, not chosen on)
        t = time.perf_counter()
        w_sel = windows["ETTh1"][sel]
        sel_idx = w_sel.subsets["gpt"]
        sel_hist = w_sel.past(cfg.context, sel_idx)
        for b in cfg.bins:
            if b == best_bins:
                sc = {m: v["gpt"] for m, v in first[sel].items()}
            else:
                sampled_b = sample_gpt(models[b], sel_hist, sel, cfg, cfg.seed)
                sc = gpt_scores(sampled_b, w_sel, np.arange(len(sel_idx)), sel_idx)
            sweep[b]["test"] = {m: summarise([v]) for m, v in sc.items()}
        costs["gpt_sweep_test_s"] = time.perf_counter() - t

        # transfer: ETTh1 GPT zero-shot on ETTh2 against a GPT trained on ETTh2
        transfer: dict[str, Any] = {}
        if cfg.transfer:
            t = time.perf_counter()
            w2 = windows["ETTh2"][sel]
            idx2 = w2.subsets["gpt"]
            hist2 = w2.past(cfg.context, idx2)
            zero, own, own_info = [], [], []
            for s in range(cfg.transfer_seeds):
                m1 = (first_model if s == 0
                      else train_gpt(d1, cfg, best_bins, cfg.seed + s, out)[0])
                zs = sample_gpt(m1, hist2, sel, cfg, cfg.seed + s)
                zero.append(gpt_scores(zs, w2, np.arange(len(idx2)), idx2))
                m2, info2 = train_gpt(data["ETTh2"], cfg, best_bins, cfg.seed + s, out)
                own_info.append(info2)
                os_ = sample_gpt(m2, hist2, sel, cfg, cfg.seed + s)
                own.append(gpt_scores(os_, w2, np.arange(len(idx2)), idx2))
            baselines = {m: summarise([r["gpt"] for r in per_seed["ETTh2"][sel][m]])
                         for m in ("repeat_last", "seasonal_naive", "dlinear")}
            transfer = {"horizon": sel, "windows": len(idx2),
                        "zero_shot_from_ETTh1": summarise(zero),
                        "trained_on_ETTh2": summarise(own),
                        "baselines_same_windows": baselines,
                        "trained_on_ETTh2_train_s": [i["train_s"] for i in own_info]}
            costs["transfer_s"] = time.perf_counter() - t

        save_forecaster(first_model, out / MODEL_DIR, extra={
            "trained_on": "ETTh1 train split (hours 0-8639), all 7 channels, standardised",
            "bins": best_bins, "seed": cfg.seed, "steps": cfg.steps})
        _plot_examples(examples, first_sampled, main, d1, out)
        _plot_error_vs_horizon(examples, first_sampled, main, out)
        _plot_tokens(d1, cfg, best_bins, out)
        _plot_attention(first_model, d1, cfg, out)
        _plot_sweep(sweep, best_bins, out)

    results = {
        ds: {str(h): {"windows": {sub: len(idx) for sub, idx in windows[ds][h].subsets.items()},
                      "methods": {m: summarise(v) for m, v in per_seed[ds][h].items()}}
             for h in cfg.horizons}
        for ds in names}
    gpt_costs = {k: mean_std([i[k] for i in gpt_info], values_key=None)
                 for k in ("train_s", "ms_per_step", "ms_per_series_sampled",
                           "ms_per_series_greedy")}
    record = {
        "protocol": {
            "splits_hours": {k: list(v) for k, v in SPLIT_HOURS.items()},
            "standardisation": "per channel, mean and population std of the train split",
            "lookback": cfg.lookback, "gpt_context": cfg.context, "gpt_chunk": cfg.chunk,
            "test_stride_hours": cfg.test_stride, "gpt_stride_hours": cfg.gpt_stride,
            "classical_stride_hours": cfg.classical_stride if cfg.classical else None,
            "test_windows_per_horizon": {str(h): len(windows["ETTh1"][h].t0)
                                         for h in cfg.horizons},
            "wql_scale": "original (raw) values; MSE, MAE on the standardised scale"},
        "results": results,
        "bins": {"chosen": best_bins, "chosen_by": f"validation MSE of the sampled median at "
                 f"horizon {sel}", "sweep": {str(b): v for b, v in sweep.items()}},
        "gpt": {"parameters": gpt_info[0]["parameters"], "seeds": cfg.seeds,
                "val_loss": mean_std([i["val_loss"] for i in gpt_info], values_key=None),
                "costs": gpt_costs},
        "direct_models": {k: summarise(v) for k, v in direct_info.items()},
        "classical": classical_info,
        "transfer": transfer,
        "published": _published(),
        "costs": {**costs, "wall_s": time.perf_counter() - start},
    }
    record["targets"] = targets(record, cfg)
    (out / "summary.md").write_text(summary_markdown(record, cfg), encoding="utf-8")
    return record


def _published() -> dict:
    """The published figures with string keys (horizons)."""
    return {k: {ds: {str(h): v for h, v in per.items() if v is not None}
                for ds, per in sets.items()} for k, sets in PUBLISHED.items()}


def _mean(record: dict, ds: str, h: int, method: str, sub: str, kind: str, metric: str
          ) -> float | None:
    """A mean score from the record, or None when that method/subset was not run."""
    try:
        return record["results"][ds][str(h)]["methods"][method][sub][kind][metric]["mean"]
    except KeyError:
        return None


def targets(record: dict, cfg: Config) -> dict:
    """The study's targets, each with the measured figures and whether it was met."""
    out: dict[str, Any] = {}
    beats = {}
    for h in cfg.horizons:
        for kind in ("multi", "uni"):
            for metric in ("mse", "mae"):
                g = _mean(record, "ETTh1", h, "gpt", "gpt", kind, metric)
                naive = {m: _mean(record, "ETTh1", h, m, "gpt", kind, metric)
                         for m in ("repeat_last", "seasonal_naive")}
                key = f"h{h}_{kind}_{metric}"
                beats[key] = {"gpt": g, **naive,
                              "met": bool(g is not None and all(g < v for v in naive.values()
                                                                if v is not None))}
    out["gpt_beats_naive"] = {"met": all(v["met"] for v in beats.values()), "cases": beats}
    sel = cfg.select_horizon
    g = _mean(record, "ETTh1", sel, "gpt", "gpt", "multi", "mse")
    out["multi_mse_le_0.40"] = {"horizon": sel, "gpt": g, "met": bool(g is not None and g <= 0.40)}
    g_uni = _mean(record, "ETTh1", sel, "gpt", "gpt", "uni", "mse")
    d_uni = _mean(record, "ETTh1", sel, "dlinear_ot", "gpt", "uni", "mse")
    out["uni_mse_le_dlinear"] = {"horizon": sel, "gpt": g_uni, "dlinear_ot_same_windows": d_uni,
                                 "dlinear_ot_all_windows": _mean(record, "ETTh1", sel,
                                                                 "dlinear_ot", "all", "uni",
                                                                 "mse"),
                                 "met": bool(g_uni is not None and d_uni is not None
                                             and g_uni <= d_uni)}
    protocol = {}
    for ds, key in (("ETTh1", "dlinear_multi"), ("ETTh2", "dlinear_multi")):
        pub = PUBLISHED[key].get(ds, {})
        for h, v in pub.items():
            ours = _mean(record, ds, h, "dlinear", "all", "multi", "mse")
            if v is not None and ours is not None:
                protocol[f"{ds}_{h}"] = {"ours": ours, "published": v,
                                         "relative_diff": (ours - v) / v}
    ours = _mean(record, "ETTh1", 96, "dlinear_ot", "all", "uni", "mse")
    if ours is not None:
        protocol["ETTh1_96_uni_OT"] = {"ours": ours, "published": 0.056,
                                       "relative_diff": (ours - 0.056) / 0.056}
    out["dlinear_vs_published"] = protocol
    return out


def _fmt(cell: dict | None) -> str:
    """``mean ± std`` of a summarised score (std left out for one value)."""
    if cell is None:
        return "–"
    if len(cell.get("values", [])) > 1:
        return f"{cell['mean']:.3f} ± {cell['std']:.3f}"
    return f"{cell['mean']:.3f}"


METHOD_ORDER = ("gpt", "gpt_mean", "gpt_greedy", "patchtst", "dlinear", "dlinear_ot", "arima",
                "ets", "seasonal_naive", "repeat_last")


def summary_markdown(record: dict, cfg: Config) -> str:
    """Markdown tables: every method, data set, horizon and subset (MSE, MAE, WQL, MASE)."""
    lines = ["# timeseries.ett", "",
             f"Test scores, mean ± std over {cfg.seeds} seed(s) for trained methods. MSE and MAE "
             "on the standardised scale; WQL on the original scale; MASE against the 24-h "
             "seasonal naive step on each window's history. `gpt` is the median of "
             f"{cfg.samples} sampled paths ({record['bins']['chosen']} bins, chosen on "
             f"validation). Subsets: `all` = every {cfg.test_stride}-h test window, `gpt` = every "
             f"{cfg.gpt_stride}-h window whose longest target fits, `classical` = every "
             f"{cfg.classical_stride}-h window (ARIMA/ETS).", ""]
    for ds, per_h in record["results"].items():
        for h, entry in per_h.items():
            for sub, n in entry["windows"].items():
                lines += [f"## {ds}, horizon {h}, windows `{sub}` ({n} windows × 7 channels)", "",
                          "| method | multi MSE | multi MAE | multi WQL | multi MASE | "
                          "OT MSE | OT MAE | OT WQL | OT MASE |",
                          "|---|---|---|---|---|---|---|---|---|"]
                for m in METHOD_ORDER:
                    res = entry["methods"].get(m, {}).get(sub)
                    if res is None:
                        continue
                    cells = [_fmt(res.get(kind, {}).get(metric))
                             for kind in ("multi", "uni")
                             for metric in ("mse", "mae", "wql", "mase")]
                    lines.append(f"| {m} | " + " | ".join(cells) + " |")
                lines.append("")
    tr = record.get("transfer")
    if tr:
        lines += [f"## Transfer to ETTh2 (horizon {tr['horizon']}, {tr['windows']} windows)", "",
                  "| model | multi MSE | multi MAE | OT MSE | OT MAE |", "|---|---|---|---|---|"]
        rows = [("GPT trained on ETTh1, zero-shot", tr["zero_shot_from_ETTh1"]["gpt"]),
                ("GPT trained on ETTh2", tr["trained_on_ETTh2"]["gpt"])]
        rows += [(m, v) for m, v in tr["baselines_same_windows"].items()]
        for name, res in rows:
            lines.append(f"| {name} | {_fmt(res['multi']['mse'])} | {_fmt(res['multi']['mae'])}"
                         f" | {_fmt(res['uni']['mse'])} | {_fmt(res['uni']['mae'])} |")
        lines.append("")
    lines += ["## Bin count (validation picks, test reported)", "",
              "| bins | val MSE (median) | val MAE | test MSE (median, seed 0) | test MAE | "
              "val CE |", "|---|---|---|---|---|---|"]
    for b, v in record["bins"]["sweep"].items():
        test = v.get("test", {}).get("gpt", {}).get("multi", {})
        lines.append(f"| {b} | {v['val']['gpt']['mse']:.3f} | {v['val']['gpt']['mae']:.3f} | "
                     f"{_fmt(test.get('mse'))} | {_fmt(test.get('mae'))} | "
                     f"{v['val_loss']:.3f} |")
    return "\n".join(lines) + "\n"


# --- figures ----------------------------------------------------------------------------------


def _plot_examples(examples: dict[str, np.ndarray], sampled: Sampled, w: Windows,
                   data: ETTData, out: Path) -> Path:
    """Two test windows of OT: history, truth, each method's forecast; GPT's 10-90% band."""
    idx = w.subsets["gpt"]
    picks = [0, len(idx) // 2] if len(idx) > 1 else [0]
    methods = [m for m in ("patchtst", "dlinear", "seasonal_naive") if m in examples]
    fig, axes = new_figure(4.2 * (1 + len(methods)), 3.0 * len(picks), ncols=1 + len(methods),
                           nrows=len(picks))
    axes = np.asarray(axes).reshape(len(picks), -1)
    ctx = 96
    for r, p in enumerate(picks):
        t0 = w.t0[idx[p]]
        hist = data.values[t0 - ctx:t0, OT]
        truth = data.values[t0:t0 + w.horizon, OT]
        xs_h, xs_f = np.arange(-ctx, 0), np.arange(w.horizon)
        for c, name in enumerate(["gpt", *methods]):
            ax = axes[r, c]
            ax.plot(xs_h, hist, color="black", lw=0.8)
            ax.plot(xs_f, truth, color="black", lw=0.8, ls=":", label="truth")
            if name == "gpt":
                q = sampled.quantiles[:, p, OT, :w.horizon]
                ax.fill_between(xs_f, q[0], q[-1], color="C0", alpha=0.25, label="10-90%")
                ax.fill_between(xs_f, q[2], q[-3], color="C0", alpha=0.25, label="30-70%")
                ax.plot(xs_f, sampled.median[p, OT, :w.horizon], color="C0", label="median")
            else:
                ax.plot(xs_f, examples[name][p, OT, :w.horizon], color="C1", label=name)
            ax.set_title(f"{name}, start hour {t0}", fontsize=8)
            ax.axvline(0, color="grey", lw=0.5)
            if r == 0:
                ax.legend(fontsize=6, loc="upper left")
    axes[-1, 0].set_xlabel("hours from forecast start")
    axes[0, 0].set_ylabel("OT (standardised)")
    return save_figure(fig, out / "forecast_examples.png", dpi=90)


def _plot_error_vs_horizon(examples: dict[str, np.ndarray], sampled: Sampled, w: Windows,
                           out: Path) -> Path:
    """MSE at each lead time (all channels, GPT windows, longest horizon) for every method."""
    target = gather(w.data.values, w.t0[w.subsets["gpt"]], 0, w.horizon)
    fig, ax = new_figure(6.0, 3.6)
    curves = {"gpt (median)": sampled.median, "gpt (greedy)": sampled.greedy,
              **{k: v for k, v in examples.items() if k != "dlinear_ot"}}
    for name, fc in curves.items():
        ax.plot(np.arange(1, w.horizon + 1), per_step(fc[:, :, :w.horizon], target), lw=1,
                label=name)
    ax.set_xlabel("lead time (hours)")
    ax.set_ylabel("MSE (standardised, 7 channels)")
    ax.set_title(f"ETTh1 test, {len(target)} windows", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, out / "error_vs_horizon.png", dpi=90)


def _plot_tokens(data: ETTData, cfg: Config, n_bins: int, out: Path) -> Path:
    """Histogram of the token ids of every train window (context-scaled), all channels."""
    tok = MeanScaleTokenizer(n_bins, -cfg.bin_range, cfg.bin_range)
    length = cfg.context + cfg.chunk
    values = torch.from_numpy(data.values[:SPLIT_HOURS["train"][1]].T.copy())
    win = values.unfold(1, length, cfg.chunk).reshape(-1, length)
    ids = tok.encode(win, tok.scale(win[:, :cfg.context]))
    counts = torch.bincount(ids.flatten(), minlength=n_bins).numpy()
    fig, (ax, ax2) = new_figure(9.0, 3.2, ncols=2)
    ax.stairs(np.maximum(counts, 0.5), np.arange(n_bins + 1) - 0.5, fill=True, color="C0")
    ax.set_yscale("log")
    ax.set_xlabel("token id")
    ax.set_ylabel("count")
    used = np.flatnonzero(counts)
    ax.set_title(f"{n_bins} bins over [-{cfg.bin_range:g}, {cfg.bin_range:g}]: "
                 f"{len(used)} used", fontsize=9)
    lo, hi = used.min(), used.max()
    centers = tok.centers().numpy()
    ax2.stairs(counts[lo:hi + 1], np.append(centers[lo:hi + 1], centers[hi] + tok.width)
               - tok.width / 2, fill=True, color="C0")
    ax2.set_xlabel("scaled value (bin centre)")
    ax2.set_title("used range", fontsize=9)
    return save_figure(fig, out / "token_histogram.png", dpi=90)


def _plot_attention(model: TokenForecaster, data: ETTData, cfg: Config, out: Path) -> Path:
    """Attention of every layer and head over one OT test context, and the last query's row."""
    t0 = SPLIT_HOURS["test"][0] + 24 * 7
    ctx = torch.from_numpy(data.values[t0 - cfg.context:t0, OT].copy())[None]
    ids = model.tokenizer.encode(ctx, model.tokenizer.scale(ctx))
    maps = [m[0].numpy() for m in model.gpt.attention_maps(ids)]  # (H, T, T) per layer
    L, H = len(maps), maps[0].shape[0]
    fig, axes = new_figure(2.4 * H, 2.4 * L + 1.6, ncols=H, nrows=L + 1)
    axes = np.asarray(axes).reshape(L + 1, H)
    for layer in range(L):
        for h in range(H):
            ax = axes[layer, h]
            ax.imshow(maps[layer][h] ** 0.5, cmap="viridis")
            ax.set_title(f"layer {layer} head {h}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    for h in range(H):
        ax = axes[L, h]
        row = maps[-1][h, -1]
        ax.bar(np.arange(cfg.context), row, width=1.0, color="C1")
        ax2 = ax.twinx()
        ax2.plot(ctx[0].numpy(), color="black", lw=0.6)
        ax2.set_yticks([])
        ax.set_title(f"last layer, head {h}: last query", fontsize=7)
        ax.set_xlabel("context hour", fontsize=7)
    fig.suptitle("attention over an OT context (square root of the weights)", fontsize=9)
    return save_figure(fig, out / "attention.png", dpi=80)


def _plot_sweep(sweep: dict[int, dict], best: int, out: Path) -> Path:
    """Validation (and test) MSE of the sampled median against the bin count."""
    bins = sorted(sweep)
    fig, ax = new_figure(4.5, 3.2)
    ax.plot(bins, [sweep[b]["val"]["gpt"]["mse"] for b in bins], marker="o", label="validation")
    test = [sweep[b].get("test", {}).get("gpt", {}).get("multi", {}).get("mse", {}).get("mean")
            for b in bins]
    if all(v is not None for v in test):
        ax.plot(bins, test, marker="s", ls="--", label="test (seed 0)")
    ax.axvline(best, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bins B")
    ax.set_ylabel("MSE of the median (7 channels)")
    ax.legend(fontsize=8)
    return save_figure(fig, out / "bin_sweep.png", dpi=90)


__all__ = ["FULL", "PUBLISHED", "Config", "Windows", "gather", "gpt_model", "run", "score",
           "summarise", "summary_markdown", "targets", "test_windows", "train_direct",
           "train_gpt"]
