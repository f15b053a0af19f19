r"""Studies ``shakespeare.char_vs_bpe`` and ``shakespeare.embedding_pca`` on Tiny Shakespeare.

``shakespeare.char_vs_bpe`` trains the same GPT twice with the same budget — same steps, batch
size, **context length in tokens** (so the same compute per step; the BPE model therefore sees
about twice as many characters per row) and optimiser — once on characters and once on byte-level
BPE tokens learned from the training split only. Losses in nats per *token* are not comparable
across tokenizers, so both are scored in **bits per character** on the whole validation text:

$$\text{bpc} = \frac{\sum_t -\log_2 p(x_t \mid x_{<t})}{\sum_t \#\text{chars}(x_t)},$$

summing over every predicted token and the characters those tokens cover (for the character
model the denominator is the number of predicted characters). The char model's full profile is
nanoGPT's CPU "baby" run (4 layers, 4 heads, width 128, context 64, batch 12, 2000 iterations,
lr 1e-3 cosine to 1e-4, warmup 100, β₂ = 0.99, no dropout, no biases), whose reference is a
validation loss of 1.886 nats/char at 25 ms/iteration; it is estimated here the same way (mean
loss over random validation batches) next to the exact full-text number.

Two studies rather than one: the PCA is an analysis of *a* trained model and is cheap, while
training is not; ``embedding_pca`` reuses the char checkpoint that ``char_vs_bpe`` writes when
it exists (``reuse_checkpoint``) and otherwise trains its own small model, so each runs alone.

``shakespeare.embedding_pca`` runs our SVD-based PCA (`analysis.pca`) on the character model's
token-embedding matrix $E$ (vocab × width): PCA of $E$ is the SVD of the centred
$E - \mathbf{1}\mu^\top$, and the covariance eigenvalues are $\sigma_i^2/(V-1)$.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchformer.analysis.pca import fit_pca
from scratchformer.data.shakespeare import CharTokenizer, load_tiny_shakespeare, train_val_split
from scratchformer.experiments.registry import register
from scratchformer.experiments.threads import torch_threads
from scratchformer.generation import generate
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.tokenizers import BPETokenizer
from scratchformer.training import TrainConfig, Trainer
from scratchformer.viz.figures import new_figure, save_figure

NANOGPT_VAL_LOSS = 1.886  # nats/char, nanoGPT CPU baby run on this machine
NANOGPT_MS_PER_ITER = 25.0
CHECKPOINT = "char_model.pt"


@dataclass
class Config:
    """Quick profile: a 2-layer width-64 GPT, 100 steps on a 200k-character slice."""

    text_chars: int = 200_000  # first characters of the corpus used; 0 = all of it
    bpe_vocab: int = 320  # 256 bytes + merges (full: 512)
    n_layers: int = 2
    n_heads: int = 2
    d_model: int = 64
    context_len: int = 64  # in tokens, for both models
    batch_size: int = 12
    steps: int = 100
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 10
    beta2: float = 0.99
    weight_decay: float = 0.1
    eval_every: int = 50
    eval_batches: int = 20  # random validation batches per estimate (nanoGPT-style)
    val_chars: int = 20_000  # validation characters scored exactly in bits/char; 0 = all
    sample_chars: int = 300  # roughly, per sample
    n_samples: int = 2
    top_k: int = 20
    temperature: float = 0.8
    attention_backend: str = "sdpa"
    threads: int = 1  # torch threads while training; 0 = leave as is (full: all cores)
    device: str = "auto"
    seed: int = 0


FULL = {"text_chars": 0, "bpe_vocab": 512, "n_layers": 4, "n_heads": 4, "d_model": 128,
        "steps": 2000, "warmup_steps": 100, "eval_every": 250, "eval_batches": 200,
        "val_chars": 0, "sample_chars": 600, "n_samples": 3, "threads": 0}


# ----------------------------------------------------------------------------- data


@dataclass
class TokenizedText:
    """A tokenizer and the train/validation ids it gives, with each token's character count."""

    kind: str  # "char" or "bpe"
    encode: Callable[[str], list[int]]
    decode: Callable[[Sequence[int]], str]
    vocab_size: int
    train: Tensor  # (N,) int64
    val: Tensor
    val_chars: Tensor  # (N_val,) characters covered by each validation token
    token_text: list[str]  # printable text of each id


