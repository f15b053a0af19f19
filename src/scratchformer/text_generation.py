"""Generate text from a ``scratchformer train`` model: what ``scratchformer generate`` runs.

    run folder -> `load_text_model` (base model, or base + LoRA adapters) -> prompt ids
        -> `scratchformer.generation.stream` (KV-cached) -> token bytes -> UTF-8 text, streamed

The tokenizers are byte-level, so one token may hold part of a multi-byte UTF-8 character and
the next token the rest. `Utf8Stream` decodes incrementally and releases only complete
characters; bytes that can never form one are shown as U+FFFD.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.nn.utils import parametrize

from scratchformer.generation import check_sampling, stream
from scratchformer.tokenizers.bpe import BPETokenizer
from scratchformer.validation import check_int

__all__ = ["GenerateOptions", "Utf8Stream", "generate_text", "stream_text"]

_REPLACEMENT = "\ufffd".encode()


class Utf8Stream:
    """Turns a stream of token ids into text pieces that end on whole UTF-8 characters."""

    def __init__(self, tokenizer: BPETokenizer) -> None:
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """The text completed by ``token_id`` (possibly empty: a character still incomplete).

        An id the tokenizer does not know (the model's vocabulary may be larger) is U+FFFD.
        """
        try:
            data = self.tokenizer.token_bytes(token_id)
        except ValueError:
            data = _REPLACEMENT
        return self._decoder.decode(data)

    def flush(self) -> str:
        """What is left at the end: an incomplete character becomes U+FFFD."""
        return self._decoder.decode(b"", final=True)


@dataclass(frozen=True)
class GenerateOptions:
    """What ``scratchformer generate`` was asked for; `check` validates it before any loading."""

    checkpoint: str
    prompt: str
    max_new_tokens: int = 200
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def check(self) -> None:
        """Raise ValueError/TypeError naming the first bad option."""
        if not isinstance(self.prompt, str) or not self.prompt:
            raise ValueError("--prompt must be a non-empty text")
        check_int("max_new_tokens", self.max_new_tokens, minimum=0)
        check_sampling(self.temperature, self.top_k, self.top_p, False, None)
        if self.seed is not None:
            check_int("seed", self.seed, minimum=0)


def stream_text(model: torch.nn.Module, tokenizer: BPETokenizer, options: GenerateOptions,
                ) -> Iterator[str]:
    """Yield the continuation of ``options.prompt`` as text pieces, as tokens are produced."""
    from scratchformer.text_training import encode

    options.check()
    idx = encode(tokenizer, options.prompt).unsqueeze(0)
    generator = None
    if options.seed is not None:
        generator = torch.Generator().manual_seed(options.seed)
    text = Utf8Stream(tokenizer)
    with parametrize.cached():  # adapted (LoRA) weights are formed once, not at every step
        for token in stream(model, idx, options.max_new_tokens,
                            temperature=options.temperature, top_k=options.top_k,
                            top_p=options.top_p, generator=generator):
            piece = text.push(int(token[0]))
            if piece:
                yield piece
    tail = text.flush()
    if tail:
        yield tail


def generate_text(options: GenerateOptions, write: Callable[[str], object]) -> int:
    """Load ``options.checkpoint`` and ``write`` the prompt, then the continuation piece by
    piece; returns the number of text pieces written after the prompt."""
    from scratchformer.text_training import load_text_model

    options.check()
    model, tokenizer = load_text_model(os.fspath(options.checkpoint))
    pieces = 0
    write(options.prompt)
    for piece in stream_text(model, tokenizer, options):
        write(piece)
        pieces += 1
    return pieces
