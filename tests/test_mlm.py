"""Masked-word pretraining of the NLI word models: corruption, tied head, what is handed on."""

from __future__ import annotations

import pytest
import torch

from scratchformer.data.nli_pairs import WordVocab, encode_word_pairs
from scratchformer.experiments import nli
from scratchformer.models.cross_attention import CrossAttentionConfig, CrossAttentionNLI
from scratchformer.models.mlm import FIRST_WORD_ID, MASK_ID, MaskedWordModel, mask_words
from scratchformer.models.nli_encoder import PairEncoderConfig, PairEncoderNLI


def _ids(batch: int = 64, length: int = 12, vocab: int = 50, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_WORD_ID, vocab, (batch, length), generator=gen)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    return ids.masked_fill(torch.arange(length)[None, :] >= lengths[:, None], 0)


def test_mask_words_follows_bert_80_10_10_and_never_touches_padding():
    ids = _ids(batch=4000, length=16, vocab=1000)
    inputs, targets = mask_words(ids, 1000, 0.15, torch.Generator().manual_seed(1))
    chosen = targets != 0
    assert not chosen[ids == 0].any() and (inputs[ids == 0] == 0).all()
    assert torch.equal(targets[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    rate = chosen.sum() / (ids != 0).sum()
    assert abs(float(rate) - 0.15) < 0.01
    masked = (inputs[chosen] == MASK_ID).float().mean()
    kept = (inputs[chosen] == ids[chosen]).float().mean()  # includes random draws of the same id
    assert abs(float(masked) - 0.8) < 0.02 and abs(float(kept) - 0.1) < 0.02
    assert (inputs[chosen] >= FIRST_WORD_ID).logical_or(inputs[chosen] == MASK_ID).all()


def test_mask_words_rejects_a_rate_outside_0_1():
    with pytest.raises(ValueError, match="rate"):
        mask_words(_ids(), 50, 1.5)


def _models(vocab: int = 50) -> list:
    common = dict(vocab_size=vocab, d_model=32, n_heads=4, n_layers=1, dropout=0.0, max_len=16)
    torch.manual_seed(0)
    return [CrossAttentionNLI(CrossAttentionConfig(**common)),
            PairEncoderNLI(PairEncoderConfig(**common))]


@pytest.mark.parametrize("index", [0, 1])
def test_the_head_is_tied_to_the_word_embedding_and_gradients_reach_the_encoder(index):
    model = _models()[index]
    mlm = MaskedWordModel(model)
    p, h = _ids(8, 10, seed=1), _ids(8, 7, seed=2)
    (p_in, p_gold), (h_in, h_gold) = (mask_words(t, 50, 0.5, torch.Generator().manual_seed(3))
                                      for t in (p, h))
    loss, n = mlm(p_in, h_in, (p_gold, h_gold))
    assert n == int((p_gold != 0).sum() + (h_gold != 0).sum()) > 0
    loss.backward()
    assert model.embed.words.weight.grad.abs().sum() > 0
    assert all(q.grad is not None and q.grad.abs().sum() > 0
               for q in model.encoder.parameters() if q.requires_grad)
    extra = [n for n, _ in mlm.named_parameters() if not n.startswith("model.")]
    assert not any("words" in n for n in extra)  # the output layer is the embedding itself
    feats, _ = mlm.states(p_in, h_in, (p_gold, h_gold))
    before = mlm.logits(feats).detach()
    with torch.no_grad():
        model.embed.words.weight[5] += 1.0
    after = mlm.logits(feats).detach()
    changed = (after - before).abs().amax(0) > 1e-6
    assert changed[5] and not changed[torch.arange(50) != 5].any()


def test_cross_attention_pretraining_learns_to_read_the_masked_word_off_the_other_sentence():
    """Hypothesis = premise: a word masked in one sentence is visible in the other; the pair
    MLM of the cross-attention model must learn to copy it through the alignment."""
    torch.manual_seed(0)
    model = _models(vocab=24)[0]
    mlm = MaskedWordModel(model)
    opt = torch.optim.Adam(mlm.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)

    def batch():
        ids = torch.randint(FIRST_WORD_ID, 24, (64, 8), generator=gen)
        p_in, p_gold = mask_words(ids, 24, 0.15, gen)
        h_in, h_gold = mask_words(ids, 24, 0.15, gen)
        both = (p_gold != 0) & (h_gold != 0)  # a word hidden in both sentences cannot be read
        return p_in, h_in, (p_gold.masked_fill(both, 0), h_gold.masked_fill(both, 0))

    for _ in range(150):
        loss, _ = mlm(*batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
    p_in, h_in, gold = batch()
    with torch.no_grad():
        feats, target = mlm.states(p_in, h_in, gold)
        acc = (mlm.logits(feats).argmax(-1) == target).float().mean()
    # own sentence alone: chance (1/20) plus the 10% of chosen words left visible
    assert acc > 0.4


def test_mlm_variant_parses_and_needs_a_positive_rate():
    assert nli.parse_word_variant("cross_attention+mlm") == ("cross_attention",
                                                             frozenset({"mlm"}))
    with pytest.raises(ValueError, match="mlm_rate"):
        nli.Config(word_variants=("cross_attention+mlm",), mlm_rate=0.0)


def test_fine_tuning_starts_from_the_pretrained_encoder_and_its_own_head():
    cfg = nli.Config(word_variants=("cross_attention+mlm",), word_d_model=32, word_heads=4,
                     min_steps=2, word_epochs=1.0, word_batch=8)
    texts = [("a man is cooking food", "a man cooks"), ("two dogs run", "animals sleep"),
             ("a girl reads", "a child reads a book")] * 4
    vocab = WordVocab.build([s for pair in texts for s in pair])
    pairs = encode_word_pairs(vocab, texts, [0, 2, 1] * 4, cfg.max_words)
    state, info = nli.pretrain_masked_words(cfg, "cross_attention", False, vocab.vocab_size,
                                            pairs, None)
    assert state and all(k.startswith(nli.PRETRAINED_PARTS) for k in state)
    assert info["steps"] >= 2 and 0.0 <= info["masked_word_accuracy_train"] <= 1.0
    torch.manual_seed(7)
    fresh = nli.word_model(cfg, "cross_attention", vocab.vocab_size, False)
    with pytest.raises(ValueError, match="pretrained"):
        nli.train_word_model(cfg, "cross_attention+mlm", vocab.vocab_size, pairs, pairs, 7, None)
    # loading keeps the pretrained parts and the seed's own freshly drawn head
    torch.manual_seed(7)
    model = nli.word_model(cfg, "cross_attention", vocab.vocab_size, False)
    model.load_state_dict(state, strict=False)
    assert torch.equal(model.embed.words.weight, state["embed.words.weight"])
    assert torch.equal(model.head[1].weight, fresh.head[1].weight)