def load_text(cfg: Any) -> tuple[str, str]:
    """The (train, val) split of Tiny Shakespeare, or of its first ``text_chars`` characters."""
    text = load_tiny_shakespeare(progress=False)
    if cfg.text_chars:
        text = text[:cfg.text_chars]
    train, val = train_val_split(text, 0.1)
    if cfg.val_chars:
        val = val[:cfg.val_chars]
    return train, val


def char_data(train: str, val: str) -> TokenizedText:
    """Character-level ids; the character set is that of train + val (as nanoGPT's), so a slice
    whose validation part has a character unseen in training still encodes."""
    tok = CharTokenizer(train + val)
    val_ids = torch.tensor(tok.encode(val), dtype=torch.long)
    return TokenizedText("char", tok.encode, tok.decode, tok.vocab_size,
                         torch.tensor(tok.encode(train), dtype=torch.long), val_ids,
                         torch.ones_like(val_ids), list(tok.vocab))


def bpe_data(train: str, val: str, vocab_size: int) -> TokenizedText:
    """Byte-level BPE ids, the tokenizer trained on ``train`` only (no special tokens)."""
    tok = BPETokenizer.train(train, vocab_size, special_tokens=())
    val_ids = tok.encode_ordinary(val)
    # Each UTF-8 character has exactly one byte that is not a continuation byte (10xxxxxx),
    # so counting those per token splits the characters of the text exactly among its tokens.
    lengths = [sum((byte & 0xC0) != 0x80 for byte in tok.token_bytes(i)) for i in val_ids]
    texts = [tok.token_bytes(i).decode("utf-8", errors="replace")
             for i in range(tok.vocab_size)]
    return TokenizedText("bpe", tok.encode_ordinary, tok.decode, tok.vocab_size,
                         torch.tensor(tok.encode_ordinary(train), dtype=torch.long),
                         torch.tensor(val_ids, dtype=torch.long),
                         torch.tensor(lengths, dtype=torch.long), texts)


