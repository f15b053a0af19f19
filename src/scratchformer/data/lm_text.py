"""Text for language models: a tokenizer's train/validation ids and random next-token windows.

One path for every character or BPE language-model study: text -> tokenizer -> id tensors ->
``random_batch`` windows. Each validation token carries the number of characters it covers, so
models with different tokenizers are scored on one scale (bits per character).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from scratchformer.data.shakespeare import CharTokenizer, load_tiny_shakespeare, train_val_split
from scratchformer.tokenizers import BPETokenizer

__all__ = ["TokenizedText", "bpe_data", "char_data", "random_batch", "shakespeare_split"]


@dataclass
class TokenizedText:
    """A tokenizer and the train/validation ids it gives, with each token's character count."""

    kind: str  # "char" or "bpe"
    encode: Callable[[str], list[int]]
    decode: Callable[[Sequence[int]], str]
    vocab_size: int
    train: Tensor  # (N,) int64
    val: Tensor
    val_chars: Tensor  # (N_val,) characters covered by each validation token
    token_text: list[str]  # printable text of each id


def shakespeare_split(text_chars: int = 0, val_chars: int = 0) -> tuple[str, str]:
    """The (train, val) split of Tiny Shakespeare, or of its first ``text_chars`` characters;
    the validation text cut to its first ``val_chars`` characters (0 = all of either)."""
    text = load_tiny_shakespeare(progress=False)
    if text_chars:
        text = text[:text_chars]
    train, val = train_val_split(text, 0.1)
    if val_chars:
        val = val[:val_chars]
    return train, val


def char_data(train: str, val: str) -> TokenizedText:
    """Character-level ids; the character set is that of train + val (as nanoGPT's), so a slice
    whose validation part has a character unseen in training still encodes."""
    tok = CharTokenizer(train + val)
    val_ids = torch.tensor(tok.encode(val), dtype=torch.long)
    return TokenizedText("char", tok.encode, tok.decode, tok.vocab_size,
                         torch.tensor(tok.encode(train), dtype=torch.long), val_ids,
                         torch.ones_like(val_ids), list(tok.vocab))


def bpe_data(train: str, val: str, vocab_size: int) -> TokenizedText:
    """Byte-level BPE ids, the tokenizer trained on ``train`` only (no special tokens)."""
    tok = BPETokenizer.train(train, vocab_size, special_tokens=())
    val_ids = tok.encode_ordinary(val)
    # Each UTF-8 character has exactly one byte that is not a continuation byte (10xxxxxx),
    # so counting those per token splits the characters of the text exactly among its tokens.
    lengths = [sum((byte & 0xC0) != 0x80 for byte in tok.token_bytes(i)) for i in val_ids]
    texts = [tok.token_bytes(i).decode("utf-8", errors="replace")
             for i in range(tok.vocab_size)]
    return TokenizedText("bpe", tok.encode_ordinary, tok.decode, tok.vocab_size,
                         torch.tensor(tok.encode_ordinary(train), dtype=torch.long),
                         torch.tensor(val_ids, dtype=torch.long),
                         torch.tensor(lengths, dtype=torch.long), texts)


def random_batch(ids: Tensor, batch_size: int, context_len: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows of ``ids``: inputs and next-token targets (B, T)."""
    if ids.numel() <= context_len:
        raise ValueError(f"need more than context_len={context_len} tokens, got {ids.numel()}")
    starts = torch.randint(0, ids.numel() - context_len, (batch_size,), generator=generator)
    rows = starts[:, None] + torch.arange(context_len + 1)
    windows = ids[rows]
    return windows[:, :-1], windows[:, 1:]
