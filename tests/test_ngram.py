"""The byte n-gram model: normalised distributions, consistent scoring, learning, sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scratchformer.models.ngram import MAX_ORDER, ByteNGram

TEXT = ("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
        "class Point:\n    def __init__(self, x):\n        self.x = x\n")


@pytest.mark.parametrize("order", range(1, MAX_ORDER + 1))
def test_next_byte_probabilities_sum_to_one_at_every_context(order: int) -> None:
    model = ByteNGram(order).fit([TEXT, "x = 1\n" * 5])
    rng = np.random.default_rng(order)
    histories = [b"", b"d", b"def ", b"    ret", b"\xff\xfe\x00zz", "é".encode()]
    histories += [bytes(rng.integers(0, 256, size=int(k)).tolist()) for k in range(8)]
    histories += [TEXT.encode()[:i] for i in range(0, len(TEXT), 7)]
    probs = model.next_distribution(histories)
    assert probs.shape == (len(histories), 256)
    assert (probs > 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_scoring_a_text_agrees_with_the_next_byte_distribution() -> None:
    model = ByteNGram(4).fit([TEXT])
    probe = "def mul(a, b):\n    return a * b\n"
    raw = probe.encode()
    p = model.byte_probs(probe)
    expected = [model.next_distribution([raw[:i]])[0, raw[i]] for i in range(len(raw))]
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert model.nll_bits(probe) == pytest.approx(-np.log2(expected).sum())


def test_bits_per_byte_fall_as_a_repeated_text_is_seen_more() -> None:
    text = "for i in range(10):\n    total += i * i\n"
    scores = [ByteNGram(5).fit([text * k]).bits_per_byte([text]) for k in (1, 4, 16)]
    assert scores[0] > scores[1] > scores[2]
    assert scores[2] < 1.0


def test_higher_order_models_a_repetitive_text_better() -> None:
    text = "abcdefgh" * 50
    scores = [ByteNGram(o).fit([text]).bits_per_byte([text]) for o in (1, 2, 4)]
    assert scores[0] > scores[1] > scores[2]
    assert scores[0] == pytest.approx(3.0, abs=0.05)  # 8 equiprobable bytes


def test_grams_do_not_cross_file_boundaries() -> None:
    joined = ByteNGram(2).fit(["ab"])
    split = ByteNGram(2).fit(["a", "b"])
    # "a" followed by "b" is only seen when both bytes are in one file
    assert joined.next_distribution([b"a"])[0, ord("b")] > \
        split.next_distribution([b"a"])[0, ord("b")]


def test_greedy_extension_continues_a_learned_pattern() -> None:
    model = ByteNGram(3).fit(["xyz" * 40])
    out = model.extend(["xy"], 6, lambda logits: logits.argmax(dim=-1))
    assert out == [b"xyzxyzxy"]


def test_sampling_uses_the_given_chooser_reproducibly() -> None:
    model = ByteNGram(3).fit([TEXT])

    def sampler(seed: int):
        gen = torch.Generator().manual_seed(seed)
        return lambda logits: torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)[:, 0]

    a = model.extend(["def ", "class "], 20, sampler(0))
    b = model.extend(["def ", "class "], 20, sampler(0))
    assert a == b and all(len(x) in (24, 26) for x in a)


def test_bad_use_is_refused() -> None:
    with pytest.raises(ValueError, match="order must be <="):
        ByteNGram(MAX_ORDER + 1)
    with pytest.raises(ValueError):
        ByteNGram(0)
    with pytest.raises(RuntimeError, match="not been fitted"):
        ByteNGram(3).byte_probs("abc")
    with pytest.raises(ValueError, match="no bytes"):
        ByteNGram(2).fit(["ab"]).bits_per_byte([""])
