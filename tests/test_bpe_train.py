"""The fast BPE trainer learns exactly the naive trainer's merges, within the derived bounds."""

from __future__ import annotations

import pytest
from bpe_naive import train_naive
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.tokenizers import count_chunks, merge_word, train_merges

SAMPLE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\nFirst Citizen:\nFirst, you know Caius Marcius is chief "
    "enemy to the people.\n\nAll:\nWe know't, we know't.\n\n"
    "It's 1999 and 2024: they'll say we've 12345 reasons, I'd think; I'm sure you're right.\n"
)

# name -> (texts, merges asked for, min_frequency, pattern)
CORPORA = {
    "runs of one letter": (["aaaaaa", "aaaaaaa aa a aaa aaaa", "aaaaaaaaaaaaaaaa"], 12, 1, "gpt2"),
    "overlapping pairs": (["abababab aab abba aaab bbba", "ababa babab"], 15, 1, "gpt2"),
    "unicode": (
        [
            "héllo wörld naïve café",
            "🙂🙂🙂 👩\u200d👩\u200d👧 e\u0301e\u0301",
            "日本語の文章 日本",
            "שלום עולם",
            "\x00\x01\x7f\x00\x01",
        ],
        40,
        1,
        "gpt2",
    ),
    "empty lines and whitespace": (
        ["\n\n\n\nx\n\n \n", "", "   \t\t\n\n  y  ", "\r\n\r\n"],
        20,
        1,
        "gpt2",
    ),
    "prose, GPT-2 split": ([SAMPLE * 3], 150, 2, "gpt2"),
    "prose, GPT-4 split": ([SAMPLE * 3], 150, 2, "gpt4"),
    "several texts, frequency 3": ([SAMPLE, SAMPLE.upper(), SAMPLE[::-1]], 200, 3, "gpt2"),
}


@pytest.mark.parametrize("name", list(CORPORA))
def test_fast_trainer_matches_naive(name):
    texts, n, min_frequency, pattern = CORPORA[name]
    fast = train_merges(texts, n, min_frequency=min_frequency, pattern=pattern).merges
    naive, _ = train_naive(texts, n, pattern=pattern, min_frequency=min_frequency)
    assert fast == naive
    assert len(fast) > 0


def test_fast_trainer_matches_naive_on_tiny_shakespeare(shared_data, data_env, monkeypatch):
    from scratchformer.data import load_tiny_shakespeare

    monkeypatch.setenv("SCRATCHFORMER_DATA", str(shared_data))
    text = load_tiny_shakespeare(offline=True, progress=False)[:30_000]
    fast = train_merges(text, 200).merges
    naive, _ = train_naive(text, 200)
    assert fast == naive and len(fast) == 200


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.text(alphabet="ab é🙂\n'1", max_size=60), max_size=5),
    n=st.integers(0, 25),
    min_frequency=st.integers(1, 3),
    pattern=st.sampled_from(["gpt2", "gpt4"]),
)
def test_fast_trainer_matches_naive_on_random_texts(texts, n, min_frequency, pattern):
    fast = train_merges(texts, n, min_frequency=min_frequency, pattern=pattern).merges
    naive, _ = train_naive(texts, n, pattern=pattern, min_frequency=min_frequency)
    assert fast == naive


def test_ties_go_to_the_smallest_pair():
    # ("b","a") and ("a","b") both occur once; (97, 98) < (98, 97), so "ab" is merged first.
    assert train_merges(["ba", "ab"], 1, min_frequency=1).merges == [(97, 98)]
    # A more frequent pair beats a smaller one.
    assert train_merges(["ab", "zz", "zz"], 1, min_frequency=1).merges == [(122, 122)]


def test_training_stops_when_no_pair_is_frequent_enough():
    stats = train_merges("abc abd", 10, min_frequency=2)
    assert stats.merges == [(97, 98)]  # "ab" occurs twice; after it, every pair occurs once
    assert train_merges("", 10).merges == []


def test_overlapping_pairs_merge_from_the_left():
    assert merge_word([1, 1, 1], (1, 1), 9) == [9, 1]
    assert merge_word([1, 1, 1, 1], (1, 1), 9) == [9, 9]
    assert merge_word([1, 2, 1, 2, 2], (1, 2), 9) == [9, 9, 2]


def test_chunks_are_counted_once_with_frequencies():
    counts = count_chunks(["the cat the", " the"])
    assert counts == {"the": 1, " cat": 1, " the": 2}


def test_work_stays_within_the_derived_bounds():
    """The counting argument of docs/derivations/bpe-training.md, on real prose."""
    texts = [SAMPLE * 5, SAMPLE.lower()]
    stats = train_merges(texts, 400, min_frequency=1)
    chunks = count_chunks(texts)
    lengths = [len(c.encode("utf-8")) for c in chunks]
    T, U = sum(lengths), len(lengths)
    assert (stats.positions, stats.distinct_chunks) == (T, U)
    # Every visit shortens its chunk by at least one token, and a chunk cannot shrink below 1.
    assert stats.chunk_visits <= T - U
    # A chunk of length l is visited at lengths l, l-1, ..., 2 at most.
    assert stats.visited_length <= sum(l * (l + 1) // 2 - 1 for l in lengths)
    assert stats.initial_pairs <= T - U
    assert stats.heap_pushes <= stats.initial_pairs + 4 * (T - U)
    # The naive trainer counts every remaining pair before every merge: far more work.
    _, naive_work = train_naive(texts, 400, min_frequency=1)
    assert naive_work > 10 * stats.visited_length


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError, match="num_merges"):
        train_merges("abc", -1)
    with pytest.raises(TypeError, match="num_merges"):
        train_merges("abc", 2.0)
    with pytest.raises(ValueError, match="min_frequency"):
        train_merges("abc", 2, min_frequency=0)
    with pytest.raises(TypeError, match="texts"):
        train_merges(["abc", b"bytes"], 2)
    with pytest.raises(ValueError, match="regular expression"):
        train_merges("abc", 2, pattern="(unclosed")
