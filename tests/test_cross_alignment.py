"""The cross-attention model's soft alignment, as drawn for a sentence pair."""

from __future__ import annotations

import pytest
import torch

from scratchformer.models.cross_attention import CrossAttentionConfig, CrossAttentionNLI
from scratchformer.viz.attention import alignment_figure


def _model() -> CrossAttentionNLI:
    torch.manual_seed(0)
    return CrossAttentionNLI(CrossAttentionConfig(vocab_size=40, d_model=16, n_heads=2,
                                                  dropout=0.0)).eval()


def test_alignment_rows_are_distributions_over_the_real_words_of_the_other_sentence():
    premise = torch.tensor([[5, 6, 7, 0], [8, 9, 10, 11]])
    hypothesis = torch.tensor([[5, 12, 0], [13, 14, 15]])
    p2h, h2p = _model().alignment(premise, hypothesis)
    assert p2h.shape == (2, 4, 3) and h2p.shape == (2, 3, 4)
    assert torch.allclose(p2h.sum(-1), torch.ones(2, 4)) and (p2h[0, :, 2] == 0).all()
    assert torch.allclose(h2p.sum(-1), torch.ones(2, 3)) and (h2p[0, :, 3] == 0).all()


def test_alignment_is_the_softmax_of_the_scores_the_classifier_uses():
    model = _model()
    premise, hypothesis = torch.tensor([[5, 6, 7]]), torch.tensor([[5, 12]])
    a, b = model.encode(premise, hypothesis)
    a_tilde, _, e = model.align(a, b, premise != 0, hypothesis != 0)
    p2h, h2p = model.alignment(premise, hypothesis)
    assert torch.allclose(p2h, torch.softmax(e, -1))
    assert torch.allclose(h2p, torch.softmax(e.transpose(1, 2), -1))
    assert torch.allclose(p2h @ b, a_tilde, atol=1e-6)  # ã is the weighted hypothesis


def test_alignment_figure_checks_its_words():
    p2h, h2p = torch.full((3, 2), 0.5), torch.full((2, 3), 1 / 3)
    fig = alignment_figure(p2h, h2p, ["a", "man", "cooks"], ["kitchen", "occupied"])
    assert len(fig.axes) == 3  # two panels and the colour bar
    with pytest.raises(ValueError, match="alignments must be"):
        alignment_figure(p2h, h2p, ["a", "man"], ["kitchen", "occupied"])
