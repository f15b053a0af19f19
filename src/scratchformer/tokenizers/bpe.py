"""A byte-level BPE tokenizer: 256 byte tokens, learned merges, and never-merged special tokens.

Encoding pre-tokenizes the text into chunks, turns each chunk into its UTF-8 byte ids and then
repeatedly merges the adjacent pair with the lowest merge rank (the earliest learned) until no
learned pair is left; the result per chunk is cached. Because every string is a byte sequence and
every byte is a token, any text encodes, and decoding concatenates token bytes, so
``decode(encode(s)) == s`` for every ``s``. Short chunks use the plain loop (fastest for words);
chunks longer than `_HEAP_FROM` bytes use a priority queue of pair positions, which gives the
same ids in O(n log n) rather than O(n x merges), so one long run of letters stays fast.

Decoding an arbitrary id sequence can give bytes that are not valid UTF-8 (a token may hold half
of a multi-byte character). The errors policy is Python's: ``decode(ids, errors="replace")`` (the
default) puts U+FFFD for each maximal invalid subsequence, ``errors="strict"`` raises
``UnicodeDecodeError``, and :meth:`BPETokenizer.decode_bytes` returns the raw bytes. An id that is
not in the vocabulary raises ``ValueError``.

File format (``save``/``load``, UTF-8 JSON)::

    {"format": "scratchformer-bpe", "version": 1,
     "pattern": "<pre-tokenization regex>",
     "vocab": {"<id>": "<token bytes as hex>", ...},        # every ordinary token
     "merges": [[left_id, right_id], ...],                  # rank order; the merged token is
                                                            # the vocab entry of left + right bytes
     "special_tokens": {"<|endoftext|>": 50256, ...}}

`load` checks every field and reports any malformed file as one ``ValueError`` naming it. A
pattern that is not one of the named ones runs with a time limit (see
:func:`scratchformer.tokenizers.pretokenize.split`), so a file cannot make encoding hang.
"""

from __future__ import annotations

import heapq
import itertools
import json
import operator
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import regex

from scratchformer.tokenizers.pretokenize import resolve_pattern, split
from scratchformer.validation import check_int

FORMAT_NAME = "scratchformer-bpe"
FORMAT_VERSION = 1
DEFAULT_SPECIAL_TOKENS = ("<|endoftext|>",)
_CACHE_LIMIT = 1 << 17  # chunks kept in the encode cache before it is cleared
_CACHE_MAX_CHUNK = 256  # longer chunks are rare and large: not cached
_HEAP_FROM = 48  # chunks of more bytes than this are merged with the priority queue
MAX_ID = 2**31 - 1  # token ids beyond this are refused (no embedding table is that large)
MAX_PATTERN_CHARS = 10_000  # longest pre-tokenization regex accepted from a file


