"""Pre-tokenization: cut text into chunks that BPE merges never cross.

BPE runs inside each chunk separately, so a merge can never glue the end of one word to the start
of the next; this keeps tokens word-like and lets encoding cache chunk → ids. The GPT-2 pattern
splits off English contractions, letters, digits, other symbols and whitespace (a space stays
attached to the word after it); the GPT-4 (cl100k) pattern also limits digit runs to three, lets
one leading non-letter join a word and keeps newlines out of ordinary words.
"""

from __future__ import annotations

import functools

import regex

GPT2_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
PATTERNS: dict[str, str] = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}
# Patterns whose alternatives cover every character (each is \s, \p{L}, \p{N} or none of them).
_COVERING = frozenset(PATTERNS.values())


def resolve_pattern(pattern: str) -> str:
    """The regular expression for ``pattern``: a name in :data:`PATTERNS` or a regex itself."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str (a name or a regex), got {type(pattern).__name__}")
    if not pattern:
        raise ValueError("pattern must be a name in PATTERNS or a non-empty regex, got ''")
    regex_text = PATTERNS.get(pattern, pattern)
    compile_pattern(regex_text)  # fail early on a malformed expression
    return regex_text


@functools.lru_cache(maxsize=16)
def compile_pattern(regex_text: str) -> regex.Pattern:
    """The compiled form of ``regex_text`` (cached); a bad expression raises ValueError."""
    try:
        return regex.compile(regex_text)
    except regex.error as e:
        raise ValueError(f"pattern {regex_text!r} is not a valid regular expression: {e}") from e


def time_limit(text: str) -> float:
    """Seconds a pattern other than the named ones may spend splitting ``text``.

    Linear patterns split a million characters in well under a second; one that backtracks
    catastrophically (``(a|aa)+$``) would take longer than the universe has existed on a few
    dozen. The limit leaves a margin of ten and more over linear work.
    """
    return 1.0 + 5e-6 * len(text)


def split(text: str, pattern: str = "gpt2") -> list[str]:
    """Cut ``text`` into chunks: every match of ``pattern`` and every gap between matches.

    Keeping the gaps (Hugging Face's "isolated" split) means ``"".join(split(t)) == t`` for any
    pattern; the built-in patterns match every character, so for them there are no gaps. A
    pattern that is not a named one must finish within `time_limit`, else ``ValueError``.
    """
    regex_text = resolve_pattern(pattern)
    compiled = compile_pattern(regex_text)
    if regex_text in _COVERING:  # every character matches somewhere: findall is the same, faster
        return compiled.findall(text)
    chunks: list[str] = []
    end = 0
    limit = time_limit(text)
    try:
        for m in compiled.finditer(text, timeout=limit):
            start, stop = m.span()
            if start > end:
                chunks.append(text[end:start])
            if stop > start:
                chunks.append(text[start:stop])
            end = max(end, stop)
    except TimeoutError:
        shown = regex_text if len(regex_text) <= 60 else regex_text[:57] + "..."
        raise ValueError(
            f"pre-tokenization pattern {shown!r} took over {limit:.1f} s on a "
            f"{len(text):,}-character text (catastrophic backtracking?); use 'gpt2' or 'gpt4'"
        ) from None
    if end < len(text):
        chunks.append(text[end:])
    return chunks
