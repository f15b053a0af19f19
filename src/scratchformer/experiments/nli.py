r"""Study ``nli.snli``: natural language inference on SNLI 1.0 with a GPT classifier.

Each premise/hypothesis pair is one sequence (`nli_data`), classified from the hidden state of
its last token by `GPTClassifier`. Why a causal GPT with a last-token head rather than the
bidirectional `EncoderClassifier`: the same body is a language model, so it can be pretrained
on unlabelled text by next-token prediction (here Tiny Shakespeare plus the SNLI training
sentences, with the SNLI BPE) and then fine-tuned; the study compares that with the same model
trained from scratch. The last token is the one position that has read both sentences.

Baselines trained on the same pairs (`nli_baselines`): majority class, hypothesis-only
bag-of-words logistic regression (how far annotation artefacts go), and bag-of-words logistic
regression on premise + hypothesis with word-overlap features.

Every model is scored on the test split: accuracy, macro-F1, the 3×3 confusion matrix, total
parameters and those active per token, training tokens/s, inference latency per example at
batch 1 and 32 and the rise of peak memory while training (resident set on CPU,
``torch.cuda.max_memory_allocated`` on CUDA). The model with the best dev accuracy is
checkpointed (safetensors) with its tokenizer for ``scratchformer nli``. A learning curve
over training-set sizes is run for the best model and the pair baseline.

The mirror's training split is PARTIAL (27,874 of 550,152 pairs, see the data MANIFEST), so
every result records which training file and how many pairs were used.

Variants: ``attention`` ("dense" | "block_sparse") and ``ffn`` ("dense" | "moe") are passed to
`GPTConfig` by `gpt_options`; an option the installed model code does not offer raises.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchformer.data.shakespeare import load_tiny_shakespeare
from scratchformer.data.snli import LABELS, NLIPair, SNLISplit, load_snli
from scratchformer.experiments.nli_baselines import BowLogisticRegression, MajorityClass
from scratchformer.experiments.nli_data import (
    EOT,
    PAD,
    EncodedPairs,
    encode_pair,
    encode_pairs,
    pad_batch,
    train_pair_tokenizer,
)
from scratchformer.experiments.registry import register
from scratchformer.experiments.threads import torch_threads
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.models.gpt_classifier import GPTClassifier
from scratchformer.tokenizers import BPETokenizer
from scratchformer.training import TrainConfig, Trainer
from scratchformer.training.checkpoint import load_checkpoint, save_checkpoint
from scratchformer.viz.figures import new_figure, save_figure

CHECKPOINT_DIR = "checkpoint"
TOKENIZER_FILE = "tokenizer.json"
ATTENTIONS = ("dense", "block_sparse")
FFNS = ("dense", "moe")
INITS = ("scratch", "pretrained")


@dataclass
class Config:
    """Quick profile: 2,000 training pairs, 500 dev/test pairs, a 2-layer width-64 GPT."""

    train_size: int = 2000  # first labelled training pairs used; 0 = all
    eval_size: int = 500  # first labelled dev and test pairs scored; 0 = all
    bpe_vocab: int = 1024  # 256 bytes + merges + 5 special tokens (full: 3000)
    context_len: int = 128  # tokens per pair (premises are cut to fit; none are in SNLI)
    n_layers: int = 2
    n_heads: int = 2
    d_model: int = 64
    dropout: float = 0.0  # in the GPT body (0: CPU dropout masks cost ~20% of a step here)
    head_dropout: float = 0.1  # before the classification head
    # Classifiers trained, each "attention:ffn:init" with attention "dense" | "block_sparse",
    # ffn "dense" | "moe" and init "scratch" | "pretrained" (next-token pretraining first).
    variants: tuple[str, ...] = ("dense:dense:scratch", "dense:dense:pretrained")
    moe_experts: int = 4  # ffn="moe": experts, top_k routed per token, each of width
    moe_top_k: int = 2  # hidden/top_k, so active FFN parameters per token match the dense FFN
    epochs: float = 3.0  # fine-tuning passes over the training pairs
    min_steps: int = 100  # at least this many updates (small learning-curve sets)
    batch_size: int = 32
    lr: float = 1e-3  # from scratch
    finetune_lr: float = 5e-4  # from the pretrained language model
    weight_decay: float = 0.1
    pretrain_steps: int = 100
    pretrain_batch: int = 16
    pretrain_context: int = 64  # tokens per pretraining window (<= context_len)
    pretrain_lr: float = 2e-3
    shakespeare_chars: int = 100_000  # of Tiny Shakespeare in the pretraining text; 0 = all
    baseline_epochs: int = 8
    curve_sizes: tuple[int, ...] = (500, 0)  # learning curve; 0 = all training pairs
    latency_examples: int = 10  # batch-1 calls timed (and batch-32 calls, up to the test size)
    threads: int = 1  # torch threads; 0 = leave as is
    device: str = "cpu"
    seed: int = 0


FULL = {"train_size": 0, "eval_size": 0, "bpe_vocab": 3000, "n_layers": 2, "n_heads": 4,
        "d_model": 128, "epochs": 4.0, "batch_size": 64, "pretrain_steps": 800,
        "pretrain_batch": 32, "shakespeare_chars": 0, "curve_sizes": (1000, 5000, 10000, 0),
        "variants": ("dense:dense:scratch", "dense:dense:pretrained", "block_sparse:dense:scratch",
                     "dense:moe:scratch", "block_sparse:moe:scratch"),
        "latency_examples": 100, "threads": 2}


# ----------------------------------------------------------------------------- variants


class VariantUnavailableError(ValueError):
    """A model variant the installed model code does not offer."""


def gpt_options(attention: str, ffn: str, moe_experts: int = 4, moe_top_k: int = 2,
                hidden: int | None = None) -> dict:
    """`GPTConfig` keyword arguments of the variant (attention, ffn); raises if the installed
    model code does not offer it. An MoE FFN gets experts of width ``hidden // moe_top_k`` so
    that a token's active FFN parameters match the dense FFN of width ``hidden``."""
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    if ffn not in FFNS:
        raise ValueError(f"ffn must be one of {FFNS}, got {ffn!r}")
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    options: dict = {}
    if attention == "block_sparse":
        from scratchformer.nn import attention as attention_module

        if "block_sparse" not in getattr(attention_module, "ATTENTION_BACKENDS", ()):
            raise VariantUnavailableError(
                "attention='block_sparse' is not available: GPTConfig.attention_backend accepts "
                f"{attention_module.ATTENTION_BACKENDS}; it needs a 'block_sparse' backend in "
                "nn/attention.py passed through nn/block.py and models/gpt.py")
        options["attention_backend"] = "block_sparse"
    if ffn == "moe":
        needed = {"ffn", "moe_experts", "moe_top_k", "moe_hidden"}
        if not needed <= fields:
            raise VariantUnavailableError(
                f"ffn='moe' is not available: GPTConfig lacks {sorted(needed - fields)}; it "
                "needs an MoE feed-forward option exposed as GPTConfig(ffn='moe', moe_experts, "
                "moe_top_k, moe_hidden)")
        options.update(ffn="moe", moe_experts=moe_experts, moe_top_k=moe_top_k)
        if hidden is not None:
            options["moe_hidden"] = max(1, hidden // moe_top_k)
    return options


def parse_variant(spec: str) -> tuple[str, str, str]:
    """``"attention:ffn:init"`` -> its three parts, each checked."""
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) != 3 or parts[0] not in ATTENTIONS or parts[1] not in FFNS \
            or parts[2] not in INITS:
        raise ValueError(f"variant must be 'attention:ffn:init' with attention in {ATTENTIONS}, "
                         f"ffn in {FFNS} and init in {INITS}; got {spec!r}")
    return parts[0], parts[1], parts[2]