class BPETokenizer:
    """Byte-level BPE: ``vocab`` id → bytes, ``merges`` in rank order, ``special_tokens`` str → id.

    Any vocabulary is accepted as long as all 256 single bytes are tokens and every merge's two
    parts and their concatenation are tokens; a trained tokenizer has bytes at ids 0-255 and
    merge ``k`` at id ``256 + k``, with the special tokens after them.
    """

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[int, int]],
        special_tokens: Mapping[str, int] | None = None,
        pattern: str = "gpt2",
    ) -> None:
        self.pattern = resolve_pattern(pattern)
        self.vocab: dict[int, bytes] = {}
        for i, token in dict(vocab).items():
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise TypeError(f"vocab ids must be non-negative ints, got {i!r}")
            if i > MAX_ID:
                raise ValueError(f"vocab id {i} is larger than {MAX_ID}")
            if not isinstance(token, bytes) or not token:
                raise TypeError(f"vocab[{i}] must be non-empty bytes, got {token!r}")
            self.vocab[i] = token
        self._id_of: dict[bytes, int] = {}
        for i, token in self.vocab.items():
            if token in self._id_of:
                raise ValueError(f"vocab has {token!r} twice: ids {self._id_of[token]} and {i}")
            self._id_of[token] = i
        missing = [b for b in range(256) if bytes([b]) not in self._id_of]
        if missing:
            raise ValueError(f"vocab must hold all 256 single bytes; missing byte(s) {missing[:8]}")
        self._byte_ids = [self._id_of[bytes([b])] for b in range(256)]

        self.merges: list[tuple[int, int]] = []
        # (left, right) -> (rank, merged id): what encoding looks up for every adjacent pair.
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, pair in enumerate(merges):
            a, b = (int(x) for x in pair)
            if a not in self.vocab or b not in self.vocab:
                raise ValueError(f"merge {rank} ({a}, {b}) uses an id that is not in the vocab")
            merged = self._id_of.get(self.vocab[a] + self.vocab[b])
            if merged is None:
                raise ValueError(f"merge {rank} ({a}, {b}): the merged token is not in the vocab")
            self.merges.append((a, b))
            self._ranks.setdefault((a, b), (rank, merged))

        self.special_tokens: dict[str, int] = {}
        for text, i in dict(special_tokens or {}).items():
            if not isinstance(text, str) or not text:
                raise TypeError(f"special token names must be non-empty str, got {text!r}")
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise TypeError(f"special token {text!r} needs a non-negative int id, got {i!r}")
            if i > MAX_ID:
                raise ValueError(f"special token {text!r} has id {i}, larger than {MAX_ID}")
            if i in self.vocab or i in self.special_tokens.values():
                raise ValueError(f"special token {text!r} has id {i}, which is already taken")
            self.special_tokens[text] = i
        self._special_of = {i: s for s, i in self.special_tokens.items()}
        self._cache: dict[str, tuple[int, ...]] = {}

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: str | Iterable[str],
        vocab_size: int,
        *,
        pattern: str = "gpt2",
        special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
        min_frequency: int = 2,
        progress: bool = False,
    ) -> BPETokenizer:
        """Learn a tokenizer of ``vocab_size`` tokens (256 bytes + merges + special tokens).

        Uses the fast trainer of :mod:`scratchformer.tokenizers.bpe_train`. Special-token strings
        inside the texts act as separators and are not learned from. The vocabulary can come out
        smaller when fewer pairs than requested occur ``min_frequency`` times.
        """
        from scratchformer.tokenizers.bpe_train import train_merges

        special_tokens = list(special_tokens)
        check_int("vocab_size", vocab_size, None)
        if vocab_size < 256 + len(special_tokens):
            raise ValueError(
                f"vocab_size must be >= 256 bytes + {len(special_tokens)} special token(s) = "
                f"{256 + len(special_tokens)}, got {vocab_size}"
            )
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"special_tokens has duplicates: {special_tokens}")
        if isinstance(texts, str):
            texts = [texts]
        if special_tokens:  # special-token strings in the corpus separate texts; never learned
            cut = _special_regex(tuple(sorted(special_tokens)))
            texts = (piece for text in texts for piece in cut.split(text))
        stats = train_merges(
            texts,
            vocab_size - 256 - len(special_tokens),
            pattern=pattern,
            min_frequency=min_frequency,
            progress=progress,
        )
        return cls.from_merges(stats.merges, special_tokens, pattern)

    @classmethod
    def from_merges(
        cls,
        merges: Sequence[tuple[int, int]],
        special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
        pattern: str = "gpt2",
    ) -> BPETokenizer:
        """The tokenizer whose merge ``k`` makes id ``256 + k``; special tokens get the next ids."""
        vocab = {b: bytes([b]) for b in range(256)}
        for k, (a, b) in enumerate(merges):
            if a not in vocab or b not in vocab:
                raise ValueError(f"merge {k} ({a}, {b}) uses an id not created before it")
            vocab[256 + k] = vocab[a] + vocab[b]
        first = 256 + len(merges)
        specials = {s: first + j for j, s in enumerate(special_tokens)}
        return cls(vocab, merges, specials, pattern)

    # -- sizes and lookups ------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (ordinary or special): the embedding table size."""
        return 1 + max([*self.vocab, *self.special_tokens.values()])

    def __len__(self) -> int:
        return len(self.vocab) + len(self.special_tokens)

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={list(self.special_tokens)})"
        )

    def token_bytes(self, i: int) -> bytes:
        """The bytes of token ``i`` (a special token gives its UTF-8 text)."""
        i = _as_id(i)
        if i in self.vocab:
            return self.vocab[i]
        if i in self._special_of:
            return self._special_of[i].encode("utf-8")
        raise ValueError(
            f"token id {i} is not in the vocabulary (ids 0..{self.vocab_size - 1}, "
            f"{len(self)} tokens)"
        )

    # -- encoding ---------------------------------------------------------------------------

    def _bpe(self, chunk: str) -> tuple[int, ...]:
        """BPE ids of one pre-tokenized chunk: merge the lowest-rank pair until none is left."""
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        byte_ids = self._byte_ids
        ids = [byte_ids[b] for b in chunk.encode("utf-8")]
        result = tuple(self._merge_long(ids) if len(ids) > _HEAP_FROM else self._merge(ids))
        if len(chunk) <= _CACHE_MAX_CHUNK:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[chunk] = result
        return result

    def _merge(self, ids: list[int]) -> list[int]:
        """Merge every occurrence of the lowest-rank pair, left to right, until none is left."""
        ranks = self._ranks
        none = (len(self.merges), -1)
        while len(ids) > 1:
            best = min(itertools.pairwise(ids), key=lambda p: ranks.get(p, none))
            found = ranks.get(best)
            if found is None:
                break
            merged, (a, b) = found[1], best
            out, i, n = [], 0, len(ids)
            while i < n:
                if i < n - 1 and ids[i] == a and ids[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids

    def _merge_long(self, ids: list[int]) -> list[int]:
        """`_merge` in O(n log n): a heap of (rank, position) of adjacent pairs in a linked list.

        Each round pops every entry of the lowest rank, in position order, and merges those that
        still hold that pair, which is `_merge`'s left-to-right pass; pairs the round creates
        enter the heap after it, as `_merge` only sees them on its next pass. A merged token is
        longer than both of its parts, so a round never creates the pair it merges.
        """
        ranks = self._ranks
        n = len(ids)
        tok = list(ids)  # -1: merged into the token on its left
        nxt = list(range(1, n + 1))  # n: no next token
        prv = list(range(-1, n - 1))  # -1: no previous token
        heap = [(found[0], i) for i in range(n - 1)
                if (found := ranks.get((tok[i], tok[i + 1]))) is not None]
        heapq.heapify(heap)
        while heap:
            rank = heap[0][0]
            created = []
            while heap and heap[0][0] == rank:
                i = heapq.heappop(heap)[1]
                j = nxt[i]
                if tok[i] < 0 or j >= n:
                    continue
                found = ranks.get((tok[i], tok[j]))
                if found is None or found[0] != rank:
                    continue  # the pair at i changed since this entry was pushed
                merged = tok[i] = found[1]
                tok[j] = -1
                k = nxt[i] = nxt[j]
                if k < n:
                    prv[k] = i
                    if (right := ranks.get((merged, tok[k]))) is not None:
                        created.append((right[0], i))
                if (p := prv[i]) >= 0 and (left := ranks.get((tok[p], merged))) is not None:
                    created.append((left[0], p))
            for entry in created:
                heapq.heappush(heap, entry)
        return [t for t in tok if t >= 0]

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with special-token strings treated as plain text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids: list[int] = []
        for chunk in split(text, self.pattern):
            ids.extend(self._bpe(chunk))
        return ids

    def encode(
        self,
        text: str,
        *,
        allowed_special: str | Iterable[str] = (),
        disallowed_special: str | Iterable[str] = "all",
    ) -> list[int]:
        """Ids of ``text``; special-token strings become their ids only where allowed.

        ``allowed_special``: ``"all"`` or the special tokens to turn into their ids.
        ``disallowed_special``: ``"all"`` (every special token not allowed) or a collection;
        finding one of these in ``text`` raises ``ValueError``, which stops user text from
        injecting control tokens. Pass ``disallowed_special=()`` to encode them as plain text.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = set(self.special_tokens) - allowed
        else:
            disallowed = self._special_set(disallowed_special, "disallowed_special")
        if disallowed:
            found = _special_regex(tuple(sorted(disallowed))).search(text)
            if found:
                raise ValueError(
                    f"text contains the special token {found.group()!r} at offset "
                    f"{found.start()}; pass allowed_special={{{found.group()!r}}} to encode it as "
                    f"its id, or disallowed_special=() to encode it as plain text"
                )
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for m in _special_regex(tuple(sorted(allowed))).finditer(text):
            ids.extend(self.encode_ordinary(text[start : m.start()]))
            ids.append(self.special_tokens[m.group()])
            start = m.end()
        ids.extend(self.encode_ordinary(text[start:]))
        return ids

    def encode_batch(self, texts: Iterable[str], **kwargs: object) -> list[list[int]]:
        """:meth:`encode` of each text (same keyword arguments); the chunk cache is shared."""
        return [self.encode(t, **kwargs) for t in texts]  # type: ignore[arg-type]

    def _special_set(self, spec: str | Iterable[str], name: str) -> set[str]:
        if spec == "all":
            return set(self.special_tokens)
        if isinstance(spec, str):
            raise TypeError(f"{name} must be 'all' or a collection of special tokens, got {spec!r}")
        chosen = set(spec)
        unknown = chosen - set(self.special_tokens)
        if unknown:
            raise ValueError(
                f"{name} names {sorted(unknown)}, which are not special tokens of this tokenizer "
                f"(it has {sorted(self.special_tokens)})"
            )
        return chosen

    # -- decoding ---------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The concatenated bytes of ``ids``; unknown ids raise ``ValueError``."""
        vocab = self.vocab
        parts = []
        for i in ids:
            token = vocab.get(i) if type(i) is int else None
            parts.append(token if token is not None else self.token_bytes(i))
        return b"".join(parts)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """The text of ``ids``; bytes that are not valid UTF-8 follow ``errors`` (see module)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The JSON-able form written by :meth:`save` (format in the module docstring)."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "pattern": self.pattern,
            "vocab": {str(i): t.hex() for i, t in sorted(self.vocab.items())},
            "merges": [list(p) for p in self.merges],
            "special_tokens": dict(self.special_tokens),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> BPETokenizer:
        """The tokenizer described by :meth:`to_dict`'s output; anything malformed is a
        ``ValueError`` that says which field is wrong."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT_NAME:
            raise ValueError(f"not a {FORMAT_NAME} tokenizer: format is {_field(data, 'format')}")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"unsupported {FORMAT_NAME} version {_short(data.get('version'))}; "
                f"expected {FORMAT_VERSION}"
            )
        missing = [k for k in ("pattern", "vocab", "merges") if k not in data]
        if missing:
            raise ValueError(f"{FORMAT_NAME} data lacks the field(s) {missing}")
        pattern = data["pattern"]
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_CHARS:
            raise ValueError(f"'pattern' must be a name or a regex of 1 to {MAX_PATTERN_CHARS} "
                             f"characters, got {_short(pattern)}")
        raw_vocab = data["vocab"]
        if not isinstance(raw_vocab, Mapping) or not raw_vocab:
            raise ValueError(f"'vocab' must be a non-empty object of id -> token bytes in hex, "
                             f"got {_short(raw_vocab)}")
        vocab: dict[int, bytes] = {}
        for key, hexed in raw_vocab.items():
            if not (isinstance(key, str) and key.isascii() and key.isdecimal() and len(key) < 12):
                raise ValueError(f"'vocab' key {_short(key)} is not a token id")
            try:
                vocab[int(key)] = bytes.fromhex(hexed)
            except (TypeError, ValueError):
                raise ValueError(f"'vocab' entry {key} is not hex bytes: {_short(hexed)}") from None
        raw_merges = data["merges"]
        if not isinstance(raw_merges, list):
            raise ValueError(f"'merges' must be a list of [left_id, right_id], got "
                             f"{_short(raw_merges)}")
        for k, pair in enumerate(raw_merges):
            if not (isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in pair)):
                raise ValueError(f"merge {k} must be [left_id, right_id], got {_short(pair)}")
        specials = data.get("special_tokens", {})
        if not isinstance(specials, Mapping):
            raise ValueError(f"'special_tokens' must be an object of token -> id, got "
                             f"{_short(specials)}")
        try:
            return cls(vocab, [tuple(p) for p in raw_merges], specials, pattern)
        except TypeError as e:
            raise ValueError(str(e)) from None

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer as JSON to ``path`` (atomically: a crash leaves the old file)."""
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"cannot save the tokenizer as {path}: it is a folder")
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n"
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "xb") as f:  # "x": a new file with the umask's permissions
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read a tokenizer written by :meth:`save`; a malformed file is a ValueError naming it."""
        path = Path(path)
        raw = path.read_bytes()
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not UTF-8 text ({e})") from None
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{path} is not JSON: {e}") from None
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field(data: object, key: str) -> str:
    return repr(data.get(key)) if isinstance(data, Mapping) else f"a {type(data).__name__}"


def _as_id(i: object) -> int:
    """``i`` as a Python int (numpy and torch integers are fine); bools and floats are refused."""
    if isinstance(i, bool):
        raise TypeError(f"token ids must be ints, got the bool {i}")
    try:
        return operator.index(i)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"token ids must be ints, got {type(i).__name__} {i!r}") from None


_SPECIAL_REGEX_CACHE: dict[tuple[str, ...], regex.Pattern] = {}


def _special_regex(tokens: tuple[str, ...]) -> regex.Pattern:
    """A regex matching any of ``tokens``, longest first so that no token hides a longer one."""
    found = _SPECIAL_REGEX_CACHE.get(tokens)
    if found is None:
        ordered = sorted(tokens, key=lambda s: (-len(s), s))
        found = regex.compile("|".join(regex.escape(s) for s in ordered))
        _SPECIAL_REGEX_CACHE[tokens] = found
    return found
