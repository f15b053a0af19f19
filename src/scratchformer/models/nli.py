"""NLI classifiers on disk and in use: save, load (checked), classify one pair or a JSONL file.

A saved model is a folder holding the weights (safetensors), a JSON config naming the
architecture and its sizes, the labels and the tokenizer, so ``scratchformer nli`` can classify
pairs without the study that trained it. Three architectures are stored this way:

* ``cross_attention``: `CrossAttentionNLI` with a word vocabulary (`WordVocab`);
* ``pair_encoder``: the BERT-style `PairEncoderNLI` with a word vocabulary;
* ``gpt``: the last-token `GPTClassifier` with its pair BPE tokenizer.

`load_classifier` checks the config against bounds before it builds a model, so a damaged or
foreign folder (missing key, absurd ``vocab_size``, truncated weights) fails with a one-line
``ValueError`` or `CheckpointError` instead of a traceback or an out-of-memory kill.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

import scratchformer
from scratchformer.data.nli_pairs import PAD, WordVocab, encode_pair, pad_batch, pad_rows
from scratchformer.data.snli import LABELS
from scratchformer.models.cross_attention import CrossAttentionConfig, CrossAttentionNLI
from scratchformer.models.gpt import GPTConfig
from scratchformer.models.gpt_classifier import GPTClassifier
from scratchformer.models.nli_encoder import PairEncoderConfig, PairEncoderNLI
from scratchformer.models.word_pair import MAX_EMBEDDING_PARAMETERS
from scratchformer.tokenizers import BPETokenizer
from scratchformer.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["ARCHS", "DEFAULT_MODEL_DIR", "TOKENIZER_FILE", "NLIClassifier", "NLIRow",
           "arch_of", "classify", "default_model_dir", "load_classifier", "predict_proba",
           "predict_word_pairs", "read_pairs_jsonl", "save_classifier"]

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MODEL_DIR = "docs/results/nli.snli/model"  # relative to the repository root
WORD_ARCHS: dict[str, tuple[type, type]] = {
    "cross_attention": (CrossAttentionConfig, CrossAttentionNLI),
    "pair_encoder": (PairEncoderConfig, PairEncoderNLI),
}
ARCHS = ("gpt", *WORD_ARCHS)
GPT_BOUNDS = {"vocab_size": (2, 1_000_000), "context_len": (4, 65_536), "n_layers": (1, 64),
              "n_heads": (1, 64), "d_model": (2, 4096)}

Tokenizer = BPETokenizer | WordVocab


def default_model_dir() -> Path:
    """The published model of the repository this package was installed from."""
    return Path(scratchformer.__file__).resolve().parents[2] / DEFAULT_MODEL_DIR


def arch_of(model: nn.Module) -> str:
    """The architecture name `save_classifier` stores for ``model``."""
    if isinstance(model, GPTClassifier):
        return "gpt"
    for name, (_, cls) in WORD_ARCHS.items():
        if isinstance(model, cls):
            return name
    raise TypeError(f"not an NLI classifier: {type(model).__name__}")


def save_classifier(model: nn.Module, tok: Tokenizer, path: Path, extra: dict | None = None,
                    *, half: bool = False) -> Path:
    """Weights (safetensors; float16 with ``half``), config and tokenizer, loadable by
    `load_classifier`."""
    arch = arch_of(model)
    if (arch == "gpt") != isinstance(tok, BPETokenizer):
        raise TypeError(f"a {arch} model needs a {'BPE' if arch == 'gpt' else 'word'} tokenizer")
    config: dict[str, Any] = {"arch": arch, "model": dataclasses.asdict(model.config)}
    if arch == "gpt":
        config["num_classes"] = model.num_classes
    stored = copy.deepcopy(model).half() if half else model
    save_checkpoint(path, model=stored, config=config,
                    extra={"labels": list(LABELS), **(extra or {})})
    tok.save(Path(path) / TOKENIZER_FILE)
    return Path(path)


def _bounded(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")


def _gpt_config(data: Any, num_classes: Any) -> GPTConfig:
    """A `GPTConfig` from stored ``data``, its sizes bounded before anything is built."""
    if not isinstance(data, dict):
        raise ValueError("model config must be a JSON object")
    names = {f.name for f in dataclasses.fields(GPTConfig)}
    missing = sorted(names - set(data))
    unknown = sorted(set(data) - names)
    if missing or unknown:
        raise ValueError(f"GPTConfig: missing key(s) {missing}, unknown key(s) {unknown}")
    for name, (low, high) in GPT_BOUNDS.items():
        _bounded(name, data[name], low, high)
    if data["vocab_size"] * data["d_model"] > MAX_EMBEDDING_PARAMETERS:
        raise ValueError(f"vocab_size * d_model exceeds {MAX_EMBEDDING_PARAMETERS:,}")
    _bounded("num_classes", num_classes, 2, 1000)
    return GPTConfig(**data)


@dataclass
class NLIClassifier:
    """A loaded classifier: model, tokenizer, architecture and the extras saved with it."""

    model: nn.Module
    tokenizer: Tokenizer
    arch: str
    extra: dict = field(default_factory=dict)

    def predict_proba(self, pairs: Sequence[tuple[str, str]], batch_size: int = 256,
                      progress: bool = False) -> Tensor:
        """Class probabilities (N, 3) of (premise, hypothesis) strings; an empty sentence or a
        GPT pair longer than its context raises ``ValueError`` naming the pair's index."""
        for i, (premise, hypothesis) in enumerate(pairs):
            for name, value in (("premise", premise), ("hypothesis", hypothesis)):
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"pair {i}: {name} must be a non-empty string, "
                                     f"got {value!r}")
        if self.arch == "gpt":
            assert isinstance(self.tokenizer, BPETokenizer)
            ctx = self.model.config.context_len
            rows = []
            for i, (premise, hypothesis) in enumerate(pairs):
                try:
                    rows.append(encode_pair(self.tokenizer, premise, hypothesis, ctx)[0])
                except ValueError as e:
                    raise ValueError(f"pair {i}: {e}") from None
            return predict_proba(self.model, rows, self.tokenizer.special_tokens[PAD],
                                 batch_size, progress)
        assert isinstance(self.tokenizer, WordVocab)
        n = self.model.config.max_len
        prem = [self.tokenizer.encode(p, n)[0] for p, _ in pairs]
        hyp = [self.tokenizer.encode(h, n)[0] for _, h in pairs]
        return predict_word_pairs(self.model, prem, hyp, batch_size, progress)

    def classify(self, premise: str, hypothesis: str) -> dict[str, float]:
        """Probability of each label for one pair."""
        probs = self.predict_proba([(premise, hypothesis)])[0]
        return dict(zip(LABELS, probs.tolist(), strict=True))


