r"""Study ``nli.snli``: natural language inference on SNLI 1.0 with a GPT classifier.

Each premise/hypothesis pair is one sequence (`scratchformer.data.nli_pairs`), classified from
the hidden state of its last token by `GPTClassifier`. Why a causal GPT with a last-token head
rather than the bidirectional `EncoderClassifier`: the same body is a language model, so it can
be pretrained on unlabelled text by next-token prediction (here Tiny Shakespeare plus the SNLI
training sentences, with the SNLI BPE) and then fine-tuned; the study compares that with the
same model trained from scratch. The last token is the one position that has read both
sentences. Pretraining and fine-tuning both run through the kit's `train`.

Baselines trained on the same pairs (`scratchformer.models.bow`): majority class,
hypothesis-only bag-of-words logistic regression (how far annotation artefacts go), and
bag-of-words logistic regression on premise + hypothesis with word-overlap features.

Every model is scored on the test split: accuracy, macro-F1, the 3×3 confusion matrix, total
parameters and those active per token, training tokens/s, inference latency per example at
batch 1 and 32 and the rise of peak memory while training (`PeakMemory`). The model with the
best dev accuracy is checkpointed (`scratchformer.models.nli`, safetensors) with its tokenizer
for ``scratchformer nli``. A learning curve over training-set sizes is run for the best model
and the pair baseline.

The mirror's training split is PARTIAL (27,874 of 550,152 pairs, see the data MANIFEST), so
every result records which training file (relative to the data root) and how many pairs were
used.

Variants: ``attention`` ("dense" | "block_sparse") and ``ffn`` ("dense" | "moe") choose the
`GPTConfig` attention backend and feed-forward of the classifier's body.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchformer.analysis.memory import PeakMemory
from scratchformer.data.nli_pairs import (
    EOT,
    PAD,
    SPECIAL_TOKENS,
    EncodedPairs,
    PairBatch,
    encode_pairs,
    pad_batch,
    pair_batches,
    train_pair_tokenizer,
)
from scratchformer.data.resolve import cache_dir, mirror_dir
from scratchformer.data.shakespeare import load_tiny_shakespeare
from scratchformer.data.snli import DATASET, LABELS, NLIPair, SNLISplit, load_snli
from scratchformer.experiments.kit import (
    TrainingConfig,
    at_least,
    in_range,
    lm_batches,
    lm_loss,
    positive,
    positive_real,
    torch_threads,
    train,
    train_config,
)
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.models.bow import BowLogisticRegression, MajorityClass
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.models.gpt_classifier import GPTClassifier
from scratchformer.models.nli import TOKENIZER_FILE, predict_proba, save_classifier
from scratchformer.nn.moe import moe_loss
from scratchformer.tokenizers import BPETokenizer
from scratchformer.training import TrainConfig
from scratchformer.training.trainer import resolve_device
from scratchformer.viz.figures import new_figure, save_figure

CHECKPOINT_DIR = "checkpoint"
ATTENTIONS = ("dense", "block_sparse")
FFNS = ("dense", "moe")
INITS = ("scratch", "pretrained")


def parse_variant(spec: str) -> tuple[str, str, str]:
    """``"attention:ffn:init"`` -> its three parts, each checked."""
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) != 3 or parts[0] not in ATTENTIONS or parts[1] not in FFNS \
            or parts[2] not in INITS:
        raise ValueError(f"variant must be 'attention:ffn:init' with attention in {ATTENTIONS}, "
                         f"ffn in {FFNS} and init in {INITS}; got {spec!r}")
    return parts[0], parts[1], parts[2]


def _device(name: str, value: Any) -> None:
    """A torch device string or "auto" (checked now, not when training starts)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    resolve_device(value)


_probability: Rule = in_range(0.0, 1.0, high_inclusive=False)  # a dropout rate, in [0, 1)


