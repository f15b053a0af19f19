"""A GPT natural-language-inference classifier on disk and in use: save, load, classify.

A checkpoint is a folder holding the `GPTClassifier` weights (safetensors), its `GPTConfig`,
the labels and the pair tokenizer (`scratchformer.data.nli_pairs`), so ``scratchformer nli``
can classify a premise/hypothesis pair without the study that trained it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from scratchformer.data.nli_pairs import PAD, encode_pair, pad_batch
from scratchformer.data.snli import LABELS
from scratchformer.models.gpt import GPTConfig
from scratchformer.models.gpt_classifier import GPTClassifier
from scratchformer.tokenizers import BPETokenizer
from scratchformer.training.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["TOKENIZER_FILE", "classify", "load_classifier", "predict_proba", "save_classifier"]

TOKENIZER_FILE = "tokenizer.json"


def save_classifier(model: GPTClassifier, tok: BPETokenizer, path: Path,
                    extra: dict | None = None) -> Path:
    """Weights (safetensors), GPT config and tokenizer, loadable by `load_classifier`."""
    save_checkpoint(path, model=model, config={"gpt": dataclasses.asdict(model.config),
                                               "num_classes": model.num_classes},
                    extra={"labels": list(LABELS), **(extra or {})})
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
def predict_proba(model: GPTClassifier, rows: Sequence[Sequence[int]], pad_id: int,
                  batch_size: int = 256) -> Tensor:
    """Class probabilities (N, num_classes) of encoded pairs; rows are batched by length to
    keep padding small."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = torch.empty(len(rows), model.num_classes)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        x, lengths = pad_batch([rows[i] for i in idx], pad_id)
        out[idx] = F.softmax(model(x.to(device), lengths.to(device)).float(), -1).cpu()
    return out


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
