"""Hugging Face interop: write ``tokenizer.json``; read and write GPT-2 vocab + merges files.

Both formats store tokens as text, not bytes, through GPT-2's byte ↔ unicode table: the 188
printable bytes (``!``-``~``, ``¡``-``¬``, ``®``-``ÿ``) stand for themselves and the other 68
bytes (control characters, space, ...) are shifted to U+0100 onwards in byte order, so space is
``Ġ`` and newline ``Ċ``. Every token then is a printable string without spaces, which is why a
merge can be written as the line ``"left right"``. Nothing here needs the ``tokenizers``
package; the tests use it to check that it reads our files exactly as we do.

One known difference: the pre-tokenization regex runs in the ``regex`` package here and in
Oniguruma inside ``tokenizers``, whose Unicode tables can be of different versions. For code
points assigned in only one of them (all unassigned in Python 3.11's Unicode 14 tables) the two
may split, and so encode, differently; for every other string the ids are identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from scratchformer.tokenizers.bpe import DEFAULT_SPECIAL_TOKENS, BPETokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table byte → printable character (a bijection of 256 entries)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def token_to_str(token: bytes) -> str:
    """A token's bytes written in GPT-2's printable alphabet."""
    return "".join(BYTE_TO_CHAR[b] for b in token)


def str_to_token(text: str) -> bytes:
    """The bytes a GPT-2-alphabet string stands for; other characters raise ``ValueError``."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in text)
    except KeyError as e:
        raise ValueError(
            f"{text!r} has {e.args[0]!r}, which is not in GPT-2's byte alphabet"
        ) from e


def to_hf_json(tok: BPETokenizer) -> dict:
    """The ``tokenizer.json`` content that makes Hugging Face encode exactly as ``tok`` does.

    Pre-tokenization is an isolated regex split with ``tok.pattern`` followed by the byte-level
    mapping (its own GPT-2 regex switched off), the model is BPE over the mapped strings, and the
    special tokens are added tokens, which Hugging Face always splits out before the model runs.
    """
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": text,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for text, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": tok.pattern},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": {token_to_str(t): i for i, t in sorted(tok.vocab.items())},
            "merges": [
                f"{token_to_str(tok.vocab[a])} {token_to_str(tok.vocab[b])}" for a, b in tok.merges
            ],
        },
    }


def export_hf(tok: BPETokenizer, path: str | Path) -> Path:
    """Write ``tok`` as a Hugging Face ``tokenizer.json`` (``Tokenizer.from_file`` reads it)."""
    path = Path(path)
    path.write_text(json.dumps(to_hf_json(tok), ensure_ascii=False, indent=1) + "\n", "utf-8")
    return path


def save_gpt2_files(tok: BPETokenizer, directory: str | Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` (special tokens included) and ``merges.txt`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {token_to_str(t): i for i, t in sorted(tok.vocab.items())}
    vocab.update(tok.special_tokens)
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False) + "\n", "utf-8")
    lines = [f"{token_to_str(tok.vocab[a])} {token_to_str(tok.vocab[b])}" for a, b in tok.merges]
    merges_path.write_text("#version: 0.2\n" + "".join(f"{ln}\n" for ln in lines), "utf-8")
    return vocab_path, merges_path


def load_gpt2_files(
    vocab_path: str | Path,
    merges_path: str | Path,
    *,
    special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
    pattern: str = "gpt2",
) -> BPETokenizer:
    """A tokenizer from GPT-2-format files (any ids; the 256 bytes must all be in the vocab).

    Vocab entries named in ``special_tokens`` become special tokens (GPT-2's ``<|endoftext|>``
    is in its ``vocab.json`` but produced by no merge); every other entry is an ordinary token.
    A ``#version`` first line and blank lines in ``merges.txt`` are skipped.
    """
    with open(vocab_path, encoding="utf-8") as fh:
        raw_vocab = json.load(fh)
    if not isinstance(raw_vocab, dict):
        raise ValueError(f"{vocab_path} must hold a JSON object token → id, got {type(raw_vocab)}")
    specials = set(special_tokens)
    vocab: dict[int, bytes] = {}
    found_specials: dict[str, int] = {}
    for text, i in raw_vocab.items():
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"{vocab_path}: id of {text!r} must be an int, got {i!r}")
        if text in specials:
            found_specials[text] = i
        else:
            vocab[i] = str_to_token(text)
    id_of = {t: i for i, t in vocab.items()}
    merges: list[tuple[int, int]] = []
    with open(merges_path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line or (line_no == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{merges_path}:{line_no}: expected 'left right', got {line!r}")
            try:
                merges.append((id_of[str_to_token(parts[0])], id_of[str_to_token(parts[1])]))
            except KeyError:
                raise ValueError(
                    f"{merges_path}:{line_no}: {line!r} names a token missing from {vocab_path}"
                ) from None
    return BPETokenizer(vocab, merges, found_specials, pattern)