@dataclass
class Config(TrainingConfig):
    """Quick profile: 2,000 training pairs, 500 dev/test pairs, a 2-layer width-64 GPT."""

    train_size: int = 2000  # first labelled training pairs used; 0 = all
    eval_size: int = 500  # first labelled dev and test pairs scored; 0 = all
    bpe_vocab: int = 1024  # 256 bytes + merges + 5 special tokens (full: 3000)
    context_len: int = 128  # tokens per pair (premises are cut to fit; none are in SNLI)
    n_layers: int = 2
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
    pretrain_steps: int = 100
    pretrain_batch: int = 16
    pretrain_context: int = 64  # tokens per pretraining window (<= context_len)
    pretrain_lr: float = 2e-3
    shakespeare_chars: int = 100_000  # of Tiny Shakespeare in the pretraining text; 0 = all
    baseline_epochs: int = 8
    curve_sizes: tuple[int, ...] = (500, 0)  # learning curve; 0 = all training pairs
    latency_examples: int = 10  # batch-1 calls timed (and batch-32 calls, up to the test size)
    device: str = "cpu"

    RULES: ClassVar[dict[str, Rule]] = {
        "bpe_vocab": at_least(256 + len(SPECIAL_TOKENS)), "context_len": positive,
        "n_layers": positive, "dropout": _probability, "head_dropout": _probability,
        "moe_experts": positive, "moe_top_k": positive, "epochs": positive_real,
        # a run of one step would be all warm-up (warm-up is max(1, steps // 20) steps)
        "min_steps": at_least(2), "pretrain_steps": at_least(2),
        "lr": positive_real, "finetune_lr": positive_real, "pretrain_lr": positive_real,
        "pretrain_batch": positive, "pretrain_context": positive, "baseline_epochs": positive,
        "latency_examples": positive, "device": _device,
    }

    def check(self) -> None:
        """Variants must parse; MoE must route to at most its experts; pretraining windows
        must fit the context."""
        super().check()
        if not self.variants:
            raise ValueError("variants must name at least one 'attention:ffn:init' classifier")
        for v in self.variants:
            parse_variant(v)
        if self.moe_top_k > self.moe_experts:
            raise ValueError(f"moe_top_k must be <= moe_experts={self.moe_experts}, "
                             f"got {self.moe_top_k}")
        if self.pretrain_context > self.context_len:
            raise ValueError(f"pretrain_context must be <= context_len={self.context_len}, "
                             f"got {self.pretrain_context}")


FULL = {"train_size": 0, "eval_size": 0, "bpe_vocab": 3000, "n_layers": 2, "n_heads": 4,
        "d_model": 128, "epochs": 4.0, "batch_size": 64, "pretrain_steps": 800,
        "pretrain_batch": 32, "shakespeare_chars": 0, "curve_sizes": (1000, 5000, 10000, 0),
        "variants": ("dense:dense:scratch", "dense:dense:pretrained", "block_sparse:dense:scratch",
                     "dense:moe:scratch", "block_sparse:moe:scratch"),
        "latency_examples": 100, "threads": 2}


# ----------------------------------------------------------------------------- models

Variant = tuple[str, str, str]  # (attention, ffn, init)
Pretrained = dict[tuple[str, str], tuple[GPT, dict]]  # (attention, ffn) -> (LM, its record)


def variant_name(attention: str, ffn: str, init: str) -> str:
    """The label of one trained classifier, e.g. ``gpt[dense,dense]/pretrained``."""
    return f"gpt[{attention},{ffn}]/{init}"