def variant_name(attention: str, ffn: str, init: str) -> str:
    """The label of one trained classifier, e.g. ``gpt[dense,dense]/pretrained``."""
    return f"gpt[{attention},{ffn}]/{init}"


def active_parameters(model: GPTClassifier) -> int:
    """Parameters one token's prediction touches: all but the unused embedding rows and, in a
    mixture of experts, the experts a token is not routed to."""
    cfg = model.config
    unused = (cfg.vocab_size - 1) * cfg.d_model  # one token-embedding row is read
    if cfg.positional == "learned":
        unused += (cfg.context_len - 1) * cfg.d_model
    active = getattr(model.gpt, "active_parameters", None)
    skipped = model.gpt.num_parameters() - active() if callable(active) else 0
    return model.num_parameters() - unused - skipped


# ----------------------------------------------------------------------------- data


@dataclass
class Data:
    """The tokenizer, the encoded splits and a description of the training set used."""

    tokenizer: BPETokenizer
    train: EncodedPairs
    dev: EncodedPairs
    test: EncodedPairs
    train_pairs: list[NLIPair]
    test_pairs: list[NLIPair]
    dev_pairs: list[NLIPair]
    train_set: dict


def _first(split: SNLISplit, n: int) -> list[NLIPair]:
    if n > len(split):
        raise ValueError(f"asked for {n} {split.split} pairs; {split.source} has {len(split)}")
    return split.pairs[:n] if n else split.pairs


