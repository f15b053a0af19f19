"""The byte-level BPE tokenizer: exact round trips, rank-order encoding, special tokens, files."""

from __future__ import annotations

import json

import pytest
from bpe_naive import encode_naive
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scratchformer.tokenizers import BPETokenizer, split

CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\nFirst Citizen:\nFirst, you know Caius Marcius is chief "
    "enemy to the people.\n\nAll:\nWe know't, we know't.<|endoftext|>"
    "Ünïcödé: café naïve 🙂🙂 日本語 e\u0301 — «ok» 12345 67890\n\n\n    indented\tline\n"
) * 4

# Every unicode scalar value except surrogates (UTF-8 cannot encode them): emoji, combining
# marks, control characters, unassigned code points, private use.
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)
LONG_RUNS = st.builds(
    lambda c, n, t: c * n + t, st.sampled_from(["a", " ", "\n", "🙂", "\u0301", "ab"]),
    st.integers(0, 3000), ANY_TEXT,
)


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, 400, special_tokens=("<|endoftext|>", "<|pad|>"))


@pytest.fixture(scope="module")
def tok4() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, 400, pattern="gpt4", min_frequency=1)


def test_trained_layout(tok):
    assert [tok.vocab[b] for b in range(256)] == [bytes([b]) for b in range(256)]
    assert len(tok.merges) == 400 - 256 - 2
    for k, (a, b) in enumerate(tok.merges):
        assert tok.vocab[256 + k] == tok.vocab[a] + tok.vocab[b]
        assert a < 256 + k and b < 256 + k  # a merge only uses tokens created before it
    assert tok.special_tokens == {"<|endoftext|>": 398, "<|pad|>": 399}
    assert tok.vocab_size == len(tok) == 400


@settings(max_examples=150, deadline=None)
@given(text=ANY_TEXT | LONG_RUNS)
@example(text="👩\u200d👩\u200d👧\u200d👦 e\u0301\u0302\u0303 \x00\x01\x1b[0m\x7f\u200b\ufeff")
@example(text="a" * 5000)
@example(text="")
@example(text="\n\n\n\r\n \n")
def test_decode_inverts_encode(tok, tok4, text):
    for t in (tok, tok4):
        ids = t.encode(text)
        assert t.decode(ids, errors="strict") == text
        assert t.decode_bytes(ids) == text.encode("utf-8")


@settings(max_examples=100, deadline=None)
@given(text=st.text(st.sampled_from("aeht ,.\n'sIl0123🙂é"), max_size=120) | ANY_TEXT)
def test_encoding_equals_applying_merges_in_rank_order(tok, tok4, text):
    assert tok.encode_ordinary(text) == encode_naive(text, tok.merges, "gpt2")
    assert tok4.encode_ordinary(text) == encode_naive(text, tok4.merges, "gpt4")


def test_encoding_equals_rank_order_on_the_corpus(tok):
    assert tok.encode_ordinary(CORPUS) == encode_naive(CORPUS, tok.merges)
    assert len(tok.encode_ordinary(CORPUS)) < len(CORPUS.encode("utf-8")) / 2  # it compresses


def test_chunk_cache_does_not_change_results(tok):
    text = "hear me speak, speak!"
    first = tok.encode(text)
    assert tok._cache  # the chunks are cached now
    assert tok.encode(text) == first
    tok._cache.clear()
    assert tok.encode(text) == first


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_decoding_any_ids_follows_the_errors_policy(tok, data):
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=30))
    raw = tok.decode_bytes(ids)
    assert tok.decode(ids) == raw.decode("utf-8", errors="replace")
    assert tok.decode(ids, errors="ignore") == raw.decode("utf-8", errors="ignore")
    try:
        expected = raw.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(UnicodeDecodeError):
            tok.decode(ids, errors="strict")
    else:
        assert tok.decode(ids, errors="strict") == expected


def test_invalid_utf8_becomes_replacement_characters(tok):
    assert tok.decode([0xC3]) == "\ufffd"  # the first half of a two-byte character
    assert tok.decode([0xC3, 0xA9]) == "é"  # both halves
    assert tok.decode([0xFF, ord("a"), 0x80]) == "\ufffda\ufffd"
    assert tok.decode_bytes([0xC3]) == b"\xc3"


def test_unknown_and_malformed_ids_raise(tok):
    with pytest.raises(ValueError, match=r"token id 400 is not in the vocabulary \(ids 0..399"):
        tok.decode([1, 400])
    with pytest.raises(ValueError, match="-1"):
        tok.decode([-1])
    with pytest.raises(TypeError, match="bool"):
        tok.decode([True])
    with pytest.raises(TypeError, match="float"):
        tok.decode([1.0])


def test_numpy_and_torch_ids_decode(tok):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    ids = tok.encode("hear me speak")
    assert tok.decode(np.array(ids)) == "hear me speak"
    assert tok.decode(torch.tensor(ids)) == "hear me speak"