def load_classifier(path: str | Path) -> NLIClassifier:
    """The classifier `save_classifier` wrote to ``path``, its config checked first."""
    path = Path(path)
    meta_file, tok_file = path / "state.json", path / TOKENIZER_FILE
    if not meta_file.is_file() or not tok_file.is_file():
        raise FileNotFoundError(f"no NLI model at {path} (expected state.json and "
                                f"{TOKENIZER_FILE}); pass --checkpoint, or run: scratchformer "
                                "run nli.snli")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {meta_file}: {e}") from None
    config = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(config, dict) or config.get("arch") not in ARCHS:
        raise ValueError(f"{meta_file}: config.arch must be one of {ARCHS}")
    arch = config["arch"]
    try:
        if arch == "gpt":
            gpt_cfg = _gpt_config(config.get("model"), config.get("num_classes"))
            tok: Tokenizer = BPETokenizer.load(tok_file)
            vocab_size = gpt_cfg.vocab_size
        else:
            model_cfg = WORD_ARCHS[arch][0].from_dict(config.get("model"))
            tok = WordVocab.load(tok_file)
            vocab_size = model_cfg.vocab_size
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path}: bad model config or tokenizer: {e}") from None
    if tok.vocab_size != vocab_size:
        raise ValueError(f"{path}: tokenizer has {tok.vocab_size} ids but the model "
                         f"{vocab_size}")
    model: nn.Module = (GPTClassifier(gpt_cfg, config["num_classes"]) if arch == "gpt"
                        else WORD_ARCHS[arch][1](model_cfg))
    try:
        info = load_checkpoint(path, model=model, restore_rng=False)
    except CheckpointError as e:
        raise CheckpointError("; ".join(line.strip() for line in str(e).splitlines())) from None
    return NLIClassifier(model.eval(), tok, arch, info.extra)


