"""Tiny Shakespeare: loading through the resolver, the 90/10 split, the character tokenizer."""

from __future__ import annotations

import hashlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.data import (
    CATALOGUE,
    CharTokenizer,
    DataFile,
    Dataset,
    DataUnavailableError,
    load_tiny_shakespeare,
    train_val_split,
)

TS_CHARS = 1_115_394


def test_tiny_shakespeare_from_the_mirror(shared_data, data_env, monkeypatch):
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(shared_data))
    text = load_tiny_shakespeare(offline=True)
    assert len(text) == TS_CHARS
    assert len(set(text)) == 65
    train, val = train_val_split(text)
    assert (len(train), len(val)) == (1_003_854, 111_540)  # nanoGPT: int(0.9 * n) train chars
    assert train + val == text
    tok = CharTokenizer(text)
    assert tok.vocab_size == 65
    assert tok.vocab[:3] == "\n !" and tok.vocab[-1] == "z"
    ids = tok.encode(text)
    assert len(ids) == TS_CHARS and max(ids) == 64
    assert tok.decode(ids) == text


def test_load_goes_through_the_resolver_and_keeps_characters(data_env, http_server, monkeypatch):
    body = "First Citizen:\r\nBefore we proceed any further, hear me speak.\n"
    raw = body.encode()
    entry = DataFile(
        "tinyshakespeare",
        "input.txt",
        sha256=hashlib.sha256(raw).hexdigest(),
        url=http_server.serve("/input.txt", raw),
    )
    fake = Dataset("tinyshakespeare", "test copy", "public domain", "-", (entry,))
    monkeypatch.setitem(CATALOGUE, "tinyshakespeare", fake)
    assert load_tiny_shakespeare(progress=False) == body  # "\r\n" is not translated
    assert http_server.hits == ["/input.txt"]
    assert (data_env / "tinyshakespeare" / "input.txt").read_bytes() == raw


def test_load_offline_without_a_copy_says_where_it_looked(data_env):
    with pytest.raises(DataUnavailableError) as err:
        load_tiny_shakespeare(offline=True)
    message = str(err.value)
    assert "tinyshakespeare/input.txt" in message
    assert str(data_env / "tinyshakespeare" / "input.txt") in message
    assert "raw.githubusercontent.com/karpathy/char-rnn" in message


def test_split_reads_the_fraction_as_a_decimal():
    assert train_val_split("abcdefghij") == ("abcdefghi", "j")
    # In binary, 1 - 0.9 is 0.09999999999999998, and 10 * that floors to 0 train characters.
    assert train_val_split("abcdefghij", 0.9) == ("a", "bcdefghij")


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3000), percent=st.integers(1, 99))
def test_split_sizes_and_order(n, percent):
    text = "".join(chr(97 + i % 26) for i in range(n))
    n_train = n * (100 - percent) // 100
    if 0 < n_train < n:
        train, val = train_val_split(text, percent / 100)
        assert (train, val) == (text[:n_train], text[n_train:])
    else:
        with pytest.raises(ValueError, match="leaves an empty"):
            train_val_split(text, percent / 100)


@pytest.mark.parametrize(
    ("bad", "expected"),
    [(0, "> 0, got 0.0"), (1, "< 1, got 1.0"), (0.0, "> 0, got 0.0"), (1.0, "< 1, got 1.0"),
     (-0.1, "> 0, got -0.1"), (1.5, "< 1, got 1.5"), (float("nan"), "a finite number, got nan"),
     (float("inf"), "a finite number, got inf")],
)
def test_split_rejects_fractions_outside_zero_one(bad, expected):
    with pytest.raises(ValueError, match=f"val_fraction must be {expected}$"):
        train_val_split("some text", bad)


def test_split_rejects_wrong_types():
    with pytest.raises(TypeError, match="val_fraction must be a real number, got str"):
        train_val_split("some text", "0.1")
    with pytest.raises(TypeError, match="val_fraction must be a real number, got bool"):
        train_val_split("some text", True)
    with pytest.raises(TypeError, match="text must be a str"):
        train_val_split(["a", "b"], 0.5)


def test_tokenizer_ids_follow_sorted_characters():
    tok = CharTokenizer("hello")
    assert tok.vocab == "ehlo" and tok.vocab_size == 4
    assert tok.encode("hello") == [1, 0, 2, 2, 3]
    assert tok.encode("") == []
    assert tok.decode([3, 2, 0]) == "ole"
    assert tok.decode(torch.tensor([1, 0, 2, 2, 3])) == "hello"
    assert tok.decode(torch.tensor([], dtype=torch.long)) == ""


@settings(max_examples=100, deadline=None)
@given(text=st.text(min_size=1, max_size=200))
def test_tokenizer_round_trip(text):
    tok = CharTokenizer(text)
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert list(tok.vocab) == sorted(set(text))
    assert CharTokenizer(tok.vocab).encode(text) == ids  # rebuilt from its vocabulary


def test_tokenizer_unknown_character_names_it_and_its_position():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9\) at position 2.*3 characters"):
        tok.encode("abé")


def test_tokenizer_decode_rejects_bad_ids():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"ids\[1\] = 3 is not a valid id; expected 0 <= id < 3"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match=r"ids\[0\] = -1"):
        tok.decode([-1])
    with pytest.raises(TypeError, match=r"ids\[0\] must be an int"):
        tok.decode([1.0])
    with pytest.raises(TypeError, match=r"ids\[0\] must be an int"):
        tok.decode([True])
    with pytest.raises(TypeError, match="ids must be an iterable of ints"):
        tok.decode("abc")


def test_tokenizer_rejects_empty_or_non_text():
    with pytest.raises(ValueError, match="at least one character"):
        CharTokenizer("")
    with pytest.raises(TypeError, match="text must be a str"):
        CharTokenizer(["a", "b"])
    with pytest.raises(TypeError, match="text must be a str"):
        CharTokenizer("ab").encode(b"ab")