def load_data(cfg: Config, out: Path) -> Data:
    """Load SNLI, train (or reuse) the BPE on the training sentences, encode every split."""
    train_split, dev_split, test_split = (load_snli(s, progress=False)
                                          for s in ("train", "dev", "test"))
    train, dev, test = (_first(train_split, cfg.train_size), _first(dev_split, cfg.eval_size),
                        _first(test_split, cfg.eval_size))
    sentences = sorted({s for p in train for s in (p.premise, p.hypothesis)})
    tok = train_pair_tokenizer(sentences, cfg.bpe_vocab, out / TOKENIZER_FILE)

    def enc(pairs: list[NLIPair]) -> EncodedPairs:
        return encode_pairs(tok, [(p.premise, p.hypothesis) for p in pairs],
                            [p.label_id for p in pairs], cfg.context_len)

    summary = train_split.summary()
    partial = summary["lines"] < 550_152
    train_set = {
        "file": summary["source"], "pairs_used": len(train),
        "labelled_pairs_in_file": len(train_split), "lines_in_file": summary["lines"],
        "dropped_no_gold": summary["dropped_no_gold"], "partial_mirror_train_set": partial,
        "note": ("partial SNLI train set (27,874 of 550,152 official pairs; see the data "
                 "MANIFEST)" if partial else "official SNLI train set"),
        "dev_pairs": len(dev), "test_pairs": len(test),
    }
    return Data(tok, enc(train), enc(dev), enc(test), train, test, dev, train_set)


def _subset(data: EncodedPairs, n: int) -> EncodedPairs:
    if not n or n >= len(data):
        return data
    return EncodedPairs(data.ids[:n], data.labels[:n], 0)


# ----------------------------------------------------------------------------- metrics


def confusion_matrix(pred: Tensor, gold: Tensor, k: int = 3) -> Tensor:
    """(k, k) counts: row = gold label, column = predicted label."""
    return torch.bincount(gold * k + pred, minlength=k * k).view(k, k)


def scores(pred: Tensor, gold: Tensor) -> dict:
    """Accuracy, macro-F1 (mean over classes of per-class F1) and the confusion matrix."""
    cm = confusion_matrix(pred, gold, len(LABELS)).double()
    tp = cm.diag()
    precision = tp / cm.sum(0).clamp(min=1)
    recall = tp / cm.sum(1).clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall /
                     (precision + recall).clamp(min=1e-12), torch.zeros_like(tp))
    return {"accuracy": float(tp.sum() / cm.sum()), "macro_f1": float(f1.mean()),
            "f1_per_class": dict(zip(LABELS, f1.tolist(), strict=True)),
            "confusion": cm.long().tolist()}