def _batches(n: int, lengths: Sequence[int], batch_size: int,
             progress: bool, desc: str) -> list[list[int]]:
    """Indices in batches of similar length (little padding), shown by tqdm if asked."""
    order = sorted(range(n), key=lambda i: lengths[i])
    groups = [order[b:b + batch_size] for b in range(0, n, batch_size)]
    return list(tqdm(groups, desc=desc, unit="batch", disable=not progress, leave=False))


@torch.no_grad()
def predict_proba(model: GPTClassifier, rows: Sequence[Sequence[int]], pad_id: int,
                  batch_size: int = 256, progress: bool = False) -> Tensor:
    """Class probabilities (N, num_classes) of GPT-encoded pairs; rows are batched by length to
    keep padding small."""
    model.eval()
    device = next(model.parameters()).device
    out = torch.empty(len(rows), model.num_classes)
    for idx in _batches(len(rows), [len(r) for r in rows], batch_size, progress, "classify"):
        x, lengths = pad_batch([rows[i] for i in idx], pad_id)
        out[idx] = F.softmax(model(x.to(device), lengths.to(device)).float(), -1).cpu()
    return out


@torch.no_grad()
def predict_word_pairs(model: nn.Module, premises: Sequence[Sequence[int]],
                       hypotheses: Sequence[Sequence[int]], batch_size: int = 256,
                       progress: bool = False) -> Tensor:
    """Class probabilities (N, num_classes) of word-id pairs, batched by length."""
    model.eval()
    device = next(model.parameters()).device
    out = torch.empty(len(premises), model.num_classes)
    lengths = [len(p) + len(h) for p, h in zip(premises, hypotheses, strict=True)]
    for idx in _batches(len(premises), lengths, batch_size, progress, "classify"):
        p = pad_rows([premises[i] for i in idx]).to(device)
        h = pad_rows([hypotheses[i] for i in idx]).to(device)
        out[idx] = F.softmax(model(p, h).float(), -1).cpu()
    return out


def classify(model: nn.Module | NLIClassifier, tok: Tokenizer | None = None,
             premise: str = "", hypothesis: str = "") -> dict[str, float]:
    """Probability of each label for one pair, from a loaded `NLIClassifier` (or a model and
    its tokenizer)."""
    clf = model if isinstance(model, NLIClassifier) else NLIClassifier(
        model, tok, arch_of(model))  # type: ignore[arg-type]
    return clf.classify(premise, hypothesis)


@dataclass(frozen=True)
class NLIRow:
    """One pair of a JSONL file: the sentences, the gold label (None if absent) and its id."""

    premise: str
    hypothesis: str
    gold: str | None
    pair_id: str | None


def read_pairs_jsonl(path: str | Path) -> list[NLIRow]:
    """Pairs of an SNLI-format JSON Lines file (``sentence1``, ``sentence2``, optional
    ``gold_label`` and ``pairID``; ``.gz`` is read compressed); a bad line raises
    ``ValueError`` naming its number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[NLIRow] = []
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {n}: not JSON ({e})") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{path}, line {n}: expected a JSON object")
                p, h = obj.get("sentence1"), obj.get("sentence2")
                if not isinstance(p, str) or not isinstance(h, str) or not p.strip() \
                        or not h.strip():
                    raise ValueError(f"{path}, line {n}: needs non-empty strings sentence1 "
                                     "and sentence2")
                gold = obj.get("gold_label")
                pair_id = obj.get("pairID")
                rows.append(NLIRow(p, h, gold if gold in LABELS else None,
                                   None if pair_id is None else str(pair_id)))
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not rows:
        raise ValueError(f"{path} holds no pairs")
    return rows
