r"""Studies ``nli.snli`` (natural language inference on SNLI 1.0, transformers against
baselines) and ``nli.pretraining`` (the same with and without masked-word pretraining).

Transformers, each trained from scratch on the same pairs (no pretrained vectors):

* ``cross_attention`` (`scratchformer.models.cross_attention`): both sentences encoded apart
  by shared bidirectional blocks, each word softly aligned with the other sentence, the aligned
  pairs compared and pooled. The alignment is the step a small training set cannot be relied on
  to discover, so the model has it built in;
* ``pair_encoder`` (`scratchformer.models.nli_encoder`): a BERT-style encoder over
  ``[CLS] premise [SEP] hypothesis [SEP]`` with segment embeddings and a pooled head;
* ``gpt[attention,ffn]/init`` (`GPTClassifier`): one BPE sequence per pair read by a causal GPT,
  classified from its last token, from scratch or fine-tuned from a language model pretrained
  on Tiny Shakespeare plus the SNLI training sentences (kept for comparison; one seed).

Variants of the word-level models add ``+swap`` (training set augmented with every
contradiction pair with its sentences exchanged, as contradiction is symmetric: an ablation at
the same number of updates), ``+moe`` (a mixture-of-experts FFN at equal active parameters) or
``+mlm`` (embedding and encoder first pretrained by masked-word prediction on the unlabelled
training pairs, `scratchformer.models.mlm`; one pretraining per architecture, shared by the
fine-tuning seeds).
Block-sparse attention is not among them: SNLI sentences are shorter than one 64-token block,
so its layout is dense, and its kernel takes no key-padding mask.

Baselines on the same pairs (`scratchformer.models.bow`): majority class, hypothesis-only
bag-of-words logistic regression (how far annotation artefacts go), bag-of-words logistic
regression on premise + hypothesis with overlap features, and the same plus premise-word ×
hypothesis-word cross features (Bowman et al., 2015).

Training practice: every word-level model and every trained baseline runs with ``seeds`` seeds
(mean ± sample std reported); the word-level models are evaluated on dev during training and
keep their best dev checkpoint. The variant to ship and to run the learning curve is chosen on
mean dev accuracy, as is the baseline of the curve; test is only ever reported. The seeds of the
chosen variant are also ensembled (averaged probabilities) as a row of their own.

Every model is scored on the test split: accuracy, macro-F1, the 3×3 confusion matrix (of the
first seed), total parameters and those active per token, training tokens/s, inference latency
per example at batch 1 and 32 and the rise of peak memory while training (`PeakMemory`). The
chosen variant's best-dev seed is saved small (float16 safetensors + JSON config + vocabulary;
`scratchformer.models.nli`) for ``scratchformer nli``. A learning curve over training-set
sizes is run for the chosen transformer and baseline (first seed).

The mirror's training split is PARTIAL (27,874 of 550,152 pairs, see the data MANIFEST), so
every result records which training file (relative to the data root) and how many pairs were
used.
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    WordPairBatch,
    WordPairs,
    WordVocab,
    encode_pairs,
    encode_word_pairs,
    pad_batch,
    pad_rows,
    pair_batches,
    train_pair_tokenizer,
    word_pair_batches,
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
    mean_std,
    positive,
    positive_real,
    torch_threads,
    train,
    train_config,
)
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.models.bow import BowLogisticRegression, MajorityClass
from scratchformer.models.cross_attention import CrossAttentionConfig, CrossAttentionNLI
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.models.gpt_classifier import GPTClassifier
from scratchformer.models.mlm import MaskedWordModel, mask_words
from scratchformer.models.nli import (
    load_classifier,
    predict_proba,
    predict_word_pairs,
    save_classifier,
)
from scratchformer.models.nli_encoder import PairEncoderConfig, PairEncoderNLI
from scratchformer.nn.moe import moe_loss
from scratchformer.tokenizers import BPETokenizer
from scratchformer.training import TrainConfig
from scratchformer.training.trainer import Trainer, resolve_device
from scratchformer.viz.figures import new_figure, save_figure

MODEL_DIR = "model"
BPE_FILE = "bpe_tokenizer.json"
ATTENTIONS = ("dense", "block_sparse")
FFNS = ("dense", "moe")
INITS = ("scratch", "pretrained")
WORD_ARCHS = ("cross_attention", "pair_encoder")
WORD_OPTIONS = ("swap", "moe", "mlm")
BASELINES = ("hypothesis_only_bow_lr", "pair_bow_lr", "word_pair_lr")
BASELINE_KINDS = {"hypothesis_only_bow_lr": "hypothesis", "pair_bow_lr": "pair",
                  "word_pair_lr": "word_pair"}
EXAMPLE_PAIR = ("A man is cooking food.", "The kitchen is occupied.")


def parse_variant(spec: str) -> tuple[str, str, str]:
    """``"attention:ffn:init"`` -> its three parts, each checked."""
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) != 3 or parts[0] not in ATTENTIONS or parts[1] not in FFNS \
            or parts[2] not in INITS:
        raise ValueError(f"variant must be 'attention:ffn:init' with attention in {ATTENTIONS}, "
                         f"ffn in {FFNS} and init in {INITS}; got {spec!r}")
    return parts[0], parts[1], parts[2]


def parse_word_variant(spec: str) -> tuple[str, frozenset[str]]:
    """``"arch[+option...]"`` -> (arch, options), e.g. ``"cross_attention+swap"``."""
    parts = spec.split("+") if isinstance(spec, str) else []
    if not parts or parts[0] not in WORD_ARCHS or not set(parts[1:]) <= set(WORD_OPTIONS) \
            or len(set(parts[1:])) != len(parts) - 1:
        raise ValueError(f"word variant must be 'arch[+option...]' with arch in {WORD_ARCHS} "
                         f"and options from {WORD_OPTIONS}; got {spec!r}")
    return parts[0], frozenset(parts[1:])


def _device(name: str, value: Any) -> None:
    """A torch device string or "auto" (checked now, not when training starts)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    resolve_device(value)


_probability: Rule = in_range(0.0, 1.0, high_inclusive=False)  # a dropout rate, in [0, 1)


