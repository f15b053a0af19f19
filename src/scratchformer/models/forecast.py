r"""Time series as a language: Chronos-style tokens, a GPT over them, and sampled forecasts.

**Tokenizer** (Ansari et al., 2024, "Chronos"). A context $x_{1..C}$ is divided by its mean
absolute value $s = \frac1C\sum|x_t|$ (1 when that is 0), and each scaled value is put in one
of $B$ uniform bins over $[\ell, h]$ (default $[-15, 15]$, width $w = (h - \ell)/B$):
$\mathrm{id}(x) = \mathrm{clip}(\lfloor (x/s - \ell)/w \rfloor, 0, B - 1)$. A token decodes to
its bin centre times $s$, so a value inside the range comes back within $w s / 2$. The future
of a window is scaled by its context's $s$, so the model sees only the past's scale.

**Model**. A `GPT` over the $B$ ids, trained with next-token cross-entropy on windows of
``context + chunk`` values (every position). **Forecasting**
feeds the context's tokens once (prefill), copies the KV cache ``n_samples`` times, and samples
``chunk`` tokens per path with the cache; greedy decoding is the one-path argmax version.
Past ``chunk`` steps it continues as Chronos does: the median of the paths is appended to the
context, which is rescaled, and the next chunk sampled.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import scratchformer
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from scratchformer.validation import check_int, check_real

__all__ = ["DEFAULT_MODEL_DIR", "MeanScaleTokenizer", "SeriesForecast", "TokenForecaster",
           "default_model_dir", "draw", "forecast_series", "load_forecaster", "save_forecaster"]

DEFAULT_MODEL_DIR = "docs/results/timeseries.ett/model"  # relative to the repository root
KIND = "token_gpt"
BOUNDS = {"vocab_size": (2, 65_536), "context_len": (2, 8192), "n_layers": (1, 32),
          "n_heads": (1, 64), "d_model": (2, 2048)}


def default_model_dir() -> Path:
    """The published forecaster of the repository this package was installed from."""
    return Path(scratchformer.__file__).resolve().parents[2] / DEFAULT_MODEL_DIR


@dataclass(frozen=True)
class MeanScaleTokenizer:
    """Mean scaling and ``n_bins`` uniform bins over ``[low, high]`` (see the module doc)."""

    n_bins: int
    low: float = -15.0
    high: float = 15.0

    def __post_init__(self) -> None:
        check_int("n_bins", self.n_bins, 2)
        check_real("low", self.low)
        check_real("high", self.high)
        if not self.low < self.high:
            raise ValueError(f"low must be < high, got [{self.low}, {self.high}]")

    @property
    def width(self) -> float:
        """The width of one bin on the scaled axis."""
        return (self.high - self.low) / self.n_bins

    def centers(self, device: torch.device | None = None) -> Tensor:
        """The bin centres (n_bins,) on the scaled axis."""
        i = torch.arange(self.n_bins, dtype=torch.float32, device=device)
        return self.low + (i + 0.5) * self.width

    @staticmethod
    def scale(context: Tensor) -> Tensor:
        """Mean absolute value of each context ``(..., T) -> (..., 1)``; 1 where it is 0."""
        s = context.abs().mean(-1, keepdim=True)
        return torch.where(s > 0, s, torch.ones_like(s))

    def encode(self, x: Tensor, scale: Tensor) -> Tensor:
        """Token ids (int64, shape of ``x``) of values ``x`` divided by ``scale``."""
        z = (x / scale - self.low) / self.width
        return z.floor().clamp(0, self.n_bins - 1).long()

    def decode(self, ids: Tensor, scale: Tensor) -> Tensor:
        """Values of token ``ids``: their bin centres times ``scale``."""
        return self.centers(ids.device)[ids] * scale

    def to_dict(self) -> dict[str, Any]:
        """The fields, for a saved model's JSON."""
        return dataclasses.asdict(self)