def test_special_tokens_are_refused_allowed_or_plain(tok):
    text = "a<|endoftext|>b<|pad|>"
    eot, pad = tok.special_tokens["<|endoftext|>"], tok.special_tokens["<|pad|>"]
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>' at offset 1"):
        tok.encode(text)
    ids = tok.encode(text, allowed_special="all")
    assert ids == [*tok.encode("a"), eot, *tok.encode("b"), pad]
    assert tok.decode(ids) == text
    with pytest.raises(ValueError, match="pad"):
        tok.encode(text, allowed_special={"<|endoftext|>"})
    only_eot = tok.encode(text, allowed_special={"<|endoftext|>"}, disallowed_special=())
    assert eot in only_eot and pad not in only_eot
    plain = tok.encode(text, disallowed_special=())
    assert plain == tok.encode_ordinary(text)
    assert eot not in plain and pad not in plain
    assert tok.decode(plain) == text
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode(text, allowed_special={"<|nope|>"})
    with pytest.raises(TypeError, match="allowed_special"):
        tok.encode(text, allowed_special="<|endoftext|>")


def test_special_tokens_are_never_merged():
    # Special-token strings in a training text separate it and teach no merges: here the only
    # other text, "abc", occurs once, so nothing reaches min_frequency=2.
    tok = BPETokenizer.train("<|endoftext|>" * 50 + "abc", 300)
    assert tok.merges == []
    ids = tok.encode("ab<|endoftext|>c", allowed_special="all")
    assert ids == [97, 98, tok.special_tokens["<|endoftext|>"], 99]


def test_encode_batch_equals_encode(tok):
    texts = ["hear me", "", "speak 🙂", "x<|pad|>"]
    assert tok.encode_batch(texts, allowed_special="all") == [
        tok.encode(t, allowed_special="all") for t in texts
    ]


def test_save_and_load_round_trip(tok, tok4, tmp_path):
    for t in (tok, tok4):
        path = t.save(tmp_path / "tok.json")
        data = json.loads(path.read_text("utf-8"))
        assert data["format"] == "scratchformer-bpe" and data["version"] == 1
        back = BPETokenizer.load(path)
        assert back.vocab == t.vocab and back.merges == t.merges
        assert back.special_tokens == t.special_tokens and back.pattern == t.pattern
        assert back.encode(CORPUS, allowed_special="all") == t.encode(
            CORPUS, allowed_special="all"
        )


def test_load_refuses_other_files(tmp_path):
    (tmp_path / "a.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a scratchformer-bpe tokenizer"):
        BPETokenizer.load(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"format": "scratchformer-bpe", "version": 99}')
    with pytest.raises(ValueError, match="version 99"):
        BPETokenizer.load(tmp_path / "b.json")
    (tmp_path / "d.json").write_text('{"format": "scratchformer-bpe", "version": 1}')
    with pytest.raises(ValueError, match="lacks the field"):
        BPETokenizer.load(tmp_path / "d.json")
    (tmp_path / "c.json").write_text("not json")
    with pytest.raises(ValueError, match="not JSON"):
        BPETokenizer.load(tmp_path / "c.json")


def test_constructor_checks_the_vocabulary():
    vocab = {b: bytes([b]) for b in range(256)}
    with pytest.raises(ValueError, match="missing byte"):
        BPETokenizer({i: t for i, t in vocab.items() if i != 7}, [])
    with pytest.raises(ValueError, match="merged token is not in the vocab"):
        BPETokenizer(vocab, [(97, 98)])
    with pytest.raises(ValueError, match="twice"):
        BPETokenizer({**vocab, 300: b"a"}, [])
    with pytest.raises(ValueError, match="already taken"):
        BPETokenizer(vocab, [], {"<s>": 5})
    with pytest.raises(ValueError, match="vocab_size must be >= 256"):
        BPETokenizer.train("abc", 256)
    with pytest.raises(TypeError, match="vocab_size"):
        BPETokenizer.train("abc", 300.0)
    with pytest.raises(TypeError, match="text"):
        BPETokenizer.from_merges([]).encode(b"bytes")


@settings(max_examples=100, deadline=None)
@given(text=ANY_TEXT, pattern=st.sampled_from(["gpt2", "gpt4", r"\d+", r"[a-z]+|\s"]))
def test_pretokenization_loses_nothing(text, pattern):
    assert "".join(split(text, pattern)) == text


def test_pretokenization_patterns():
    assert split("I'm here  12345 you're") == ["I", "'m", " here", " ", " 12345", " you", "'re"]
    assert split("I'M 12345\n\nx", "gpt4") == ["I", "'M", " ", "123", "45", "\n\n", "x"]


def test_cli_train_encode_decode(tmp_path, capsys):
    from scratchformer.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, "utf-8")
    out = tmp_path / "tok.json"
    args = ["tokenizer", "train", "--input", str(corpus), "--vocab-size", "300", "--out", str(out)]
    assert main([*args, "--hf-export", str(tmp_path / "hf.json")]) == 0
    tok = BPETokenizer.load(out)
    assert tok.vocab_size == 300 and tok.special_tokens == {"<|endoftext|>": 299}
    assert (tmp_path / "hf.json").exists()
    capsys.readouterr()

    text = "hear me speak 🙂<|endoftext|>"
    base = ["--tokenizer", str(out)]
    assert main(["tokenizer", "encode", *base, "--text", text, "--allow-special"]) == 0
    printed = capsys.readouterr().out.split()
    assert [int(i) for i in printed] == tok.encode(text, allowed_special="all")
    assert main(["tokenizer", "decode", *base, "--no-newline", *printed]) == 0
    assert capsys.readouterr().out == text

    assert main(["tokenizer", "encode", *base, "--text", text]) == 2  # special refused
    assert "special token" in capsys.readouterr().err
    assert main(["tokenizer", "decode", *base, "1", "100000"]) == 2
    assert "100000 is not in the vocabulary" in capsys.readouterr().err


