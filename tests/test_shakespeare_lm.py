"""The Tiny Shakespeare studies: bits per character, exact full-text scoring, both studies tiny.

Bits/char is checked on a model with a known answer (uniform over V symbols gives log2 V), and the
windowed full-text NLL on a bigram model, whose NLL does not depend on how the text is windowed.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchformer.data.lm_text import TokenizedText, bpe_data, char_data, random_batch
from scratchformer.experiments.kit import load_char_model
from scratchformer.experiments.registry import StudyError, get
from scratchformer.experiments.runner import run_study
from scratchformer.training.lm_metrics import bits_per_char, sequence_nll, text_bits_per_char


class Bigram(nn.Module):
    """Logits depend on the current token only: a table lookup (V, V)."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, None]:
        return self.table[idx], None


def test_bits_per_char_of_a_uniform_model_is_log2_v():
    V, n = 13, 500
    ids = torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(0))
    data = TokenizedText("char", list, list, V, ids, ids, torch.ones(n, dtype=torch.long),
                         [chr(65 + i) for i in range(V)])
    uniform = Bigram(torch.zeros(V, V))
    assert text_bits_per_char(uniform, data, context_len=7) == pytest.approx(math.log2(V))
    # the helper itself: n·ln V nats over n characters
    assert bits_per_char(n * math.log(V), n) == pytest.approx(math.log2(V))


def test_bits_per_char_divides_by_characters_not_tokens():
    # Two-character tokens at uniform probability over V: log2(V) bits per token, half per char.
    V, n = 8, 101
    ids = torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(1))
    data = TokenizedText("bpe", list, list, V, ids, ids, torch.full((n,), 2), ["ab"] * V)
    assert text_bits_per_char(Bigram(torch.zeros(V, V)), data, 16) == pytest.approx(
        math.log2(V) / 2)
    with pytest.raises(ValueError, match="n_chars"):
        bits_per_char(1.0, 0)


@pytest.mark.parametrize("context_len", [1, 4, 7, 50, 200])
def test_sequence_nll_scores_every_token_once(context_len):
    V, n = 6, 60
    g = torch.Generator().manual_seed(2)
    table = torch.randn(V, V, generator=g)
    ids = torch.randint(0, V, (n,), generator=g)
    want = F.cross_entropy(table[ids[:-1]], ids[1:], reduction="none")
    got = sequence_nll(Bigram(table), ids, context_len, batch_size=3)
    torch.testing.assert_close(got, want)


def test_random_batch_targets_are_inputs_shifted():
    ids = torch.arange(100)
    x, y = random_batch(ids, 5, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8)
    torch.testing.assert_close(y[:, :-1], x[:, 1:])
    assert int(y.max()) <= 99
    with pytest.raises(ValueError, match="context_len"):
        random_batch(torch.arange(8), 2, 8, torch.Generator())


def test_tokenizers_cover_every_validation_character():
    # non-ASCII characters are several bytes, and BPE may split them across tokens
    train = "To be, or not to be — that is the question: café\n" * 40
    val = "Whether 'tis nobler — in the mind to suffer, né\n" * 3
    bpe = bpe_data(train, val, 300)
    char = char_data(train, val)
    assert int(bpe.val_chars.sum()) == int(char.val_chars.sum()) == len(val)
    assert bpe.decode(bpe.val.tolist()) == val
    assert bpe.val.numel() < len(val)  # merges learned on train shorten the text


@pytest.fixture
def tiny_overrides(tiny_char_lm) -> dict:
    return {**tiny_char_lm, "bpe_vocab": 270, "n_layers": 1, "eval_every": 3, "val_chars": 600}


def test_char_vs_bpe_and_embedding_pca_run_tiny(tmp_path, tiny_overrides):
    study = get("shakespeare.char_vs_bpe")
    cfg = dataclasses.replace(study.config("quick"), sample_chars=30, n_samples=1,
                              **tiny_overrides)
    record = run_study(study, cfg, tmp_path)
    out = tmp_path / "shakespeare.char_vs_bpe"
    m = record["metrics"]["models"]
    for kind in ("char", "bpe"):
        assert 0 < m[kind]["val_bits_per_char"] < 10
        assert len(m[kind]["curve"]["val_loss"]) == 2
    assert m["char"]["chars_per_token"] == 1.0 < m["bpe"]["chars_per_token"]
    assert "## bpe model" in (out / "samples.md").read_text()
    assert (out / "curves.png").is_file()
    model, vocab = load_char_model(out / "char_model.pt")
    assert model.config.vocab_size == len(vocab) == m["char"]["vocab_size"]

    # the PCA study picks up that checkpoint from the sibling folder
    pca = get("shakespeare.embedding_pca")
    rec = run_study(pca, pca.config("quick"), tmp_path)["metrics"]
    assert rec["source"].startswith("checkpoint")
    assert rec["vocab_size"] == len(vocab) and rec["d_model"] == 16
    assert rec["cov_eigen_vs_svd_max_rel_gap"] < 1e-10
    assert rec["frobenius_identity_gap"] < 1e-10
    saved = json.loads((tmp_path / "shakespeare.embedding_pca" / "metrics.json").read_text())
    assert {"embedding_pca.png", "embedding_variance.png"} <= set(saved["figures"])
    assert "sigma_i^2/(V-1)" in (tmp_path / "shakespeare.embedding_pca" / "pca.md").read_text()


def test_embedding_pca_trains_its_own_model_without_checkpoint(tmp_path, tiny_overrides):
    pca = get("shakespeare.embedding_pca")
    fields = {f.name for f in dataclasses.fields(pca.config_cls)}
    cfg = dataclasses.replace(pca.config("quick"), reuse_checkpoint=False, n_labels=5,
                              **{k: v for k, v in tiny_overrides.items() if k in fields})
    rec = run_study(pca, cfg, tmp_path)["metrics"]
    assert rec["source"].startswith("trained here")
    ratios = rec["explained_variance_ratio"]
    assert len(ratios) == 16 and sum(ratios) == pytest.approx(1.0)
    assert ratios == sorted(ratios, reverse=True)


def test_bad_config_fails_when_built():
    study = get("shakespeare.char_vs_bpe")
    with pytest.raises(ValueError, match="bpe_vocab"):
        dataclasses.replace(study.config("quick"), bpe_vocab=100)
    with pytest.raises(ValueError, match="steps"):
        dataclasses.replace(study.config("quick"), steps=0)
    for key, value, what in (("steps", "-1", "steps"), ("lr", "nan", "lr"),
                             ("temperature", "0", "temperature"),
                             ("warmup_steps", "100", "warmup_steps")):
        with pytest.raises(StudyError, match=what):
            study.config("quick", {key: value})
