"""Hugging Face interop: our tokenizer.json and GPT-2 files give the same ids in ``tokenizers``."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scratchformer.tokenizers import PATTERNS, BPETokenizer
from scratchformer.tokenizers.hf_interop import (
    BYTE_TO_CHAR,
    export_hf,
    load_gpt2_files,
    save_gpt2_files,
    str_to_token,
    token_to_str,
)

tokenizers = pytest.importorskip("tokenizers")

CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "You are all resolved rather to die than to famish? It's 2024; they'll say we've won.\n"
    "Ünïcödé: café naïve 🙂🙂 日本語 e\u0301 — «ok» 12345 67890\n\n\n    indented\tline\n"
) * 5
# Hypothesis strings from assigned, non-surrogate characters: Hugging Face's regex engine and
# the `regex` package may disagree on code points assigned in different Unicode versions.
TEXT = st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=120) | st.text(
    st.sampled_from("ab 'sll\n\t1234🙂é\u0301<|>"), max_size=120
)
SPECIAL_CASES = "\n".join(
    [
        "I'm here  12345 you're   \n\n  \t x",
        "👩\u200d👩\u200d👧 e\u0301\u0302 \x00\x01\x1b[0m\x7f\u200b\ufeff",
        "a" * 300 + " " * 50 + "\n" * 20,
    ]
)


def _hf_export(tok: BPETokenizer, tmp_path):
    return tokenizers.Tokenizer.from_file(str(export_hf(tok, tmp_path / "tokenizer.json")))


@pytest.fixture(scope="module")
def trained() -> dict[str, BPETokenizer]:
    return {p: BPETokenizer.train(CORPUS, 400, pattern=p, min_frequency=1) for p in PATTERNS}


def test_byte_alphabet_is_gpt2s():
    assert len(set(BYTE_TO_CHAR.values())) == 256
    assert sorted(BYTE_TO_CHAR.values()) == sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    assert (BYTE_TO_CHAR[ord(" ")], BYTE_TO_CHAR[ord("\n")], BYTE_TO_CHAR[ord("A")]) == (
        "Ġ",
        "Ċ",
        "A",
    )
    byte_level = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for text in ["hello world\n", "é🙂\x00\x7f", "ÿ¡¬®"]:
        [(mapped, _)] = byte_level.pre_tokenize_str(text)
        assert mapped == token_to_str(text.encode("utf-8"))
        assert str_to_token(mapped) == text.encode("utf-8")


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_exported_tokenizer_json_gives_the_same_ids(trained, tmp_path, pattern):
    tok = trained[pattern]
    hf = _hf_export(tok, tmp_path)
    for text in (CORPUS, SPECIAL_CASES, "x<|endoftext|>y<|endoftext|>"):
        ours = tok.encode(text, allowed_special="all")
        assert hf.encode(text).ids == ours
        assert hf.decode(ours, skip_special_tokens=False) == text


def test_exported_tokenizer_matches_on_tiny_shakespeare(
    shared_data, data_env, monkeypatch, tmp_path
):
    from scratchformer.data import load_tiny_shakespeare

    monkeypatch.setenv("SCRATCHFORMER_DATA", str(shared_data))
    text = load_tiny_shakespeare(offline=True, progress=False)
    tok = BPETokenizer.train(text, 512)
    ours = tok.encode(text)
    assert _hf_export(tok, tmp_path).encode(text).ids == ours
    assert tok.decode(ours) == text


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """Hugging Face tokenizers read from our exported tokenizer.json files, by pattern."""
    return {p: _hf_export(t, tmp_path_factory.mktemp(p)) for p, t in trained.items()}


@settings(max_examples=120, deadline=None)
@given(text=TEXT)
@example(text=SPECIAL_CASES)
def test_exported_tokenizer_matches_on_random_strings(trained, exported, text):
    for pattern, hf in exported.items():
        assert hf.encode(text).ids == trained[pattern].encode(text, allowed_special="all")


def _write_gpt2_files(tok: BPETokenizer, folder):
    """GPT-2's layout, written here by hand: the 256 byte tokens first in the order of GPT-2's
    byte table, then the merged tokens in shuffled order, then <|endoftext|>."""
    byte_strings = sorted(BYTE_TO_CHAR.values(), key=ord)  # printable bytes, then shifted ones
    merged = [token_to_str(tok.vocab[256 + k]) for k in range(len(tok.merges))]
    random.Random(0).shuffle(merged)
    vocab = {s: i for i, s in enumerate([*byte_strings, *merged, "<|endoftext|>"])}
    merges = [f"{token_to_str(tok.vocab[a])} {token_to_str(tok.vocab[b])}" for a, b in tok.merges]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    return str(folder / "vocab.json"), str(folder / "merges.txt")


@pytest.fixture(scope="module")
def gpt2_pair(trained, tmp_path_factory):
    """(ours, Hugging Face's) byte-level BPE loaded from the same vocab.json + merges.txt."""
    vocab_path, merges_path = _write_gpt2_files(trained["gpt2"], tmp_path_factory.mktemp("gpt2"))
    ours = load_gpt2_files(vocab_path, merges_path)
    hf = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(vocab_path, merges_path))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tokenizers.decoders.ByteLevel()
    return ours, hf


def test_gpt2_files_load_with_their_ids(gpt2_pair, trained):
    ours, _ = gpt2_pair
    n = trained["gpt2"].vocab_size
    assert len(trained["gpt2"].merges) == n - 257  # a full vocabulary was learned
    assert ours.vocab[0] == b"!" and ours.special_tokens == {"<|endoftext|>": n - 1}
    assert ours.vocab_size == n
    ids = ours.encode(CORPUS)
    assert ids != trained["gpt2"].encode(CORPUS)  # other ids ...
    assert [ours.vocab[i] for i in ids] == [  # ... for the same tokens
        trained["gpt2"].token_bytes(i) for i in trained["gpt2"].encode(CORPUS)
    ]


@settings(max_examples=120, deadline=None)
@given(text=TEXT)
@example(text=CORPUS)
@example(text=SPECIAL_CASES)
def test_gpt2_files_encode_like_hugging_face(gpt2_pair, text):
    ours, hf = gpt2_pair
    ids = ours.encode(text, disallowed_special=())
    assert hf.encode(text).ids == ids
    assert ours.decode(ids) == hf.decode(ids) == text


def test_save_gpt2_files_round_trip(trained, tmp_path):
    tok = trained["gpt4"]
    back = load_gpt2_files(*save_gpt2_files(tok, tmp_path), pattern="gpt4")
    assert back.vocab == tok.vocab and back.merges == tok.merges
    assert back.special_tokens == tok.special_tokens


def test_malformed_gpt2_files_raise(tmp_path):
    vocab = {token_to_str(bytes([b])): b for b in range(256)}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n", "utf-8")
    with pytest.raises(ValueError, match=r"merges\.txt:2: expected 'left right'"):
        load_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    (tmp_path / "merges.txt").write_text("a b\n", "utf-8")
    with pytest.raises(ValueError, match="merged token is not in the vocab"):
        load_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    with pytest.raises(ValueError, match="not in GPT-2's byte alphabet"):
        str_to_token("a b")