@dataclass
class Config(TrainingConfig):
    """Quick profile: 2,000 training pairs, 500 dev/test pairs, small models, two seeds."""

    train_size: int = 2000  # first labelled training pairs used; 0 = all
    eval_size: int = 500  # first labelled dev and test pairs scored; 0 = all
    seeds: int = 2  # seeds per word-level model and trained baseline: seed, seed + 1, ...
    moe_seeds: int = 1  # seeds of the "+moe" comparison rows (the first ones of the list)
    # Word-level transformers, each "arch[+option...]" with arch "cross_attention" |
    # "pair_encoder" and options "swap" (contradictions also with the sentences exchanged) |
    # "moe" (mixture-of-experts FFN) | "mlm" (masked-word pretraining first).
    word_variants: tuple[str, ...] = ("cross_attention", "cross_attention+swap",
                                      "pair_encoder")
    word_d_model: int = 64
    word_heads: int = 4
    word_hidden: int = 0  # FFN width of the word models' blocks; 0 = 4·word_d_model
    cross_layers: int = 1  # encoder blocks of the cross-attention model
    encoder_layers: int = 2  # blocks of the BERT-style pair encoder
    word_dropout: float = 0.1  # embeddings and classifier layers
    block_dropout: float = 0.0  # inside the blocks (0: CPU dropout masks cost ~5% of a step)
    match_feature: bool = True  # exact-match embedding ("this word is in the other sentence")
    word_epochs: float = 3.0  # passes over the (unaugmented) training pairs
    word_batch: int = 64
    word_lr: float = 2e-3
    label_smoothing: float = 0.1
    mlm_epochs: float = 2.0  # "+mlm": masked-word pretraining passes over the training pairs
    mlm_rate: float = 0.15  # words chosen for prediction (80% [UNK], 10% random, 10% kept)
    mlm_lr: float = 2e-3
    ship: bool = True  # save the chosen variant under out/model for `scratchformer nli`
    evals_per_epoch: int = 1  # dev evaluations per epoch (the best one is kept)
    patience: int = 0  # stop after this many evaluations without a better dev score; 0 = never
    min_word_count: int = 1  # training-split occurrences for a word to get its own row
    oov_buckets: int = 100  # hashed rows for words outside the vocabulary
    max_words: int = 64  # words per sentence (longer ones are cut; none are in SNLI)
    ship_half: bool = True  # store the shipped model's weights as float16
    bpe_vocab: int = 1024  # GPT rows: 256 bytes + merges + 5 special tokens (full: 3000)
    context_len: int = 128  # GPT rows: tokens per pair (premises are cut to fit)
    n_layers: int = 2
    dropout: float = 0.0  # in the GPT body (0: CPU dropout masks cost ~20% of a step here)
    head_dropout: float = 0.1  # before the GPT classification head
    # GPT classifiers, each "attention:ffn:init" with attention "dense" | "block_sparse",
    # ffn "dense" | "moe" and init "scratch" | "pretrained" (next-token pretraining first).
    variants: tuple[str, ...] = ("dense:dense:scratch",)
    moe_experts: int = 4  # ffn="moe": experts, top_k routed per token, each of width
    moe_top_k: int = 2  # hidden/top_k, so active FFN parameters per token match the dense FFN
    epochs: float = 3.0  # GPT fine-tuning passes over the training pairs
    min_steps: int = 100  # at least this many updates (small learning-curve sets)
    batch_size: int = 32
    lr: float = 1e-3  # GPT from scratch
    finetune_lr: float = 5e-4  # GPT from the pretrained language model
    pretrain_steps: int = 100
    pretrain_batch: int = 16
    pretrain_context: int = 64  # tokens per pretraining window (<= context_len)
    pretrain_lr: float = 2e-3
    shakespeare_chars: int = 100_000  # of Tiny Shakespeare in the pretraining text; 0 = all
    baseline_epochs: int = 8
    curve_sizes: tuple[int, ...] = (500, 0)  # learning curve; 0 = all training pairs
    curve_variants: tuple[str, ...] = ()  # word variants on the curve besides the chosen one
    latency_examples: int = 10  # batch-1 calls timed (and batch-32 calls, up to the test size)
    device: str = "cpu"

    RULES: ClassVar[dict[str, Rule]] = {
        "seeds": positive, "moe_seeds": positive, "word_d_model": positive, "word_heads": positive,
        "cross_layers": positive, "encoder_layers": positive, "word_dropout": _probability,
        "block_dropout": _probability, "word_epochs": positive_real, "word_batch": positive,
        "word_lr": positive_real, "label_smoothing": _probability,
        "mlm_epochs": positive_real, "mlm_rate": _probability,
        "mlm_lr": positive_real,
        "evals_per_epoch": positive, "min_word_count": positive, "max_words": positive,
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
        must fit the context; the word model's width must split into its heads."""
        super().check()
        if not self.variants and not self.word_variants:
            raise ValueError("variants and word_variants name no transformer to train")
        for v in self.variants:
            parse_variant(v)
        for v in self.word_variants:
            if "mlm" in parse_word_variant(v)[1] and self.mlm_rate == 0:
                raise ValueError(f"word variant {v!r} needs mlm_rate > 0")
        for v in self.curve_variants:
            if v not in self.word_variants:
                raise ValueError(f"curve variant {v!r} is not among word_variants "
                                 f"{self.word_variants}")
        if self.moe_top_k > self.moe_experts:
            raise ValueError(f"moe_top_k must be <= moe_experts={self.moe_experts}, "
                             f"got {self.moe_top_k}")
        if self.pretrain_context > self.context_len:
            raise ValueError(f"pretrain_context must be <= context_len={self.context_len}, "
                             f"got {self.pretrain_context}")
        if self.word_d_model % self.word_heads:
            raise ValueError(f"word_d_model={self.word_d_model} must be divisible by "
                             f"word_heads={self.word_heads}")

    def seed_list(self, variant: str | None = None) -> list[int]:
        """The seeds a model runs with (a "+moe" word variant: the first ``moe_seeds``)."""
        n = self.seeds
        if variant is not None and "moe" in parse_word_variant(variant)[1]:
            n = min(n, self.moe_seeds)
        return [self.seed + i for i in range(n)]


FULL = {"train_size": 0, "eval_size": 0, "seeds": 3, "word_epochs": 4.0,
        "word_variants": ("cross_attention", "cross_attention+swap", "pair_encoder",
                          "cross_attention+moe"),
        "bpe_vocab": 3000, "n_layers": 2, "n_heads": 4, "d_model": 128, "epochs": 4.0,
        "batch_size": 64, "pretrain_steps": 800, "pretrain_batch": 32, "shakespeare_chars": 0,
        "curve_sizes": (1000, 5000, 10000, 0),
        "variants": ("dense:dense:scratch", "dense:dense:pretrained"),
        "latency_examples": 100, "threads": 1}


# ----------------------------------------------------------------------------- GPT models

Variant = tuple[str, str, str]  # (attention, ffn, init)
Pretrained = dict[tuple[str, str], tuple[GPT, dict]]  # (attention, ffn) -> (LM, its record)


def variant_name(attention: str, ffn: str, init: str) -> str:
    """The label of one GPT classifier, e.g. ``gpt[dense,dense]/pretrained``."""
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


# ----------------------------------------------------------------------------- word models

WordModel = CrossAttentionNLI | PairEncoderNLI


def word_model(cfg: Config, arch: str, vocab_size: int, moe: bool) -> WordModel:
    """A fresh word-level model of ``arch`` with the study's sizes."""
    common: dict[str, Any] = dict(
        vocab_size=vocab_size, d_model=cfg.word_d_model, n_heads=cfg.word_heads,
        d_hidden=cfg.word_hidden, max_len=cfg.max_words, dropout=cfg.word_dropout,
        block_dropout=cfg.block_dropout, match_feature=cfg.match_feature,
        ffn="moe" if moe else "dense", moe_experts=cfg.moe_experts, moe_top_k=cfg.moe_top_k,
        num_classes=len(LABELS))
    if arch == "cross_attention":
        return CrossAttentionNLI(CrossAttentionConfig(n_layers=cfg.cross_layers, **common))
    return PairEncoderNLI(PairEncoderConfig(n_layers=cfg.encoder_layers, **common))


# ----------------------------------------------------------------------------- data


@dataclass
class Data:
    """Both tokenizers, the encoded splits and a description of the training set used."""

    vocab: WordVocab
    words_train: WordPairs
    words_dev: WordPairs
    words_test: WordPairs
    train_pairs: list[NLIPair]
    dev_pairs: list[NLIPair]
    test_pairs: list[NLIPair]
    train_set: dict
    tokenizer: BPETokenizer | None = None  # GPT rows only
    train: EncodedPairs | None = None
    dev: EncodedPairs | None = None
    test: EncodedPairs | None = None
    # "+mlm" variants: (arch, moe) -> pretrained embedding/encoder weights and their record
    pretrained: dict[tuple[str, bool], tuple[dict[str, Tensor], dict]] = field(
        default_factory=dict)

    def gpt(self) -> tuple[BPETokenizer, EncodedPairs, EncodedPairs, EncodedPairs]:
        """The BPE tokenizer and splits (present when GPT variants are trained)."""
        assert self.tokenizer is not None and self.train is not None
        assert self.dev is not None and self.test is not None
        return self.tokenizer, self.train, self.dev, self.test


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
    """Load SNLI, build the word vocabulary (and the BPE for GPT rows) on the training
    sentences only, encode every split."""
    train_split, dev_split, test_split = (load_snli(s, progress=False)
                                          for s in ("train", "dev", "test"))
    train, dev, test = (_first(train_split, cfg.train_size), _first(dev_split, cfg.eval_size),
                        _first(test_split, cfg.eval_size))
    sentences = sorted({s for p in train for s in (p.premise, p.hypothesis)})
    vocab = WordVocab.build([s for p in train for s in (p.premise, p.hypothesis)],
                            cfg.min_word_count, oov_buckets=cfg.oov_buckets)

    def words(pairs: list[NLIPair]) -> WordPairs:
        return encode_word_pairs(vocab, [(p.premise, p.hypothesis) for p in pairs],
                                 [p.label_id for p in pairs], cfg.max_words)

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
    data = Data(vocab, words(train), words(dev), words(test), train, dev, test, train_set)
    if cfg.variants:
        tok = train_pair_tokenizer(sentences, cfg.bpe_vocab, out / BPE_FILE)

        def enc(pairs: list[NLIPair]) -> EncodedPairs:
            return encode_pairs(tok, [(p.premise, p.hypothesis) for p in pairs],
                                [p.label_id for p in pairs], cfg.context_len)

        data.tokenizer, data.train, data.dev, data.test = tok, enc(train), enc(dev), enc(test)
    return data


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


def accuracy(probs: Tensor, gold: Tensor) -> float:
    """Share of rows whose most probable class is the gold one."""
    return float((probs.argmax(-1) == gold).double().mean())


@torch.no_grad()
def latency(run: Callable[[list[int]], Any], n_rows: int, n: int) -> dict:
    """Median seconds per example of ``run(row indices)`` (one forward pass) at batch 1 and
    at batch 32."""

    def timed(batch: list[int]) -> float:
        t = time.perf_counter()
        run(batch)
        return time.perf_counter() - t

    timed([0])  # warm-up
    one = [timed([i % n_rows]) for i in range(n)]
    groups = [[(g * 32 + j) % n_rows for j in range(32)] for g in range(max(3, n // 10))]
    many = [timed(batch) / 32 for batch in groups]
    return {"batch_1_ms": 1e3 * statistics.median(one),
            "batch_32_ms": 1e3 * statistics.median(many)}


def gpt_latency(model: GPTClassifier, rows: list[list[int]], pad_id: int, n: int) -> dict:
    """`latency` of the GPT classifier on BPE-encoded pairs."""
    model.eval()
    device = next(model.parameters()).device

    def run(idx: list[int]) -> None:
        x, lengths = pad_batch([rows[i] for i in idx], pad_id)
        model(x.to(device), lengths.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return latency(run, len(rows), n)


def word_latency(model: WordModel, data: WordPairs, n: int) -> dict:
    """`latency` of a word-level model on encoded pairs."""
    model.eval()
    device = next(model.parameters()).device

    def run(idx: list[int]) -> None:
        model(pad_rows([data.premises[i] for i in idx]).to(device),
              pad_rows([data.hypotheses[i] for i in idx]).to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return latency(run, len(data), n)


def summarise(runs: list[dict]) -> dict:
    """A row over seeds: mean ± std of test accuracy, macro-F1 and dev accuracy, the
    confusion matrix of the first seed, and every seed's figures under ``per_seed``."""
    row: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    for key in ("accuracy", "macro_f1", "dev_accuracy"):
        stats = mean_std([r[key] for r in runs])
        row[key], row[f"{key}_std"], row[f"{key}_seeds"] = (stats["mean"], stats["std"],
                                                             stats["values"])
    row["confusion"] = runs[0]["confusion"]
    row["f1_per_class"] = runs[0]["f1_per_class"]
    row["per_seed"] = runs
    return row


# ----------------------------------------------------------------------------- training


def schedule(cfg: Config, steps: int, lr: float, seed: int | None = None,
             eval_every: int = 0) -> TrainConfig:
    """AdamW for ``steps`` updates peaking at ``lr``: 5% warm-up (at least one step), cosine
    decay to lr/10, β₂ = 0.99, a log record every quarter run (at most every 50 steps)."""
    run = SimpleNamespace(steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=max(1, steps // 20),
                          weight_decay=cfg.weight_decay, beta2=0.99, device=cfg.device,
                          eval_every=eval_every)
    return train_config(run, cfg.seed if seed is None else seed,
                        log_interval=max(1, min(50, steps // 4)), progress=False)


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


class BestOnDev:
    """An ``on_eval`` hook keeping the weights of the best dev accuracy so far; with
    ``patience`` > 0 it stops training after that many evaluations without a better one."""

    def __init__(self, patience: int = 0) -> None:
        self.patience = patience
        self.accuracy = -1.0
        self.step = 0
        self.state: dict[str, Tensor] | None = None
        self.curve: list[tuple[int, float]] = []
        self._stale = 0

    def __call__(self, trainer: Trainer, step: int, metrics: dict) -> None:
        acc = metrics["dev_accuracy"]
        self.curve.append((step, acc))
        if acc > self.accuracy:
            self.accuracy, self.step, self._stale = acc, step, 0
            self.state = copy.deepcopy(trainer.model.state_dict())
        else:
            self._stale += 1
            if self.patience and self._stale >= self.patience:
                trainer.should_stop = True


PRETRAINED_PARTS = ("embed.", "encoder.", "norm.")  # what masked-word pretraining hands on


def pretrain_masked_words(cfg: Config, arch: str, moe: bool, vocab_size: int, data: WordPairs,
                          log_path: Path | None) -> tuple[dict[str, Tensor], dict]:
    """Masked-word pretraining (`MaskedWordModel`) of a fresh ``arch`` model on the pairs of
    ``data`` (their labels unread) for ``mlm_epochs`` passes; returns the embedding, encoder
    and final-norm weights and a record with the masked-word loss and accuracy on ``data``."""
    torch.manual_seed(cfg.seed)
    model = word_model(cfg, arch, vocab_size, moe)
    mlm = MaskedWordModel(model)
    steps = max(cfg.min_steps, math.ceil(cfg.mlm_epochs * len(data) / cfg.word_batch))
    pairs = word_pair_batches(data, cfg.word_batch, steps, cfg.seed)
    moe_layers = model.moe_layers()

    def batches(step: int, micro: int, gen: torch.Generator) -> tuple:
        """The scheduled pairs, corrupted, and the chosen words (drawn afresh every step)."""
        p, h, _, n_tokens = pairs(step, micro, gen)
        (p_in, p_gold), (h_in, h_gold) = (mask_words(t, vocab_size, cfg.mlm_rate, gen)
                                          for t in (p, h))
        return p_in, h_in, (p_gold, h_gold), n_tokens

    def loss_fn(m: nn.Module, batch: Any) -> tuple[Tensor, int]:
        """Mean cross-entropy of the chosen words (plus an MoE FFN's balancing terms)."""
        p_in, h_in, gold, n_tokens = batch
        loss, _ = m(p_in, h_in, gold)
        if moe_layers:
            loss = loss + moe_loss(moe_layers, 0.01, 0.0)
        return loss, n_tokens

    tcfg = schedule(cfg, steps, cfg.mlm_lr)
    result = train(mlm, tcfg, batches, loss_fn=loss_fn, log_path=log_path)
    mlm.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    correct = total = 0
    with torch.no_grad():
        for start in range(0, min(len(data), 4096), 256):
            idx = range(start, min(start + 256, len(data)))
            p = pad_rows([data.premises[i] for i in idx])
            h = pad_rows([data.hypotheses[i] for i in idx])
            (p_in, p_gold), (h_in, h_gold) = (mask_words(t, vocab_size, cfg.mlm_rate, gen)
                                              for t in (p, h))
            feats, gold = mlm.states(p_in, h_in, (p_gold, h_gold))
            correct += int((mlm.logits(feats).argmax(-1) == gold).sum())
            total += int(gold.numel())
    state = {k: v.detach().clone() for k, v in model.state_dict().items()
             if k.startswith(PRETRAINED_PARTS)}
    return state, {"steps": steps, "train_s": result.train_s,
                   "tokens_per_s": result.tokens_per_s,
                   "final_loss": result.history[-1]["loss"],
                   "masked_word_accuracy_train": correct / max(total, 1),
                   "head_parameters": sum(p.numel() for n, p in mlm.named_parameters()
                                          if not n.startswith("model."))}


def pretrained_weights(cfg: Config, data: Data, variant: str, out: Path | None
                       ) -> tuple[dict[str, Tensor], dict] | None:
    """The masked-word pretraining a "+mlm" ``variant`` starts from (run once per
    architecture on all the training pairs, then reused); None for other variants."""
    arch, options = parse_word_variant(variant)
    if "mlm" not in options:
        return None
    key = (arch, "moe" in options)
    if key not in data.pretrained:
        log = None if out is None else out / f"pretrain_log_mlm_{arch}{'_moe' * key[1]}.jsonl"
        data.pretrained[key] = pretrain_masked_words(cfg, arch, key[1], data.vocab.vocab_size,
                                                     data.words_train, log)
    return data.pretrained[key]


def train_word_model(cfg: Config, variant: str, vocab_size: int, data: WordPairs,
                     dev: WordPairs, seed: int, log_path: Path | None,
                     pretrained: dict[str, Tensor] | None = None) -> tuple[WordModel, dict]:
    """One word-level model of ``variant`` trained on ``data`` with ``seed``, evaluated on
    ``dev`` ``evals_per_epoch`` times an epoch and returned at its best dev evaluation.
    ``pretrained`` (a "+mlm" variant) replaces the fresh embedding, encoder and norm."""
    arch, options = parse_word_variant(variant)
    torch.manual_seed(seed)
    model = word_model(cfg, arch, vocab_size, "moe" in options)
    if "mlm" in options:
        if pretrained is None:
            raise ValueError(f"word variant {variant!r} needs pretrained weights")
        missing = [k for k in model.state_dict() if k.startswith(PRETRAINED_PARTS)
                   and k not in pretrained]
        if missing:
            raise ValueError(f"pretrained weights lack {missing[:3]}")
        model.load_state_dict(pretrained, strict=False)
    steps_per_epoch = math.ceil(len(data) / cfg.word_batch)
    steps = max(cfg.min_steps, math.ceil(cfg.word_epochs * steps_per_epoch))
    pairs = data.with_swapped(LABELS.index("contradiction")) if "swap" in options else data
    moe_layers = model.moe_layers()

    def loss_fn(m: nn.Module, batch: WordPairBatch) -> tuple[Tensor, int]:
        """Label-smoothed cross-entropy, plus the load-balancing terms of an MoE FFN."""
        p, h, y, n_tokens = batch
        loss = F.cross_entropy(m(p, h), y, label_smoothing=cfg.label_smoothing)
        if moe_layers:
            loss = loss + moe_loss(moe_layers, 0.01, 0.0)
        return loss, n_tokens

    def eval_fn(m: nn.Module) -> dict[str, float]:
        """Accuracy on dev."""
        return {"dev_accuracy": accuracy(predict_word_pairs(m, dev.premises, dev.hypotheses),
                                         dev.labels)}

    best = BestOnDev(cfg.patience)
    every = max(1, min(steps, steps_per_epoch // cfg.evals_per_epoch))
    tcfg = schedule(cfg, steps, cfg.word_lr, seed, eval_every=every)
    start = time.perf_counter()
    with PeakMemory(resolve_device(tcfg.device)) as mem:
        result = train(model, tcfg, word_pair_batches(pairs, cfg.word_batch, steps, seed),
                       loss_fn=loss_fn, eval_fn=eval_fn, on_eval=[best], log_path=log_path)
    wall = time.perf_counter() - start
    assert best.state is not None
    model.load_state_dict(best.state)
    model.eval()
    return model, {"steps": steps, "steps_run": result.trainer.step, "best_step": best.step,
                   "train_pairs": len(pairs), "dev_curve": best.curve,
                   "train_s": result.train_s, "wall_s": wall,
                   "tokens_per_s": result.tokens_per_s, "tokens_seen": result.trainer.tokens_seen,
                   "final_loss": result.history[-1]["loss"],
                   "peak_memory_bytes": mem.bytes, "peak_memory_kind": mem.kind}


def pretrain_language_model(cfg: Config, data: Data, model_cfg: GPTConfig,
                            out: Path) -> tuple[GPT, dict]:
    """Next-token pretraining on Tiny Shakespeare plus the SNLI training pairs as text."""
    tok, train_ids, _, _ = data.gpt()
    text = load_tiny_shakespeare(progress=False)
    if cfg.shakespeare_chars:
        text = text[:cfg.shakespeare_chars]
    eot = tok.special_tokens[EOT]
    stream = [*tok.encode_ordinary(text), eot]
    shakespeare_tokens = len(stream)
    for row in train_ids.ids:
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
    """One GPT classifier of ``variant`` trained on ``train_pairs`` (its LM pretrained once)."""
    attention, ffn, init = variant
    tok = data.gpt()[0]
    torch.manual_seed(cfg.seed)
    if init == "pretrained":
        model = GPTClassifier.from_language_model(lms[attention, ffn][0], len(LABELS),
                                                  cfg.head_dropout)
    else:
        mcfg = model_config(cfg, tok.vocab_size, attention, ffn)
        model = GPTClassifier(mcfg, len(LABELS), cfg.head_dropout)
    lr = cfg.finetune_lr if init == "pretrained" else cfg.lr
    return train_classifier(cfg, model, train_pairs, tok.special_tokens[PAD], lr, log_path)


def _fit_baseline(cfg: Config, name: str, pairs: list[NLIPair], seed: int
                  ) -> BowLogisticRegression:
    """Baseline ``name`` fitted on ``pairs`` with ``seed``."""
    model = BowLogisticRegression(BASELINE_KINDS[name], epochs=cfg.baseline_epochs, seed=seed)
    return model.fit([(p.premise, p.hypothesis) for p in pairs], [p.label_id for p in pairs])


def _baselines(cfg: Config, data: Data) -> dict[str, dict]:
    """Majority class and the three logistic regressions (each with every seed), scored on
    dev and test."""
    gold, dev_gold = data.words_test.labels, data.words_dev.labels
    test = [(p.premise, p.hypothesis) for p in data.test_pairs]
    dev = [(p.premise, p.hypothesis) for p in data.dev_pairs]
    maj = MajorityClass().fit([p.label_id for p in data.train_pairs])
    out: dict[str, dict] = {"majority": {
        **scores(maj.predict(len(gold)), gold), "kind": "baseline",
        "dev_accuracy": scores(maj.predict(len(dev_gold)), dev_gold)["accuracy"],
        "accuracy_std": 0.0, "seeds": [], "parameters_total": 0,
        "parameters_active_per_token": 0, "majority_label": LABELS[maj.label]}}
    for name in BASELINES:
        runs = []
        for seed in cfg.seed_list():
            start = time.perf_counter()
            with PeakMemory("cpu") as mem:
                model = _fit_baseline(cfg, name, data.train_pairs, seed)
            train_s = time.perf_counter() - start
            runs.append({"seed": seed, **scores(model.predict(test), gold),
                         "dev_accuracy": accuracy(model.predict_proba(dev), dev_gold),
                         "train_s": train_s, "peak_memory_bytes": mem.bytes,
                         "peak_memory_kind": mem.kind})
        t = time.perf_counter()
        model.predict(test[:1])
        one = time.perf_counter() - t
        t = time.perf_counter()
        model.predict(test[:32])
        many = (time.perf_counter() - t) / 32
        train_s = statistics.mean(r["train_s"] for r in runs)
        out[name] = {**summarise(runs), "kind": "baseline", "features": len(model.vocab),
                     "parameters_total": model.num_parameters(),
                     "parameters_active_per_token": None, "train_s": train_s,
                     "train_pairs_per_s": len(data.train_pairs) * cfg.baseline_epochs / train_s,
                     "latency": {"batch_1_ms": 1e3 * one, "batch_32_ms": 1e3 * many}}
    return out


# ----------------------------------------------------------------------------- the study


def _word_rows(cfg: Config, data: Data, out: Path, results: dict[str, dict]
               ) -> tuple[dict[str, list[WordModel]], dict[str, list[Tensor]]]:
    """Train every word-level variant with every seed; add its row to ``results``; return the
    models and their test probabilities by variant."""
    models: dict[str, list[WordModel]] = {}
    test_probs: dict[str, list[Tensor]] = {}
    for variant in cfg.word_variants:
        runs, models[variant], test_probs[variant] = [], [], []
        dev_probs = []
        for seed in cfg.seed_list(variant):
            tag = variant.replace("+", "_")
            pre = pretrained_weights(cfg, data, variant, out)
            model, info = train_word_model(cfg, variant, data.vocab.vocab_size,
                                           data.words_train, data.words_dev, seed,
                                           out / f"train_log_{tag}_seed{seed}.jsonl",
                                           None if pre is None else pre[0])
            probs = predict_word_pairs(model, data.words_test.premises,
                                       data.words_test.hypotheses)
            dprobs = predict_word_pairs(model, data.words_dev.premises,
                                        data.words_dev.hypotheses)
            runs.append({"seed": seed, **scores(probs.argmax(-1), data.words_test.labels),
                         "dev_accuracy": accuracy(dprobs, data.words_dev.labels),
                         "train": info})
            models[variant].append(model)
            test_probs[variant].append(probs)
            dev_probs.append(dprobs)
        first = models[variant][0]
        arch, options = parse_word_variant(variant)
        results[variant] = {
            **summarise(runs), "kind": "transformer", "arch": arch, "options": sorted(options),
            "ffn": "moe" if "moe" in options else "dense", "attention": "dense",
            "parameters_total": first.num_parameters(),
            "parameters_active_per_token": first.active_parameters(),
            "train": {"tokens_per_s": statistics.mean(r["train"]["tokens_per_s"] for r in runs),
                      "train_s": statistics.mean(r["train"]["train_s"] for r in runs),
                      "wall_s": statistics.mean(r["train"]["wall_s"] for r in runs),
                      "steps": runs[0]["train"]["steps"],
                      "peak_memory_bytes": max(r["train"]["peak_memory_bytes"] for r in runs)},
            "latency": word_latency(first, data.words_test, cfg.latency_examples),
            **({"pretraining": pre[1]} if pre is not None else {}),
            "_dev_probs": dev_probs,
        }
    return models, test_probs


def _gpt_rows(cfg: Config, data: Data, out: Path, results: dict[str, dict]
              ) -> tuple[dict[str, GPTClassifier], Pretrained]:
    """Train every GPT variant (first seed only) and add its row to ``results``."""
    lms: Pretrained = {}
    models: dict[str, GPTClassifier] = {}
    if not cfg.variants:
        return models, lms
    tok, train_ids, dev_ids, test_ids = data.gpt()
    pad = tok.special_tokens[PAD]
    for variant in map(parse_variant, cfg.variants):
        attention, ffn, init = variant
        if init == "pretrained" and (attention, ffn) not in lms:
            mcfg = model_config(cfg, tok.vocab_size, attention, ffn)
            lms[attention, ffn] = pretrain_language_model(cfg, data, mcfg, out)
        name = variant_name(*variant)
        tag = name.replace("/", "_").replace("[", "_").replace("]", "").replace(",", "_")
        model, train_info = _train_variant(cfg, data, train_ids, variant, lms,
                                           out / f"train_log_{tag}.jsonl")
        probs = predict_proba(model, test_ids.ids, pad)
        run = {"seed": cfg.seed, **scores(probs.argmax(-1), test_ids.labels),
               "dev_accuracy": accuracy(predict_proba(model, dev_ids.ids, pad), dev_ids.labels)}
        results[name] = {
            **summarise([run]), "kind": "transformer", "arch": "gpt", "attention": attention,
            "ffn": ffn, "init": init, "parameters_total": model.num_parameters(),
            "parameters_active_per_token": active_parameters(model), "train": train_info,
            "latency": gpt_latency(model, test_ids.ids, pad, cfg.latency_examples),
            **({"pretraining": lms[attention, ffn][1]} if init == "pretrained" else {}),
        }
        models[name] = model
    return models, lms


@register("nli.snli", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """NLI on SNLI: cross-attention, BERT-style and GPT classifiers against four baselines."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    with torch_threads(cfg.threads):
        data = load_data(cfg, out)
        lap("data_s")
        results: dict[str, dict] = _baselines(cfg, data)
        lap("baselines_s")
        word_models, test_probs = _word_rows(cfg, data, out, results)
        lap("word_models_s")
        gpt_models, lms = _gpt_rows(cfg, data, out, results)
        lap("gpt_models_s")
        transformers = [n for n, r in results.items() if r["kind"] == "transformer"]
        best = max(transformers, key=lambda n: results[n]["dev_accuracy"])
        baseline = max(BASELINES, key=lambda n: results[n]["dev_accuracy"])
        ensemble = None
        if best in word_models and len(word_models[best]) > 1:
            ensemble = f"{best}/ensemble"
            probs = torch.stack(test_probs[best]).mean(0)
            dev_probs = torch.stack(results[best]["_dev_probs"]).mean(0)
            results[ensemble] = {
                **scores(probs.argmax(-1), data.words_test.labels), "kind": "ensemble",
                "dev_accuracy": accuracy(dev_probs, data.words_dev.labels),
                "seeds": results[best]["seeds"], "members": len(test_probs[best]),
                "parameters_total": len(test_probs[best]) * results[best]["parameters_total"]}
        shipped = _ship(cfg, data, out, best, word_models, gpt_models, results) \
            if cfg.ship else {}
        lap("ship_s")
        curve = _learning_curve(cfg, data, best, baseline, lms, results)
        lap("learning_curve_s")
    for r in results.values():
        r.pop("_dev_probs", None)
    summary = _summary(cfg, results, best, baseline, ensemble, shipped)
    _plot_confusions(results, out)
    _plot_curve(curve, best, baseline, out)
    _plot_accuracy(results, out)
    _write_table(results, out / "table.md")
    return {"train_set": data.train_set,
            "vocabulary": {"words": len(data.vocab.words), "oov_buckets": data.vocab.oov_buckets,
                           "vocab_size": data.vocab.vocab_size,
                           "mean_words_per_pair": data.words_train.tokens() / len(
                               data.words_train),
                           "truncated_pairs": {"train": data.words_train.truncated,
                                               "dev": data.words_dev.truncated,
                                               "test": data.words_test.truncated}},
            **({"tokenizer": {"vocab_size": data.gpt()[0].vocab_size,
                              "mean_tokens_per_pair": data.gpt()[1].tokens() / len(data.gpt()[1]),
                              "truncated_pairs": {"train": data.gpt()[1].truncated,
                                                  "dev": data.gpt()[2].truncated,
                                                  "test": data.gpt()[3].truncated}}}
               if cfg.variants else {}),
            "labels": list(LABELS), "summary": summary, "models": results,
            "tradeoff": {"quality_name": "test accuracy", "higher_is_better": True,
                         "speed_name": "training tokens/s", "baseline": cfg.word_variants[0]
                         if cfg.word_variants else variant_name(*parse_variant(cfg.variants[0])),
                         "points": [{"variant": n, "speed": r["train"]["tokens_per_s"],
                                     "quality": r["accuracy"],
                                     "parameters": r["parameters_total"],
                                     "latency_batch_1_ms": r["latency"]["batch_1_ms"],
                                     "latency_batch_32_ms": r["latency"]["batch_32_ms"]}
                                    for n, r in results.items() if r["kind"] == "transformer"
                                    and r.get("train", {}).get("tokens_per_s")]},
            "learning_curve": curve, "shipped_model": shipped, "timings_s": timings}


@dataclass
class PretrainingConfig(Config):
    """Study ``nli.pretraining``: the same pipeline, data, baselines and fine-tuning on the
    cross-attention model with and without ``+mlm`` (masked-word pretraining of its embedding,
    encoder and alignment on the training pairs' sentences, labels unread), same seeds and
    dev-based selection; the learning curve shows both at fewer labelled pairs, where
    pretraining on the unlabelled text should matter most. Nothing is shipped (``nli.snli``
    serves the CLI model). Quick profile: a smoke run on 1,000 pairs, one seed."""

    train_size: int = 1000
    eval_size: int = 300
    seeds: int = 1
    word_variants: tuple[str, ...] = ("cross_attention", "cross_attention+mlm")
    word_epochs: float = 2.0
    mlm_epochs: float = 1.0
    min_steps: int = 30
    variants: tuple[str, ...] = ()
    curve_sizes: tuple[int, ...] = (0,)
    curve_variants: tuple[str, ...] = ("cross_attention", "cross_attention+mlm")
    ship: bool = False


PRETRAINING_FULL = {"train_size": 0, "eval_size": 0, "seeds": 3, "word_epochs": 4.0,
                    "mlm_epochs": 3.0, "min_steps": 100, "curve_sizes": (1000, 5000, 0),
                    "latency_examples": 100, "threads": 1}


@register("nli.pretraining", PretrainingConfig, full=PRETRAINING_FULL)
def run_pretraining(cfg: PretrainingConfig, out: Path) -> dict:
    """Cross-attention NLI with and without masked-word pretraining, against the baselines."""
    return run(cfg, out)


def _ship(cfg: Config, data: Data, out: Path, best: str,
          word_models: dict[str, list[WordModel]], gpt_models: dict[str, GPTClassifier],
          results: dict[str, dict]) -> dict:
    """Save the best-dev seed of the chosen variant under ``out/model`` and record what it
    says about the example pair."""
    row = results[best]
    i = int(np.argmax(row["dev_accuracy_seeds"]))
    seed = row["seeds"][i]
    extra = {"variant": best, "seed": seed, "dev_accuracy": row["dev_accuracy_seeds"][i],
             "test_accuracy": row["accuracy_seeds"][i], "train_set": data.train_set}
    if best in word_models:
        model: nn.Module = word_models[best][i]
        tok: BPETokenizer | WordVocab = data.vocab
    else:
        model, tok = gpt_models[best], data.gpt()[0]
    path = save_classifier(model, tok, out / MODEL_DIR, extra, half=cfg.ship_half)
    probs = load_classifier(path).classify(*EXAMPLE_PAIR)  # as `scratchformer nli` will see it
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return {**{k: v for k, v in extra.items() if k != "train_set"}, "path": MODEL_DIR,
            "bytes": size, "float16": cfg.ship_half,
            "example": {"premise": EXAMPLE_PAIR[0], "hypothesis": EXAMPLE_PAIR[1],
                        "label": max(probs, key=probs.__getitem__), "probabilities": probs}}


def _summary(cfg: Config, results: dict[str, dict], best: str, baseline: str,
             ensemble: str | None, shipped: dict) -> dict:
    """The headline figures: chosen variant and baseline, margins, ablation, targets."""
    pair = results["pair_bow_lr"]
    top = results[best]
    out: dict[str, Any] = {
        "best_variant": best, "chosen_on": "mean dev accuracy",
        "best_test_accuracy": top["accuracy"], "best_test_accuracy_std": top["accuracy_std"],
        "best_dev_accuracy": top["dev_accuracy"], "best_seeds": len(top["seeds"]),
        "best_baseline": baseline, "best_baseline_test_accuracy": results[baseline]["accuracy"],
        "pair_bow_lr_test_accuracy": pair["accuracy"],
        "best_minus_pair_bow_lr": top["accuracy"] - pair["accuracy"],
        "best_minus_best_baseline": top["accuracy"] - results[baseline]["accuracy"],
        "best_minus_hypothesis_only": top["accuracy"]
        - results["hypothesis_only_bow_lr"]["accuracy"],
        "target_accuracy_0.70_met": top["accuracy"] >= 0.70,
        "target_5_points_over_pair_bow_lr_met": top["accuracy"] - pair["accuracy"] >= 0.05,
        "shipped_example_label": shipped["example"]["label"] if shipped else None,
    }
    if ensemble is not None:
        out["ensemble"] = ensemble
        out["ensemble_test_accuracy"] = results[ensemble]["accuracy"]
    for option, key in (("swap", "swap_augmentation"), ("mlm", "mlm_pretraining")):
        ablations = {}
        for variant in cfg.word_variants:
            arch, options = parse_word_variant(variant)
            plain = "+".join([arch, *sorted(options - {option})])
            if option in options and plain in results:
                ablations[variant] = {
                    "without": plain, "test_delta": results[variant]["accuracy"]
                    - results[plain]["accuracy"],
                    "dev_delta": results[variant]["dev_accuracy"] - results[plain]["dev_accuracy"]}
        out[key] = ablations
    return out


def _learning_curve(cfg: Config, data: Data, best: str, baseline: str, lms: Pretrained,
                    results: dict) -> dict:
    """Test accuracy against training pairs for the chosen transformer and baseline (first
    seed).

    The point at the whole training set is the main run's first seed (same seed and settings),
    not trained again. A pretrained GPT reuses its language model, which read the unlabelled
    sentences of the whole training set, so small sizes there measure labelled data only; so
    does a "+mlm" word model's masked-word pretraining. ``curve_variants`` join the curve."""
    n_train = len(data.train_pairs)
    sizes = sorted({n_train if s == 0 else min(s, n_train) for s in cfg.curve_sizes})
    test_pairs = [(p.premise, p.hypothesis) for p in data.test_pairs]
    models = [best, *(v for v in cfg.curve_variants if v != best)]
    curve: dict = {"sizes": sizes, "transformer": best, "baseline": baseline,
                   "others": models[1:], "seed": cfg.seed, baseline: [],
                   **{m: [] for m in models}}
    for n in sizes:
        if n == n_train:
            for m in (*models, baseline):
                curve[m].append(results[m]["accuracy_seeds"][0])
            continue
        for m in models:
            if results[m]["arch"] == "gpt":
                tok, train_ids, _, test_ids = data.gpt()
                model, _ = _train_variant(cfg, data, train_ids.head(n), parse_variant(
                    {variant_name(*parse_variant(v)): v for v in cfg.variants}[m]), lms, None)
                probs = predict_proba(model, test_ids.ids, tok.special_tokens[PAD])
            else:
                pre = pretrained_weights(cfg, data, m, None)  # on all training sentences
                word, _ = train_word_model(cfg, m, data.vocab.vocab_size,
                                           data.words_train.head(n), data.words_dev, cfg.seed,
                                           None, None if pre is None else pre[0])
                probs = predict_word_pairs(word, data.words_test.premises,
                                           data.words_test.hypotheses)
            curve[m].append(accuracy(probs, data.words_test.labels))
        bow = _fit_baseline(cfg, baseline, data.train_pairs[:n], cfg.seed)
        curve[baseline].append(scores(bow.predict(test_pairs), data.words_test.labels)["accuracy"])
    return curve


# ----------------------------------------------------------------------------- outputs


def _plot_confusions(results: dict[str, dict], out: Path) -> Path:
    """One row-normalised confusion matrix per model (first seed), counts in the cells."""
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


def _plot_curve(curve: dict, best: str, baseline: str, out: Path) -> Path:
    """Test accuracy against the number of training pairs (log scale)."""
    fig, ax = new_figure(5.0, 3.6)
    for key in (best, *curve.get("others", ()), baseline):
        ax.plot(curve["sizes"], curve[key], marker="o", label=key)
    ax.set_xscale("log")
    ax.set_xlabel("training pairs")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    return save_figure(fig, out / "learning_curve.png")


def _plot_accuracy(results: dict[str, dict], out: Path) -> Path:
    """Mean test accuracy ± std over seeds per model, with each seed and the dev mean."""
    names = list(results)
    fig, ax = new_figure(6.5, 0.35 * len(names) + 1.2)
    y = np.arange(len(names))
    means = [results[n]["accuracy"] for n in names]
    stds = [results[n].get("accuracy_std", 0.0) for n in names]
    ax.barh(y, means, xerr=stds, color="#9ecae1", capsize=3, label="test (mean ± std)")
    for i, n in enumerate(names):
        seeds = results[n].get("accuracy_seeds", [])
        ax.plot(seeds, [i] * len(seeds), "k.", ms=3)
    ax.plot([results[n]["dev_accuracy"] for n in names], y, "r|", ms=10, label="dev (mean)")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlim(0.3, max(0.8, max(means) + 0.05))
    ax.set_xlabel("accuracy")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, out / "accuracy.png")


def _write_table(results: dict[str, dict], path: Path) -> Path:
    """A Markdown table of every row: seeds, test and dev accuracy (mean ± std), macro-F1."""
    lines = ["| model | seeds | test accuracy | dev accuracy | macro-F1 | parameters |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        n = len(r.get("seeds", [])) or 1
        lines.append(
            f"| {name} | {n} | {100 * r['accuracy']:.2f} ± {100 * r.get('accuracy_std', 0):.2f}"
            f" | {100 * r['dev_accuracy']:.2f} | {100 * r['macro_f1']:.2f} | "
            f"{r.get('parameters_total') or 0:,} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