def random_batch(ids: Tensor, batch_size: int, context_len: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows of ``ids``: inputs and next-token targets (B, T)."""
    if ids.numel() <= context_len:
        raise ValueError(f"need more than context_len={context_len} tokens, got {ids.numel()}")
    starts = torch.randint(0, ids.numel() - context_len, (batch_size,), generator=generator)
    rows = starts[:, None] + torch.arange(context_len + 1)
    windows = ids[rows]
    return windows[:, :-1], windows[:, 1:]


# ----------------------------------------------------------------------------- scoring


def bits_per_char(total_nll_nats: float, n_chars: int) -> float:
    """Total negative log-likelihood (nats) as bits per character of the text it scores."""
    if isinstance(n_chars, bool) or not isinstance(n_chars, int) or n_chars < 1:
        raise ValueError(f"n_chars must be an int >= 1, got {n_chars!r}")
    if not math.isfinite(total_nll_nats) or total_nll_nats < 0:
        raise ValueError(f"total_nll_nats must be finite and >= 0, got {total_nll_nats!r}")
    return total_nll_nats / math.log(2) / n_chars


@torch.no_grad()
def sequence_nll(model: nn.Module, ids: Tensor, context_len: int,
                 batch_size: int = 64) -> Tensor:
    """NLL (nats) of each token ``ids[1:]`` given the tokens before it in its window, shape (N-1,).

    The text is cut into windows of ``context_len`` predictions that overlap by one token, so
    every token but the first is predicted exactly once (with 0 to context_len-1 tokens before
    it in the window, identically for any tokenizer's ids).
    """
    if not isinstance(ids, Tensor) or ids.ndim != 1 or ids.numel() < 2:
        raise ValueError(f"ids must be a 1-D tensor of >= 2 token ids, got {ids!r:.60}")
    device = next(model.parameters()).device
    n = ids.numel() - 1
    out = torch.empty(n)
    starts = torch.arange(0, n, context_len)
    full = starts[starts + context_len <= n]
    groups = [(full[b:b + batch_size], context_len) for b in range(0, len(full), batch_size)]
    if n % context_len:
        groups.append((starts[-1:], n % context_len))
    for group, length in groups:
        windows = ids[group[:, None] + torch.arange(length + 1)].to(device)
        logits = model(windows[:, :-1])[0].float()
        nll = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="none")
        for r, s in enumerate(group.tolist()):
            out[s:s + length] = nll.view(len(group), length)[r].cpu()
    return out


def text_bits_per_char(model: nn.Module, data: TokenizedText, context_len: int) -> float:
    """Exact bits/char of ``model`` on the whole validation text (first token unscored)."""
    nll = sequence_nll(model, data.val, context_len)
    return bits_per_char(float(nll.double().sum()), int(data.val_chars[1:].sum()))


@torch.no_grad()
def estimate_loss(model: nn.Module, ids: Tensor, n_batches: int, batch_size: int,
                  context_len: int, seed: int) -> float:
    """Mean cross-entropy (nats/token) over ``n_batches`` random batches, as nanoGPT reports."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(n_batches):
        x, y = random_batch(ids, batch_size, context_len, gen)
        losses.append(float(model(x.to(device), y.to(device))[1]))
    return float(np.mean(losses))


# ----------------------------------------------------------------------------- training


def build_model(cfg: Any, vocab_size: int) -> GPT:
    """The study's GPT: nanoGPT's baby shape knobs, no dropout, no biases, tied embeddings."""
    return GPT(GPTConfig(vocab_size=vocab_size, context_len=cfg.context_len,
                         n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_model=cfg.d_model,
                         dropout=0.0, bias=False, attention_backend=cfg.attention_backend))


@dataclass
class LMRun:
    """A trained model, its log and the numbers measured on it."""

    model: GPT
    history: list[dict]
    curve: dict[str, list[float]]  # step and val_loss (nats/token) at each evaluation
    ms_per_iter: float  # median over log windows after the first
    train_s: float  # training wall time, evaluations excluded


def train_lm(cfg: Any, data: TokenizedText, log_path: Path | None = None) -> LMRun:
    """Train a GPT on ``data.train`` with the project `Trainer`; validation loss on a schedule."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.vocab_size)

    def batches(step: int, micro: int, gen: torch.Generator) -> tuple[Tensor, Tensor, int]:
        x, y = random_batch(data.train, cfg.batch_size, cfg.context_len, gen)
        return x, y, y.numel()

    def loss_fn(m: nn.Module, batch: tuple) -> tuple[Tensor, int]:
        x, y, n = batch
        return m(x, y)[1], n

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return {"val_loss": estimate_loss(m, data.val, cfg.eval_batches, cfg.batch_size,
                                          cfg.context_len, cfg.seed + 1)}

    tcfg = TrainConfig(max_steps=cfg.steps, lr=cfg.lr, min_lr=cfg.min_lr,
                       warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
                       betas=(0.9, cfg.beta2), grad_clip=1.0, eval_interval=cfg.eval_every,
                       log_interval=min(10, cfg.eval_every), seed=cfg.seed, device=cfg.device,
                       autocast="off")
    trainer = Trainer(model, tcfg, train_batches=batches, loss_fn=loss_fn, eval_fn=eval_fn,
                      log_path=log_path)
    history = trainer.fit()
    evals = [r for r in history if "val_loss" in r]
    windows = history[1:] if len(history) > 2 else history
    steps = [r["step"] for r in history]
    sizes = np.diff([0, *steps])
    train_s = float(sum(r["ms_per_step"] * k for r, k in zip(history, sizes, strict=True))) / 1e3
    model.eval()
    return LMRun(model, history, {"step": [r["step"] for r in evals],
                                  "val_loss": [r["val_loss"] for r in evals]},
                 float(np.median([r["ms_per_step"] for r in windows])), train_s)


def sample_text(model: GPT, data: TokenizedText, prompt: str, n_chars: int, cfg: Any,
                seed: int) -> str:
    """A sample continuing ``prompt``: temperature ``cfg.temperature``, top-k ``cfg.top_k``."""
    device = next(model.parameters()).device
    ids = torch.tensor([data.encode(prompt)], device=device)
    chars_per_token = float(data.val_chars.float().mean())
    n_new = max(1, round(n_chars / chars_per_token))
    gen = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, ids, n_new, temperature=cfg.temperature,
                   top_k=min(cfg.top_k, data.vocab_size), generator=gen)
    return data.decode(out[0].tolist())


def save_char_checkpoint(run: LMRun, data: TokenizedText, path: Path) -> Path:
    """The char model's weights, config and vocabulary, loadable with ``weights_only=True``."""
    torch.save({"state_dict": run.model.state_dict(),
                "config": dataclasses.asdict(run.model.config),
                "vocab": "".join(data.token_text)}, path)
    return path


def load_char_checkpoint(path: Path) -> tuple[GPT, str]:
    """The (model, vocabulary string) that `save_char_checkpoint` wrote."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.eval(), blob["vocab"]


def _check(cfg: Any) -> None:
    """Fail early on settings that cannot work."""
    positive = ("n_layers", "n_heads", "d_model", "context_len", "batch_size", "steps",
                "eval_every", "eval_batches", "n_samples", "top_k")
    for name in positive:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name in ("text_chars", "val_chars", "sample_chars", "threads"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.bpe_vocab < 257:
        raise ValueError(f"bpe_vocab must be >= 257 (256 bytes + 1 merge), got {cfg.bpe_vocab}")


@register("shakespeare.char_vs_bpe", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """Char vs BPE GPT on Tiny Shakespeare at the same budget, in bits/char; nanoGPT baseline."""
    _check(cfg)
    train, val = load_text(cfg)
    datasets = {"char": char_data(train, val), "bpe": bpe_data(train, val, cfg.bpe_vocab)}
    runs: dict[str, LMRun] = {}
    results: dict[str, dict] = {}
    samples = ["# Samples", "",
               f"Temperature {cfg.temperature}, top-k {cfg.top_k}, prompt a newline; "
               f"{cfg.steps} steps of a {cfg.n_layers}-layer width-{cfg.d_model} GPT.", ""]
    with torch_threads(cfg.threads):
        for kind, data in datasets.items():
            r = train_lm(cfg, data, out / f"train_log_{kind}.jsonl")
            runs[kind] = r
            val_loss = r.curve["val_loss"][-1]  # the trainer always evaluates the last step
            chars_per_token = float(data.val_chars.float().mean())
            results[kind] = {
                "vocab_size": data.vocab_size,
                "parameters": r.model.num_parameters(),
                "train_tokens": data.train.numel(),
                "chars_per_token": chars_per_token,
                "context_chars": cfg.context_len * chars_per_token,
                "val_loss_nats_per_token": val_loss,
                "val_bits_per_char_estimate": val_loss / math.log(2) / chars_per_token,
                "val_bits_per_char": text_bits_per_char(r.model, data, cfg.context_len),
                "ms_per_iter": r.ms_per_iter,
                "train_s": r.train_s,
                "curve": r.curve,
            }
            samples += [f"## {kind} model", ""]
            for i in range(cfg.n_samples):
                text = sample_text(r.model, data, "\n", cfg.sample_chars, cfg, cfg.seed + i)
                samples += ["```text", text.strip("\n"), "```", ""]
    (out / "samples.md").write_text("\n".join(samples), encoding="utf-8")
    save_char_checkpoint(runs["char"], datasets["char"], out / CHECKPOINT)
    _plot_curves(runs, datasets, results, out)
    char = results["char"]
    return {
        "context": f"{cfg.context_len} tokens for both models (same compute per step)",
        "models": results,
        "bpe_minus_char_bits_per_char": (results["bpe"]["val_bits_per_char"]
                                         - char["val_bits_per_char"]),
        "nanogpt": {"val_loss": NANOGPT_VAL_LOSS, "ms_per_iter": NANOGPT_MS_PER_ITER,
                    "our_val_loss": char["val_loss_nats_per_token"],
                    "our_ms_per_iter": char["ms_per_iter"],
                    "speed_ratio": char["ms_per_iter"] / NANOGPT_MS_PER_ITER,
                    "threads": torch.get_num_threads() if not cfg.threads else cfg.threads},
    }


def _plot_curves(runs: dict[str, LMRun], datasets: dict[str, TokenizedText],
                 results: dict[str, dict], out: Path) -> Path:
    """Validation loss vs step in bits/char (left) and in nats/token (right)."""
    fig, (ax, ax_tok) = new_figure(10.0, 3.8, ncols=2)
    for kind, r in runs.items():
        cpt = results[kind]["chars_per_token"]
        bpc = [v / math.log(2) / cpt for v in r.curve["val_loss"]]
        ax.plot(r.curve["step"], bpc, marker="o", ms=3, label=f"{kind} (val, random batches)")
        ax_tok.plot(r.curve["step"], r.curve["val_loss"], marker="o", ms=3, label=f"{kind} val")
        ax_tok.plot([h["step"] for h in r.history], [h["loss"] for h in r.history], lw=0.8,
                    alpha=0.6, label=f"{kind} train (batch)")
    ax.axhline(NANOGPT_VAL_LOSS / math.log(2), color="red", ls="--", lw=1,
               label="nanoGPT baby char run")
    ax.set_xlabel("step")
    ax.set_ylabel("validation bits per character")
    ax.set_title("same steps, batch and token context", fontsize=9)
    ax.legend(fontsize=8)
    ax_tok.set_xlabel("step")
    ax_tok.set_ylabel("loss (nats per token)")
    ax_tok.legend(fontsize=8)
    return save_figure(fig, out / "curves.png")


# ----------------------------------------------------------------------------- embedding PCA


@dataclass
class PCAConfig:
    """Quick profile: reuse char_vs_bpe's char model if saved, else train a small one here."""

    reuse_checkpoint: bool = True  # use results/<char_vs_bpe>/char_model.pt when present
    n_labels: int = 40  # most frequent characters labelled in the scatter
    text_chars: int = 200_000  # for the fallback model and the frequencies
    bpe_vocab: int = 320  # unused here; keeps the fallback's data settings those of Config
    n_layers: int = 2
    n_heads: int = 2
    d_model: int = 64
    context_len: int = 64
    batch_size: int = 12
    steps: int = 150
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 10
    beta2: float = 0.99
    weight_decay: float = 0.1
    eval_every: int = 150
    eval_batches: int = 5
    val_chars: int = 5_000
    attention_backend: str = "sdpa"
    threads: int = 1
    device: str = "auto"
    seed: int = 0


PCA_NOTE = r"""# PCA of the token embedding and the singular values

Let $E \in \mathbb{{R}}^{{V \times d}}$ be the token-embedding matrix ({V} tokens, width {d}) and
$\mu$ its mean row. PCA centres, $E_c = E - \mathbf{{1}}\mu^\top$, and takes the SVD
$E_c = U\Sigma V^\top$: the principal directions are the right singular vectors, the coordinates
of token $i$ are row $i$ of $U\Sigma$, and the covariance $E_c^\top E_c/(V-1)$ has eigenvalues
$\lambda_i = \sigma_i^2/(V-1)$ — here the largest difference between the two computations is
{eig_gap:.1e} (relative). The spectra tracked during training (the GPT arithmetic study) are of
the *uncentred* $E$: its top singular value is {s_raw:.3f} against {s_c:.3f} after centring.
Centring removes exactly the mean: $\lVert E\rVert_F^2 = \lVert E_c\rVert_F^2 + V\lVert\mu\rVert^2$,
i.e. $\sum_i \sigma_i(E)^2 = \sum_i \sigma_i(E_c)^2 + V\lVert\mu\rVert^2$, here
{fro_raw:.4f} = {fro_c:.4f} + {mean_sq:.4f}.

The first two components explain {r2:.1%} of the variance, and {k90} of {d} components explain
90%. Source of the model: {source}.
"""


def char_frequencies(text: str) -> Counter[str]:
    """How often each character occurs in ``text``."""
    return Counter(text)


@register("shakespeare.embedding_pca", PCAConfig)
def run_pca(cfg: PCAConfig, out: Path) -> dict:
    """PCA (our SVD-based one) of the char model's token embedding: scatter, variance curve."""
    if cfg.n_labels < 0:
        raise ValueError(f"n_labels must be >= 0, got {cfg.n_labels}")
    ckpt = out.parent / "shakespeare.char_vs_bpe" / CHECKPOINT
    train, _ = load_text(cfg)
    if cfg.reuse_checkpoint and ckpt.is_file():
        model, vocab = load_char_checkpoint(ckpt)
        source = f"checkpoint {ckpt}"
    else:
        data = char_data(*load_text(cfg))
        with torch_threads(cfg.threads):
            model = train_lm(cfg, data).model
        vocab = "".join(data.token_text)
        source = f"trained here ({cfg.steps} steps, width {cfg.d_model})"
    emb = model.tok_emb.weight.detach().double().cpu()
    pca = fit_pca(emb)
    V, d = emb.shape
    s_raw = torch.linalg.svdvals(emb)
    cov_eig = torch.linalg.eigvalsh(torch.cov(emb.T)).flip(0)[:pca.n_components]
    eig_gap = float(((cov_eig - pca.explained_variance).abs()
                     / pca.explained_variance[0]).max())
    cum = torch.cumsum(pca.explained_variance_ratio, 0)
    k90 = int((cum < 0.9).sum()) + 1
    freq = char_frequencies(train)
    coords = pca.transform(emb)[:, :2].numpy()
    _plot_scatter(coords, vocab, freq, cfg.n_labels, out)
    _plot_variance(pca.explained_variance_ratio.numpy(), s_raw.numpy(),
                   pca.singular_values.numpy(), out)
    metrics = {
        "source": source,
        "vocab_size": V,
        "d_model": d,
        "explained_variance_ratio": pca.explained_variance_ratio.tolist(),
        "top2_ratio": float(cum[1]),
        "components_for_90pct": k90,
        "cov_eigen_vs_svd_max_rel_gap": eig_gap,
        "top_singular_value_uncentred": float(s_raw[0]),
        "top_singular_value_centred": float(pca.singular_values[0]),
        "mean_row_norm_times_sqrt_V": float(pca.mean.norm() * math.sqrt(V)),
        "frobenius_identity_gap": abs(float((s_raw**2).sum() - (pca.singular_values**2).sum()
                                            - V * pca.mean.square().sum())),
    }
    (out / "pca.md").write_text(PCA_NOTE.format(
        V=V, d=d, eig_gap=eig_gap, s_raw=metrics["top_singular_value_uncentred"],
        s_c=metrics["top_singular_value_centred"],
        fro_raw=float((s_raw**2).sum()), fro_c=float((pca.singular_values**2).sum()),
        mean_sq=V * float(pca.mean.square().sum()), r2=metrics["top2_ratio"], k90=k90,
        source=source), encoding="utf-8")
    return metrics


def _char_class(ch: str) -> str:
    if ch in "aeiouAEIOU":
        return "vowel"
    if ch.isalpha():
        return "upper consonant" if ch.isupper() else "lower consonant"
    if ch.isspace():
        return "whitespace"
    return "punctuation/digit"


def _plot_scatter(coords: np.ndarray, vocab: str, freq: Counter[str], n_labels: int,
                  out: Path) -> Path:
    """Tokens on the first two principal components, coloured by kind, frequent ones labelled."""
    fig, ax = new_figure(6.5, 5.5)
    classes = [_char_class(c) for c in vocab]
    for name in sorted(set(classes)):
        idx = [i for i, c in enumerate(classes) if c == name]
        ax.scatter(coords[idx, 0], coords[idx, 1], s=18, label=name)
    frequent = {c for c, _ in freq.most_common(n_labels)}
    for i, ch in enumerate(vocab):
        if ch in frequent:
            ax.annotate(repr(ch)[1:-1], coords[i], fontsize=8, xytext=(2, 2),
                        textcoords="offset points")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"token embeddings, {n_labels} most frequent labelled", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, out / "embedding_pca.png")


def _plot_variance(ratio: np.ndarray, s_raw: np.ndarray, s_centred: np.ndarray,
                   out: Path) -> Path:
    """Explained-variance ratio and its cumulative sum; singular values with/without centring."""
    fig, (ax, ax_s) = new_figure(10.0, 3.6, ncols=2)
    k = np.arange(1, len(ratio) + 1)
    ax.bar(k, ratio, label="per component")
    ax.plot(k, np.cumsum(ratio), color="C1", marker=".", label="cumulative")
    ax.axhline(0.9, color="grey", ls=":", lw=1)
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance ratio")
    ax.legend(fontsize=8)
    ax_s.semilogy(np.arange(1, len(s_raw) + 1), s_raw, marker=".", label="E (uncentred)")
    ax_s.semilogy(k, s_centred, marker=".", label="E - mean (PCA)")
    ax_s.set_xlabel("index")
    ax_s.set_ylabel("singular value")
    ax_s.legend(fontsize=8)
    return save_figure(fig, out / "embedding_variance.png")


__all__ = [
    "NANOGPT_MS_PER_ITER",
    "NANOGPT_VAL_LOSS",
    "Config",
    "LMRun",
    "PCAConfig",
    "TokenizedText",
    "bits_per_char",
    "bpe_data",
    "char_data",
    "estimate_loss",
    "load_char_checkpoint",
    "random_batch",
    "run",
    "run_pca",
    "save_char_checkpoint",
    "sequence_nll",
    "text_bits_per_char",
    "train_lm",
]