class PeakMemory:
    """Rise of peak memory over a block: CUDA allocator peak, or the resident set on CPU
    (``VmHWM`` reset through ``/proc/self/clear_refs`` where allowed, as benchmarks do)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.bytes, self.kind = device, 0, ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
            self.kind = "cuda_max_memory_allocated_rise"
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.kind = "rss_peak_rise"
            except OSError:
                self.kind = "rss_peak_rise (peak not reset: may include earlier peaks)"
            self.before = _rss()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.before
        else:
            self.bytes = max(0, _peak_rss() - self.before)


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _peak_rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ----------------------------------------------------------------------------- GPT training


def length_bucketed_batches(lengths: list[int], batch_size: int, steps: int,
                            seed: int) -> list[list[int]]:
    """``steps`` batches of indices: each epoch is shuffled, cut into pools of 50 batches,
    each pool sorted by length and cut into batches, and the batches shuffled, so rows of a
    batch have similar lengths (little padding) while the order stays random."""
    gen = torch.Generator().manual_seed(seed)
    n, batch_size = len(lengths), min(batch_size, len(lengths))
    out: list[list[int]] = []
    while len(out) < steps:
        order = torch.randperm(n, generator=gen).tolist()
        epoch: list[list[int]] = []
        pool = 50 * batch_size
        for p in range(0, n, pool):
            chunk = sorted(order[p:p + pool], key=lambda i: lengths[i])
            epoch += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
        out += [epoch[i] for i in torch.randperm(len(epoch), generator=gen).tolist()]
    return out[:steps]


def _classify_loader(data: EncodedPairs, batch_size: int, steps: int, pad_id: int, seed: int):
    """A Trainer batch function over a length-bucketed schedule: right-padded ids, lengths,
    labels and the number of real tokens."""
    schedule = length_bucketed_batches([len(r) for r in data.ids], batch_size, steps, seed)

    def batches(step: int, micro: int, gen: torch.Generator) -> tuple:
        idx = schedule[step]
        x, lengths = pad_batch([data.ids[i] for i in idx], pad_id)
        return x, lengths, data.labels[idx], int(lengths.sum())

    return batches


@torch.no_grad()
def predict_proba(model: GPTClassifier, rows: list[list[int]], pad_id: int,
                  batch_size: int = 256) -> Tensor:
    """Class probabilities (N, 3); rows are batched by length to keep padding small."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = torch.empty(len(rows), model.num_classes)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        x, lengths = pad_batch([rows[i] for i in idx], pad_id)
        out[idx] = F.softmax(model(x.to(device), lengths.to(device)).float(), -1).cpu()
    return out


def _median_tokens_per_s(history: list[dict]) -> float:
    rates = [r["tokens_per_s"] for r in history[1:] or history if r.get("tokens_per_s")]
    return float(statistics.median(rates)) if rates else float("nan")