def _adversarial() -> BPETokenizer:
    """Merges whose ranks do not follow creation order, so rounds must be kept apart."""
    vocab = {b: bytes([b]) for b in range(256)}
    vocab.update({300: b"aa", 301: b"aaa", 302: b"aaaa", 303: b"ab", 304: b"aab", 305: b"ba"})
    merges = [(300, 97), (97, 97), (300, 300), (97, 98), (300, 98), (98, 97)]
    return BPETokenizer(vocab, merges, {})


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_priority_queue_merging_equals_the_plain_loop(tok, tok4, data):
    for t, alphabet in ((tok, "abcdefghij ,.'\n🙂é"), (tok4, "the quick"), (_adversarial(), "ab")):
        text = data.draw(st.text(st.sampled_from(alphabet), min_size=2, max_size=300))
        ids = [t._byte_ids[b] for b in text.encode("utf-8")]
        assert t._merge_long(list(ids)) == t._merge(list(ids))


def test_one_long_chunk_encodes_fast_and_exactly(tok):
    import random
    import time

    rng = random.Random(0)
    text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(100_000))
    start = time.perf_counter()
    ids = tok.encode(text)
    assert time.perf_counter() - start < 2.0  # was ~5-20 s: quadratic in the chunk's length
    assert tok.decode(ids, errors="strict") == text
    assert len(split(text)) == 1  # one chunk indeed
    assert text not in tok._cache  # long chunks are not cached


@pytest.mark.parametrize(("changes", "message"), [
    ({"vocab": []}, "'vocab' must be a non-empty object"),
    ({"vocab": {}}, "'vocab' must be a non-empty object"),
    ({"vocab": {"x": "61"}}, "'vocab' key 'x' is not a token id"),
    ({"vocab": {"1": "zz"}}, "'vocab' entry 1 is not hex"),
    ({"vocab": {"1": 5}}, "'vocab' entry 1 is not hex"),
    ({"vocab": {"99999999999": "61"}}, "is larger than"),
    ({"vocab": {"999999999999999": "61"}}, "is not a token id"),
    ({"merges": {"a": 1}}, "'merges' must be a list"),
    ({"merges": [[1, 2, 3]]}, "merge 0 must be"),
    ({"merges": [[1.5, 2]]}, "merge 0 must be"),
    ({"merges": [[97, 97]]}, "merged token is not in the vocab"),
    ({"special_tokens": []}, "'special_tokens' must be an object"),
    ({"special_tokens": {"<s>": "1"}}, "needs a non-negative int id"),
    ({"special_tokens": {"<s>": 2**40}}, "larger than"),
    ({"pattern": 5}, "'pattern' must be a name or a regex"),
    ({"pattern": "("}, "not a valid regular expression"),
    ({"pattern": "x" * 20_000}, "'pattern' must be a name or a regex"),
    ({"version": [1]}, "unsupported scratchformer-bpe version"),
])
def test_malformed_fields_are_one_value_error_naming_the_file(tmp_path, changes, message):
    data = BPETokenizer.from_merges([], []).to_dict()
    data.update(changes)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as err:
        BPETokenizer.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_files_that_are_not_utf8_or_nest_too_deep_are_value_errors(tmp_path):
    (tmp_path / "a.json").write_bytes(b'{"format": "\xff"}')
    with pytest.raises(ValueError, match="not UTF-8"):
        BPETokenizer.load(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("[" * 100_000)
    with pytest.raises(ValueError, match="not JSON"):
        BPETokenizer.load(tmp_path / "b.json")


def test_a_catastrophic_custom_pattern_is_stopped_by_the_time_limit(tmp_path):
    import time

    data = BPETokenizer.from_merges([], []).to_dict()
    data["pattern"] = r"(a|aa)+$|\s+|."
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    tok = BPETokenizer.load(path)  # a custom pattern loads ...
    assert tok.decode(tok.encode("a b")) == "a b"  # ... and works on ordinary text
    start = time.perf_counter()
    with pytest.raises(ValueError, match="catastrophic backtracking"):
        tok.encode("a" * 40 + "b")  # would take longer than the universe's age
    assert time.perf_counter() - start < 5


def test_save_is_atomic_with_umask_permissions(tok, tmp_path, monkeypatch):
    import os

    old = os.umask(0o022)
    try:
        path = tok.save(tmp_path / "t.json")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        BPETokenizer.from_merges([]).save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["t.json"]
    with pytest.raises(IsADirectoryError):
        tok.save(tmp_path)