def model_config(cfg: Config, vocab_size: int, attention: str, ffn: str) -> GPTConfig:
    """The GPT body shared by every classifier variant and the pretrained language model.

    An MoE FFN gets experts of width ``4·d_model // moe_top_k``, so that a token's active FFN
    parameters match the dense FFN of width ``4·d_model``."""
    moe: dict[str, Any] = {}
    if ffn == "moe":
        moe = {"ffn": "moe", "moe_experts": cfg.moe_experts, "moe_top_k": cfg.moe_top_k,
               "moe_hidden": max(1, 4 * cfg.d_model // cfg.moe_top_k)}
    return GPTConfig(vocab_size=vocab_size, context_len=cfg.context_len, n_layers=cfg.n_layers,
                     n_heads=cfg.n_heads, d_model=cfg.d_model, dropout=cfg.dropout,
                     attention_backend="block_sparse" if attention == "block_sparse" else "sdpa",
                     **moe)


def active_parameters(model: GPTClassifier) -> int:
    """Parameters one token's prediction touches: all but the unused embedding rows and, in a
    mixture of experts, the experts a token is not routed to."""
    cfg = model.config
    unused = (cfg.vocab_size - 1) * cfg.d_model  # one token-embedding row is read
    if cfg.positional == "learned":
        unused += (cfg.context_len - 1) * cfg.d_model
    skipped = model.gpt.num_parameters() - model.gpt.active_parameters()
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
    """The first ``n`` pairs of ``split`` (all when ``n`` is 0)."""
    if n > len(split):
        raise ValueError(f"asked for {n} {split.split} pairs; {split.source} has {len(split)}")
    return split.pairs[:n] if n else split.pairs


def data_file(source: str) -> str:
    """``source`` (a file, or ``archive!member``) relative to the data mirror or cache it was
    read from, so results do not depend on where the data lives; unchanged if under neither."""
    file, bang, member = source.partition("!")
    path = Path(file)
    for root in (mirror_dir(), cache_dir()):
        if root is not None and path.is_relative_to(root):
            return path.relative_to(root).as_posix() + bang + member
    return source


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
        "dataset": DATASET, "file": data_file(summary["source"]), "pairs_used": len(train),
        "labelled_pairs_in_file": len(train_split), "lines_in_file": summary["lines"],
        "dropped_no_gold": summary["dropped_no_gold"], "partial_mirror_train_set": partial,
        "note": ("partial SNLI train set (27,874 of 550,152 official pairs; see the data "
                 "MANIFEST)" if partial else "official SNLI train set"),
        "dev_pairs": len(dev), "test_pairs": len(test),
    }
    return Data(tok, enc(train), enc(dev), enc(test), train, test, dev, train_set)


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


# ----------------------------------------------------------------------------- training


def schedule(cfg: Config, steps: int, lr: float) -> TrainConfig:
    """AdamW for ``steps`` updates peaking at ``lr``: 5% warm-up (at least one step), cosine
    decay to lr/10, β₂ = 0.99, a log record every quarter run (at most every 50 steps)."""
    run = SimpleNamespace(steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=max(1, steps // 20),
                          weight_decay=cfg.weight_decay, beta2=0.99, device=cfg.device)
    return train_config(run, cfg.seed, log_interval=max(1, min(50, steps // 4)), progress=False)


def train_classifier(cfg: Config, model: GPTClassifier, data: EncodedPairs, pad_id: int,
                     lr: float, log_path: Path | None) -> tuple[GPTClassifier, dict]:
    """Fine-tune ``model`` on ``data`` for ``cfg.epochs`` passes (at least ``cfg.min_steps``)."""
    steps = max(cfg.min_steps, math.ceil(cfg.epochs * len(data) / cfg.batch_size))
    moe_layers = model.gpt.moe_layers()

    def loss_fn(m: nn.Module, batch: PairBatch) -> tuple[Tensor, int]:
        """Cross-entropy of the labels, plus the load-balancing terms of an MoE FFN."""
        x, lengths, y, n_tokens = batch
        loss = F.cross_entropy(m(x, lengths), y)
        if moe_layers:
            c = model.config
            loss = loss + moe_loss(moe_layers, c.moe_aux_weight, c.moe_z_weight)
        return loss, n_tokens

    tcfg = schedule(cfg, steps, lr)
    with PeakMemory(resolve_device(tcfg.device)) as mem:
        result = train(model, tcfg, pair_batches(data, cfg.batch_size, steps, pad_id, cfg.seed),
                       loss_fn=loss_fn, log_path=log_path)
    return model, {"steps": steps, "train_s": result.train_s,
                   "tokens_per_s": result.tokens_per_s,
                   "tokens_seen": result.trainer.tokens_seen,
                   "final_loss": result.history[-1]["loss"],
                   "peak_memory_bytes": mem.bytes, "peak_memory_kind": mem.kind}


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
    ctx = cfg.pretrain_context
    if ids.numel() <= ctx + 1:
        raise ValueError(f"pretraining text has {ids.numel()} tokens; need more than "
                         f"pretrain_context + 1 = {ctx + 1}")
    torch.manual_seed(cfg.seed)
    lm = GPT(model_cfg)
    # Windows are drawn from all but the closing end-of-text token (which follows the last
    # pair only); this keeps the windows, and so the results, of the published runs.
    result = train(lm, schedule(cfg, cfg.pretrain_steps, cfg.pretrain_lr),
                   lm_batches(ids[:-1], cfg.pretrain_batch, ctx), loss_fn=lm_loss,
                   log_path=out / "pretrain_log.jsonl")
    return lm, {"steps": cfg.pretrain_steps, "tokens": int(ids.numel()),
                "shakespeare_tokens": shakespeare_tokens,
                "snli_train_tokens": int(ids.numel()) - shakespeare_tokens,
                "tokens_seen": result.trainer.tokens_seen, "train_s": result.train_s,
                "tokens_per_s": result.tokens_per_s,
                "loss_first": result.history[0]["loss"], "loss_last": result.history[-1]["loss"]}


def _train_variant(cfg: Config, data: Data, train_pairs: EncodedPairs, variant: Variant,
                   lms: Pretrained, log_path: Path | None) -> tuple[GPTClassifier, dict]:
    """One classifier of ``variant`` trained on ``train_pairs`` (its LM pretrained once)."""
    attention, ffn, init = variant
    torch.manual_seed(cfg.seed)
    if init == "pretrained":
        model = GPTClassifier.from_language_model(lms[attention, ffn][0], len(LABELS),
                                                  cfg.head_dropout)
    else:
        mcfg = model_config(cfg, data.tokenizer.vocab_size, attention, ffn)
        model = GPTClassifier(mcfg, len(LABELS), cfg.head_dropout)
    lr = cfg.finetune_lr if init == "pretrained" else cfg.lr
    return train_classifier(cfg, model, train_pairs, data.tokenizer.special_tokens[PAD], lr,
                            log_path)


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
        with PeakMemory("cpu") as mem:
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


# ----------------------------------------------------------------------------- the study


@register("nli.snli", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """NLI on SNLI: GPT classifier from scratch vs pretrained, against three baselines."""
    with torch_threads(cfg.threads):
        data = load_data(cfg, out)
        pad = data.tokenizer.special_tokens[PAD]
        results: dict[str, dict] = _baselines(cfg, data, data.train_pairs)
        lms: Pretrained = {}
        models: dict[str, GPTClassifier] = {}
        variants: dict[str, Variant] = {}
        dev_acc: dict[str, float] = {}
        for variant in map(parse_variant, cfg.variants):
            attention, ffn, init = variant
            if init == "pretrained" and (attention, ffn) not in lms:
                mcfg = model_config(cfg, data.tokenizer.vocab_size, attention, ffn)
                lms[attention, ffn] = pretrain_language_model(cfg, data, mcfg, out)
            name = variant_name(*variant)
            tag = name.replace("/", "_").replace("[", "_").replace("]", "").replace(",", "_")
            model, train_info = _train_variant(cfg, data, data.train, variant, lms,
                                               out / f"train_log_{tag}.jsonl")
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
            models[name], variants[name] = model, variant
        best = max(dev_acc, key=lambda k: dev_acc[k])
        ckpt = save_classifier(models[best], data.tokenizer, out / CHECKPOINT_DIR,
                               {"variant": best, "train_set": data.train_set})
        curve = _learning_curve(cfg, data, best, variants[best], lms, results)
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


def _learning_curve(cfg: Config, data: Data, best: str, variant: Variant, lms: Pretrained,
                    results: dict) -> dict:
    """Test accuracy against training pairs for the best variant and the pair baseline.

    The pretrained language model is reused as it is: it read the unlabelled sentences of the
    whole training set, so small sizes here measure labelled data only. The point at the whole
    training set is the main run's (same seed and settings), not trained again."""
    pad = data.tokenizer.special_tokens[PAD]
    sizes = sorted({len(data.train) if s == 0 else min(s, len(data.train))
                    for s in cfg.curve_sizes})
    test_pairs = [(p.premise, p.hypothesis) for p in data.test_pairs]
    curve: dict = {"sizes": sizes, best: [], "pair_bow_lr": []}
    for n in sizes:
        if n == len(data.train):
            curve[best].append(results[best]["accuracy"])
            curve["pair_bow_lr"].append(results["pair_bow_lr"]["accuracy"])
            continue
        model, _ = _train_variant(cfg, data, data.train.head(n), variant, lms, None)
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