def train_classifier(cfg: Config, model: GPTClassifier, data: EncodedPairs, pad_id: int,
                     lr: float, log_path: Path | None) -> tuple[GPTClassifier, dict]:
    """Fine-tune ``model`` on ``data`` for ``cfg.epochs`` passes (at least ``cfg.min_steps``)."""
    steps = max(cfg.min_steps, math.ceil(cfg.epochs * len(data) / cfg.batch_size))

    moe_layers = getattr(model.gpt, "moe_layers", lambda: [])()

    def loss_fn(m: nn.Module, batch: tuple) -> tuple[Tensor, int]:
        x, lengths, y, n_tokens = batch
        loss = F.cross_entropy(m(x, lengths), y)
        if moe_layers:  # load-balancing terms of a mixture-of-experts FFN
            from scratchformer.models.gpt_moe import moe_loss

            c = model.config
            loss = loss + moe_loss(moe_layers, c.moe_aux_weight, c.moe_z_weight)
        return loss, n_tokens

    tcfg = TrainConfig(max_steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=max(1, steps // 20),
                       weight_decay=cfg.weight_decay, betas=(0.9, 0.99), grad_clip=1.0,
                       log_interval=max(1, min(50, steps // 4)), seed=cfg.seed,
                       device=cfg.device, autocast="off", progress=False)
    loader = _classify_loader(data, cfg.batch_size, steps, pad_id, cfg.seed)
    trainer = Trainer(model, tcfg, train_batches=loader, loss_fn=loss_fn, log_path=log_path)
    device = trainer.device
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        history = trainer.fit()
        wall = time.perf_counter() - start
    model.eval()
    return model, {"steps": steps, "train_s": wall, "tokens_per_s": _median_tokens_per_s(history),
                   "tokens_seen": trainer.tokens_seen, "final_loss": history[-1]["loss"],
                   "peak_memory_bytes": mem.bytes, "peak_memory_kind": mem.kind}


@torch.no_grad()
def latency(model: GPTClassifier, rows: list[list[int]], pad_id: int, n: int) -> dict:
    """Median seconds per example of a forward pass at batch 1 and at batch 32."""
    model.eval()
    device = next(model.parameters()).device

    def timed(batch: list[list[int]]) -> float:
        x, lengths = pad_batch(batch, pad_id)
        x, lengths = x.to(device), lengths.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        model(x, lengths)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t

    timed(rows[:1])  # warm-up
    one = [timed([rows[i % len(rows)]]) for i in range(n)]
    groups = [[rows[(g * 32 + j) % len(rows)] for j in range(32)] for g in range(max(3, n // 10))]
    many = [timed(batch) / 32 for batch in groups]
    return {"batch_1_ms": 1e3 * statistics.median(one),
            "batch_32_ms": 1e3 * statistics.median(many)}


def pretrain_language_model(cfg: Config, data: Data, model_cfg: GPTConfig,
                            out: Path) -> tuple[GPT, dict]:
    """Next-token pretraining on Tiny Shakespeare plus the SNLI training pairs as text."""
    tok = data.tokenizer
    text = load_tiny_shakespeare(progress=False)
    if cfg.shakespeare_chars:
        text = text[:cfg.shakespeare_chars]
    eot = tok.special_tokens[EOT]
    stream = [*tok.encode_ordinary(text), eot]
    shakespeare_tokens = len(stream)
    for row in data.train.ids:
        stream += [*row, eot]
    ids = torch.tensor(stream, dtype=torch.long)
    ctx = min(cfg.pretrain_context, cfg.context_len)
    if ids.numel() <= ctx + 1:
        raise ValueError(f"pretraining text has {ids.numel()} tokens; need more than "
                         f"pretrain_context={ctx}")
    torch.manual_seed(cfg.seed)
    lm = GPT(model_cfg)

    def batches(step: int, micro: int, gen: torch.Generator) -> tuple:
        starts = torch.randint(0, ids.numel() - ctx - 1, (cfg.pretrain_batch,), generator=gen)
        w = ids[starts[:, None] + torch.arange(ctx + 1)]
        return w[:, :-1], w[:, 1:]

    def loss_fn(m: nn.Module, batch: tuple) -> tuple[Tensor, int]:
        x, y = batch
        return m(x, y)[1], y.numel()

    steps = cfg.pretrain_steps
    tcfg = TrainConfig(max_steps=steps, lr=cfg.pretrain_lr, min_lr=cfg.pretrain_lr / 10,
                       warmup_steps=max(1, steps // 20), weight_decay=cfg.weight_decay,
                       betas=(0.9, 0.99), grad_clip=1.0, log_interval=max(1, min(50, steps // 4)),
                       seed=cfg.seed, device=cfg.device, autocast="off", progress=False)
    trainer = Trainer(lm, tcfg, train_batches=batches, loss_fn=loss_fn,
                      log_path=out / "pretrain_log.jsonl")
    start = time.perf_counter()
    history = trainer.fit()
    lm.eval()
    return lm, {"steps": steps, "tokens": int(ids.numel()),
                "shakespeare_tokens": shakespeare_tokens,
                "snli_train_tokens": int(ids.numel()) - shakespeare_tokens,
                "tokens_seen": trainer.tokens_seen, "train_s": time.perf_counter() - start,
                "tokens_per_s": _median_tokens_per_s(history),
                "loss_first": history[0]["loss"], "loss_last": history[-1]["loss"]}


def model_config(cfg: Config, vocab_size: int, attention: str, ffn: str) -> GPTConfig:
    """The GPT body shared by every classifier variant and the pretrained language model."""
    options = {"attention_backend": "sdpa",
               **gpt_options(attention, ffn, cfg.moe_experts, cfg.moe_top_k, 4 * cfg.d_model)}
    return GPTConfig(vocab_size=vocab_size, context_len=cfg.context_len, n_layers=cfg.n_layers,
                     n_heads=cfg.n_heads, d_model=cfg.d_model, dropout=cfg.dropout, **options)


# ----------------------------------------------------------------------------- checkpoint, CLI


def save_classifier(model: GPTClassifier, tok: BPETokenizer, path: Path, extra: dict) -> Path:
    """Weights (safetensors), GPT config and tokenizer, loadable by `load_classifier`."""
    save_checkpoint(path, model=model, config={"gpt": dataclasses.asdict(model.config),
                                               "num_classes": model.num_classes},
                    extra={"labels": list(LABELS), **extra})
    tok.save(path / TOKENIZER_FILE)
    return path


def load_classifier(path: str | Path) -> tuple[GPTClassifier, BPETokenizer, dict]:
    """The (model, tokenizer, extra) that `save_classifier` wrote to ``path``."""
    path = Path(path)
    if not (path / TOKENIZER_FILE).is_file():
        raise FileNotFoundError(f"no NLI checkpoint at {path} (expected {path / TOKENIZER_FILE});"
                                f" run: scratchformer run nli.snli")
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    model = GPTClassifier(GPTConfig(**meta["config"]["gpt"]), meta["config"]["num_classes"])
    info = load_checkpoint(path, model=model, restore_rng=False)
    return model.eval(), BPETokenizer.load(path / TOKENIZER_FILE), info.extra


@torch.no_grad()
def classify(model: GPTClassifier, tok: BPETokenizer, premise: str,
             hypothesis: str) -> dict[str, float]:
    """Probability of each label for one pair (raises if it does not fit the context)."""
    for name, value in (("premise", premise), ("hypothesis", hypothesis)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    ids, _ = encode_pair(tok, premise, hypothesis)
    if len(ids) > model.config.context_len:
        raise ValueError(f"the pair is {len(ids)} tokens long; this model reads at most "
                         f"{model.config.context_len}")
    probs = predict_proba(model, [ids], tok.special_tokens[PAD])[0]
    return dict(zip(LABELS, probs.tolist(), strict=True))


# ----------------------------------------------------------------------------- the study


def _check(cfg: Config) -> None:
    for name in ("n_layers", "n_heads", "d_model", "context_len", "batch_size", "min_steps",
                 "pretrain_steps", "pretrain_batch", "pretrain_context", "baseline_epochs",
                 "latency_examples"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name in ("train_size", "eval_size", "threads", "shakespeare_chars"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if not cfg.epochs > 0:
        raise ValueError(f"epochs must be > 0, got {cfg.epochs}")
    if not cfg.variants:
        raise ValueError("variants must name at least one 'attention:ffn:init' classifier")
    for v in cfg.variants:
        attention, ffn, _ = parse_variant(v)
        gpt_options(attention, ffn, cfg.moe_experts, cfg.moe_top_k)  # fail before training


def _baselines(cfg: Config, data: Data, train_pairs: list[NLIPair]) -> dict[str, dict]:
    """Majority class and the two bag-of-words logistic regressions, scored on test."""
    gold = data.test.labels
    labels = [p.label_id for p in train_pairs]
    test = [(p.premise, p.hypothesis) for p in data.test_pairs]
    out: dict[str, dict] = {}
    maj = MajorityClass().fit(labels)
    out["majority"] = {**scores(maj.predict(len(gold)), gold), "parameters_total": 0,
                       "parameters_active_per_token": 0, "majority_label": LABELS[maj.label]}
    for name, kind in (("hypothesis_only_bow_lr", "hypothesis"), ("pair_bow_lr", "pair")):
        model = BowLogisticRegression(kind, epochs=cfg.baseline_epochs, seed=cfg.seed)
        start = time.perf_counter()
        with PeakMemory(torch.device("cpu")) as mem:
            model.fit([(p.premise, p.hypothesis) for p in train_pairs], labels)
        train_s = time.perf_counter() - start
        t = time.perf_counter()
        model.predict(test[:1])
        one = time.perf_counter() - t
        t = time.perf_counter()
        model.predict(test[:32])
        many = (time.perf_counter() - t) / 32
        out[name] = {**scores(model.predict(test), gold), "features": len(model.vocab),
                     "parameters_total": model.num_parameters(),
                     "parameters_active_per_token": None, "train_s": train_s,
                     "train_pairs_per_s": len(train_pairs) * cfg.baseline_epochs / train_s,
                     "latency": {"batch_1_ms": 1e3 * one, "batch_32_ms": 1e3 * many},
                     "peak_memory_bytes": mem.bytes, "peak_memory_kind": mem.kind}
    return out


def _train_variant(cfg: Config, data: Data, train: EncodedPairs, attention: str, ffn: str,
                   init: str, lm: GPT | None, log_path: Path | None) -> GPTClassifier:
    torch.manual_seed(cfg.seed)
    mcfg = model_config(cfg, data.tokenizer.vocab_size, attention, ffn)
    if init == "pretrained":
        assert lm is not None
        model = GPTClassifier.from_language_model(lm, len(LABELS), cfg.head_dropout)
    else:
        model = GPTClassifier(mcfg, len(LABELS), cfg.head_dropout)
    lr = cfg.finetune_lr if init == "pretrained" else cfg.lr
    return train_classifier(cfg, model, train, data.tokenizer.special_tokens[PAD], lr, log_path)


@register("nli.snli", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """NLI on SNLI: GPT classifier from scratch vs pretrained, against three baselines."""
    _check(cfg)
    with torch_threads(cfg.threads):
        data = load_data(cfg, out)
        pad = data.tokenizer.special_tokens[PAD]
        results: dict[str, dict] = _baselines(cfg, data, data.train_pairs)
        lms: dict[tuple[str, str], tuple[GPT, dict]] = {}
        models: dict[str, GPTClassifier] = {}
        dev_acc: dict[str, float] = {}
        for attention, ffn, init in map(parse_variant, cfg.variants):
            lm = None
            if init == "pretrained":
                if (attention, ffn) not in lms:
                    mcfg = model_config(cfg, data.tokenizer.vocab_size, attention, ffn)
                    lms[attention, ffn] = pretrain_language_model(cfg, data, mcfg, out)
                lm = lms[attention, ffn][0]
            name = variant_name(attention, ffn, init)
            tag = name.replace("/", "_").replace("[", "_").replace("]", "").replace(",", "_")
            model, train_info = _train_variant(cfg, data, data.train, attention, ffn, init,
                                               lm, out / f"train_log_{tag}.jsonl")
            probs = predict_proba(model, data.test.ids, pad)
            dev_acc[name] = scores(predict_proba(model, data.dev.ids, pad).argmax(-1),
                                   data.dev.labels)["accuracy"]
            results[name] = {
                **scores(probs.argmax(-1), data.test.labels), "dev_accuracy": dev_acc[name],
                "attention": attention, "ffn": ffn, "init": init,
                "parameters_total": model.num_parameters(),
                "parameters_active_per_token": active_parameters(model),
                "train": train_info,
                "latency": latency(model, data.test.ids, pad, cfg.latency_examples),
                **({"pretraining": lms[attention, ffn][1]} if init == "pretrained" else {}),
            }
            models[name] = model
        best = max(dev_acc, key=lambda k: dev_acc[k])
        ckpt = save_classifier(models[best], data.tokenizer, out / CHECKPOINT_DIR,
                               {"variant": best, "train_set": data.train_set})
        curve = _learning_curve(cfg, data, best, lms, results)
    hyp = results["hypothesis_only_bow_lr"]["accuracy"]
    summary = {
        "best_variant": best, "best_test_accuracy": results[best]["accuracy"],
        "best_minus_hypothesis_only": results[best]["accuracy"] - hyp,
        "target_accuracy_0.72_met": results[best]["accuracy"] >= 0.72,
        "target_5_points_over_hypothesis_only_met": results[best]["accuracy"] - hyp >= 0.05,
    }
    _plot_confusions(results, out)
    _plot_curve(curve, best, out)
    return {"train_set": data.train_set, "tokenizer": {
                "vocab_size": data.tokenizer.vocab_size, "file": str(out / TOKENIZER_FILE),
                "mean_tokens_per_pair": data.train.tokens() / len(data.train),
                "truncated_pairs": {"train": data.train.truncated, "dev": data.dev.truncated,
                                    "test": data.test.truncated}},
            "labels": list(LABELS), "summary": summary, "models": results,
            "tradeoff": {"quality_name": "test accuracy", "higher_is_better": True,
                         "speed_name": "training tokens/s", "baseline": "gpt[dense,dense]/scratch",
                         "points": [{"variant": n, "speed": r["train"]["tokens_per_s"],
                                     "quality": r["accuracy"]} for n, r in results.items()
                                    if r.get("train", {}).get("tokens_per_s")]},
            "learning_curve": curve, "checkpoint": str(ckpt)}


def _learning_curve(cfg: Config, data: Data, best: str,
                    lms: dict[tuple[str, str], tuple[GPT, dict]], results: dict) -> dict:
    """Test accuracy against training pairs for the best variant and the pair baseline.

    The pretrained language model is reused as it is: it read the unlabelled sentences of the
    whole training set, so small sizes here measure labelled data only. The point at the whole
    training set is the main run's (same seed and settings), not trained again."""
    pad = data.tokenizer.special_tokens[PAD]
    spec = best.split("/")
    attention, ffn = spec[0][4:-1].split(",")
    init = spec[1]
    sizes = sorted({len(data.train) if s == 0 else min(s, len(data.train))
                    for s in cfg.curve_sizes})
    test_pairs = [(p.premise, p.hypothesis) for p in data.test_pairs]
    curve: dict = {"sizes": sizes, best: [], "pair_bow_lr": []}
    for n in sizes:
        if n == len(data.train):
            curve[best].append(results[best]["accuracy"])
            curve["pair_bow_lr"].append(results["pair_bow_lr"]["accuracy"])
            continue
        sub = _subset(data.train, n)
        lm = lms.get((attention, ffn), (None, None))[0]
        model, _ = _train_variant(cfg, data, sub, attention, ffn, init, lm, None)
        pred = predict_proba(model, data.test.ids, pad).argmax(-1)
        curve[best].append(scores(pred, data.test.labels)["accuracy"])
        bow = BowLogisticRegression("pair", epochs=cfg.baseline_epochs, seed=cfg.seed).fit(
            [(p.premise, p.hypothesis) for p in data.train_pairs[:n]],
            [p.label_id for p in data.train_pairs[:n]])
        curve["pair_bow_lr"].append(scores(bow.predict(test_pairs),
                                           data.test.labels)["accuracy"])
    return curve


def _plot_confusions(results: dict[str, dict], out: Path) -> Path:
    """One row-normalised confusion matrix per model, with the counts written in the cells."""
    names = list(results)
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = new_figure(3.2 * ncols, 3.4 * nrows, ncols=ncols, nrows=nrows)
    axes = np.atleast_1d(axes).ravel()
    short = [lab[:4] for lab in LABELS]
    for ax in axes[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes, names, strict=False):
        cm = np.array(results[name]["confusion"], dtype=float)
        share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for i, j in itertools.product(range(3), range(3)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(3), short)
        ax.set_yticks(range(3), short)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(f"{name}\nacc {results[name]['accuracy']:.3f}", fontsize=8)
    return save_figure(fig, out / "confusion.png")


def _plot_curve(curve: dict, best: str, out: Path) -> Path:
    """Test accuracy against the number of training pairs (log scale)."""
    fig, ax = new_figure(5.0, 3.6)
    for key in (best, "pair_bow_lr"):
        ax.plot(curve["sizes"], curve[key], marker="o", label=key)
    ax.set_xscale("log")
    ax.set_xlabel("training pairs")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    return save_figure(fig, out / "learning_curve.png")
