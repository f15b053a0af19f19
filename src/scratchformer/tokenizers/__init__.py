"""Tokenizers written from scratch: byte-level BPE with a fast trainer and Hugging Face interop."""

from scratchformer.tokenizers.bpe import DEFAULT_SPECIAL_TOKENS, BPETokenizer
from scratchformer.tokenizers.bpe_train import TrainStats, count_chunks, merge_word, train_merges
from scratchformer.tokenizers.pretokenize import GPT2_PATTERN, GPT4_PATTERN, PATTERNS, split

__all__ = [
    "DEFAULT_SPECIAL_TOKENS",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "PATTERNS",
    "BPETokenizer",
    "TrainStats",
    "count_chunks",
    "merge_word",
    "split",
    "train_merges",
]