class TokenForecaster(nn.Module):
    """A `GPT` over `MeanScaleTokenizer` ids that forecasts by sampling paths with its KV cache.

    ``context`` is the history length it reads, ``chunk`` the steps it samples per context; the
    GPT needs ``context_len >= context + chunk`` and ``vocab_size == tokenizer.n_bins``.
    """

    def __init__(self, gpt: GPT, tokenizer: MeanScaleTokenizer, context: int, chunk: int
                 ) -> None:
        super().__init__()
        self.gpt, self.tokenizer = gpt, tokenizer
        self.context, self.chunk = check_int("context", context), check_int("chunk", chunk)
        if gpt.config.vocab_size != tokenizer.n_bins:
            raise ValueError(f"GPT vocab_size={gpt.config.vocab_size} must equal "
                             f"n_bins={tokenizer.n_bins}")
        if gpt.config.context_len < context + chunk:
            raise ValueError(f"GPT context_len={gpt.config.context_len} must be >= context + "
                             f"chunk = {context + chunk}")

    def tokens(self, windows: Tensor) -> Tensor:
        """Ids of windows ``(N, T)``, each scaled by its first ``context`` values."""
        scale = self.tokenizer.scale(windows[:, : self.context])
        return self.tokenizer.encode(windows, scale)

    def forward(self, windows: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and next-token cross-entropy of windows ``(N, context + chunk)`` of values,
        over every position. Inside the context the scale holds the mean of values still to
        come (the scaled context averages 1 in absolute value); positions are learned, so the
        model can tell those positions from the forecast ones, and every position still
        teaches it the series' dynamics."""
        ids = self.tokens(windows)
        logits, loss = self.gpt(ids[:, :-1], ids[:, 1:])
        assert loss is not None
        return logits, loss

    @torch.no_grad()
    def sample(self, history: Tensor, horizon: int, n_samples: int = 20, *,
               greedy: bool = False, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None, max_rows: int = 2048) -> Tensor:
        """Forecast paths ``(S, n_samples, horizon)`` for histories ``(S, >= context)``.

        ``greedy`` takes the argmax (one path; ``n_samples`` is then 1). At most ``max_rows``
        paths are decoded at once (memory of the KV caches).
        """
        horizon = check_int("horizon", horizon)
        n = 1 if greedy else check_int("n_samples", n_samples)
        if history.ndim != 2 or history.shape[1] < self.context:
            raise ValueError(f"history must be (series, >= {self.context}), "
                             f"got {tuple(history.shape)}")
        was_training = self.training
        self.eval()
        try:
            per = max(1, check_int("max_rows", max_rows) // n)
            out = [self._paths(history[i:i + per, -self.context:].float(), horizon, n, greedy,
                               temperature, top_k, generator)
                   for i in range(0, history.shape[0], per)]
        finally:
            self.train(was_training)
        return torch.cat(out)

    def _paths(self, ctx: Tensor, horizon: int, n: int, greedy: bool, temperature: float,
               top_k: int | None, generator: torch.Generator | None) -> Tensor:
        """Chunked sampling for one group of histories (see `sample`)."""
        done: list[Tensor] = []
        remaining = horizon
        while remaining > 0:
            steps = min(self.chunk, remaining)
            paths = self._chunk(ctx, steps, n, greedy, temperature, top_k, generator)
            done.append(paths)
            remaining -= steps
            if remaining:
                ctx = torch.cat((ctx, paths.median(1).values), 1)[:, -self.context:]
        return torch.cat(done, -1)

    def _chunk(self, ctx: Tensor, steps: int, n: int, greedy: bool, temperature: float,
               top_k: int | None, generator: torch.Generator | None) -> Tensor:
        """``steps`` values of ``n`` paths per context ``(S, context)``: one prefill, then
        one cached position per step."""
        gpt, tok = self.gpt, self.tokenizer
        scale = tok.scale(ctx)
        cache = gpt.new_kv_cache(self.context + steps)
        hidden = gpt.hidden_states(tok.encode(ctx, scale), cache)
        logits = gpt.logits(hidden[:, -1]).repeat_interleave(n, 0)
        for layer in cache.layers:  # every path continues the same prefix
            assert layer.keys is not None and layer.values is not None
            layer.keys = layer.keys.repeat_interleave(n, 0)
            layer.values = layer.values.repeat_interleave(n, 0)
        ids = []
        for step in range(steps):
            token = draw(logits, temperature=temperature, top_k=top_k, greedy=greedy,
                         generator=generator)
            ids.append(token)
            if step + 1 < steps:
                logits = gpt.logits(gpt.hidden_states(token[:, None], cache)[:, -1])
        values = tok.decode(torch.stack(ids, 1), scale.repeat_interleave(n, 0))
        return values.view(ctx.shape[0], n, steps)

    def config_dict(self) -> dict[str, Any]:
        """What `load_forecaster` needs to rebuild this model."""
        return {"kind": KIND, "gpt": dataclasses.asdict(self.gpt.config),
                "tokenizer": self.tokenizer.to_dict(), "context": self.context,
                "chunk": self.chunk}


def draw(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
         greedy: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """One id per row of ``logits`` (R, V): greedy, or sampled by inverting the CDF.

    Same distribution as `sample_next_token` (``top_k``: the k largest logits, ties kept), whose
    ``torch.multinomial`` draws an exponential variate for every vocabulary entry; one uniform
    per row makes decoding several times faster.
    """
    if greedy or temperature == 0.0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    cdf = torch.softmax(logits, -1).cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=cdf.shape[1] - 1)


@dataclass
class SeriesForecast:
    """A forecast of one series on its original scale: paths and their summaries."""

    history: Tensor  # (T,) the values read
    paths: Tensor  # (n_samples, horizon)
    median: Tensor  # (horizon,)
    low: Tensor  # (horizon,) 10% quantile
    high: Tensor  # (horizon,) 90% quantile


def forecast_series(model: TokenForecaster, values: Tensor, horizon: int, n_samples: int = 20,
                    seed: int = 0) -> SeriesForecast:
    """Forecast the series ``values`` (T >= context): standardised by its own mean and std (as
    the training series were by their train split's), sampled, then mapped back."""
    values = torch.as_tensor(values, dtype=torch.float32).flatten()
    if values.numel() < model.context:
        raise ValueError(f"the series has {values.numel()} values; the model reads the last "
                         f"{model.context}, so at least that many are needed")
    if not torch.isfinite(values).all():
        raise ValueError("the series holds non-finite values")
    mean, std = values.mean(), values.std(unbiased=False)
    std = std if std > 0 else torch.ones_like(std)
    z = ((values - mean) / std)[None]
    gen = torch.Generator().manual_seed(seed)
    paths = model.sample(z, horizon, n_samples, generator=gen)[0] * std + mean
    q = torch.quantile(paths, torch.tensor([0.1, 0.9]), dim=0)
    return SeriesForecast(values, paths, paths.median(0).values, q[0], q[1])


def save_forecaster(model: TokenForecaster, path: str | Path, extra: dict | None = None) -> Path:
    """Weights (safetensors) and config (JSON) of ``model``, loadable by `load_forecaster`."""
    save_checkpoint(path, model=model.gpt, config=model.config_dict(), extra=extra or {})
    return Path(path)


def _bounded(name: str, value: Any, low: int, high: int) -> int:
    """``value`` if it is an int in [low, high]; else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    return value


def _build(config: Any) -> TokenForecaster:
    """An untrained `TokenForecaster` from a stored config, its sizes checked first."""
    if not isinstance(config, dict) or config.get("kind") != KIND:
        raise ValueError(f"config.kind must be {KIND!r}")
    gpt = config.get("gpt")
    names = {f.name for f in dataclasses.fields(GPTConfig)}
    if not isinstance(gpt, dict) or set(gpt) != names:
        raise ValueError("config.gpt must hold every GPTConfig field and no other")
    for name, (low, high) in BOUNDS.items():
        _bounded(f"gpt.{name}", gpt[name], low, high)
    tok = config.get("tokenizer")
    if not isinstance(tok, dict) or set(tok) != {"n_bins", "low", "high"}:
        raise ValueError("config.tokenizer must hold n_bins, low and high")
    context = _bounded("context", config.get("context"), 1, 8192)
    chunk = _bounded("chunk", config.get("chunk"), 1, 8192)
    return TokenForecaster(GPT(GPTConfig(**gpt)), MeanScaleTokenizer(**tok), context, chunk)


def load_forecaster(path: str | Path) -> tuple[TokenForecaster, dict]:
    """The (model, extras) that `save_forecaster` wrote to ``path``, config checked first."""
    path = Path(path)
    meta_file = path / "state.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"no forecaster at {path} (expected state.json and "
                                "model.safetensors); pass --checkpoint, or run: scratchformer "
                                "run timeseries.ett --profile full")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        model = _build(meta.get("config") if isinstance(meta, dict) else None)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad forecaster config: {e}") from None
    try:
        info = load_checkpoint(path, model=model.gpt, restore_rng=False)
    except CheckpointError as e:
        raise CheckpointError("; ".join(line.strip() for line in str(e).splitlines())) from None
    return model.eval(), dict(info.extra)
