"""Code-specific scores of a language model: syntactic validity of sampled functions and exact
next-line completion, on held-out source files.

**Prompts.** A prompt is a held-out file up to the end of a function's header and its first
``body_lines`` lines (found with `ast`), without the final newline: the model sees the file as it
would while writing it. Ending a prompt at the end of a line (not after its newline) keeps the
BPE tokenization of the prompt the same as in training, where a newline joins the indentation of
the next line. Only the function itself (dedented to column 0) plus the continuation is parsed.

**Cut to the last complete statement.** A continuation of fixed length ends mid-statement, so
the function (prompt + continuation) is cut after its last complete statement *of the function
body*: a logical line (a ``NEWLINE`` token of `tokenize`, which ignores newlines inside brackets
and strings) after which the next logical line starts at the body's depth or shallower and is
not an ``elif``/``else``/``except``/``finally`` clause, so a compound statement counts only once
its whole block is there. Scanning stops where the function
ends (a line back at the ``def``'s depth), at a tokenizer error (bad dedent, stray character)
and at the end of the text. The cut must lie after the prompt; otherwise the sample fails. The
cut text is valid when `ast.parse` accepts it.

**Next-line exact match.** Given a file up to the end of a line, the model decodes greedily; it
matches when the decoded text starts with a newline, the next line exactly (indentation
included) and a newline.
"""

from __future__ import annotations

import ast
import io
import random
import tokenize
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from scratchformer.generation import generate

__all__ = [
    "Completer",
    "FilePrompt",
    "cut_to_last_statement",
    "function_prompts",
    "is_parseable",
    "lm_completer",
    "next_line_exact_match",
    "next_line_prompts",
    "pick_prompts",
    "statement_ends",
    "syntactic_validity",
]

_CLAUSES = {"elif", "else", "except", "finally"}  # continue the statement before them
Completer = Callable[[Sequence[str]], list[str]]
"""Maps prompt texts to their continuations (the generated text only)."""


@dataclass(frozen=True)
class FilePrompt:
    """A prompt: ``text[:end]`` of a held-out file; ``start`` where the scored code starts
    (the function's ``def`` line, or the target line's start), ``indent`` its indentation."""

    path: str
    text: str
    start: int
    end: int
    indent: str = ""
    target: str = ""  # the expected next line (next-line prompts)

    @property
    def prompt(self) -> str:
        """What the model is given: the file up to ``end``."""
        return self.text[:self.end]


def _line_offsets(text: str) -> list[int]:
    """Character offset of the start of every line, lines split at "\\n" only (as `tokenize`
    and `ast` count them in these files): 1-based line i starts at index i - 1."""
    return [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]


def _dedent(code: str, indent: str) -> str | None:
    """``code`` with ``indent`` removed from every non-blank line, or None if one lacks it."""
    out = []
    for line in code.split("\n"):
        if line.strip() == "":
            out.append("")
        elif line.startswith(indent):
            out.append(line[len(indent):])
        else:
            return None
    return "\n".join(out)


def function_prompts(path: str, text: str, body_lines: int = 1, min_prefix_chars: int = 0
                     ) -> list[FilePrompt]:
    """A prompt per function of a file: its header and its first ``body_lines`` lines; only
    functions longer than that, at least ``min_prefix_chars`` into the file, whose prompt
    dedents cleanly."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    offsets = _line_offsets(text)
    lines = text.split("\n")
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
            continue
        last = node.body[0].lineno + body_lines - 1  # last prompt line (1-based)
        if node.body[0].lineno <= node.lineno or (node.end_lineno or 0) <= last:
            continue  # one-line function, or one the prompt would hold whole
        start = offsets[node.lineno - 1]
        end = offsets[last - 1] + len(lines[last - 1])
        indent = lines[node.lineno - 1][:node.col_offset]
        if start < min_prefix_chars or indent.strip():
            continue
        if _dedent(text[start:end], indent) is None:
            continue
        found.append(FilePrompt(path, text, start, end, indent))
    return sorted(found, key=lambda p: p.start)


def next_line_prompts(path: str, text: str, max_line_chars: int = 80,
                      min_prefix_chars: int = 0) -> list[FilePrompt]:
    """A prompt per line that is non-blank, follows a non-blank line, is followed by a newline
    and has at most ``max_line_chars`` characters: the file up to the end of the line before."""
    offsets = _line_offsets(text)
    lines = text.split("\n")
    found = []
    for i in range(1, len(lines) - 1):  # lines[-1] has no newline after it
        line, prev = lines[i], lines[i - 1]
        if not line.strip() or not prev.strip() or len(line) > max_line_chars:
            continue
        end = offsets[i] - 1  # the newline ending the previous line
        if end < min_prefix_chars or "\r" in line or "\r" in prev:
            continue
        found.append(FilePrompt(path, text, offsets[i], end, target=line))
    return found


def pick_prompts(prompts: Sequence[FilePrompt], n: int, seed: int) -> list[FilePrompt]:
    """``n`` of ``prompts`` drawn without replacement by ``seed`` (all when fewer), in order."""
    if len(prompts) <= n:
        return list(prompts)
    keep = sorted(random.Random(seed).sample(range(len(prompts)), n))
    return [prompts[i] for i in keep]


def statement_ends(code: str, depth: int = 1) -> list[int]:
    """Offsets just after each logical line of ``code`` that ends a complete statement at
    block depth ``depth`` or less: the next logical line starts at that depth or shallower, no
    deeper than the line that ended (which therefore opens no block), and is not a clause
    (``elif``, ``else``, ``except``, ``finally``) of the same statement.

    Scanning stops when the text returns to depth 0 (the function ended), at the end of the
    text (the last line's continuation is unknown) or where `tokenize` fails.
    """
    offsets = _line_offsets(code)
    ends: list[int] = []
    level, pending, first = 0, None, None
    line_level = pending_level = 0
    skip = (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE,
            tokenize.ENDMARKER)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.INDENT:
                level += 1
            elif tok.type == tokenize.DEDENT:
                level -= 1
            elif tok.type == tokenize.NEWLINE and tok.string:  # not the implicit one at EOF
                row, col = tok.end
                # A decorator line is not a statement: the definition it decorates follows.
                pending = None if first == "@" else offsets[row - 1] + col
                pending_level, first = line_level, None
            elif tok.type not in skip and first is None:
                row, col = tok.end
                if offsets[row - 1] + col >= len(code):
                    break  # the text ends inside this token: a cut word, not known yet
                first, line_level = tok.string, level
                if (pending is not None and level <= min(depth, pending_level)
                        and tok.string not in _CLAUSES):
                    ends.append(pending)
                    if level == 0:
                        break
                pending = None
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return ends


def cut_to_last_statement(code: str, min_end: int = 0, depth: int = 1) -> str | None:
    """``code`` cut after its last complete statement at block depth <= ``depth`` (see
    `statement_ends`) that ends at or after ``min_end``; None when there is none."""
    ends = [e for e in statement_ends(code, depth) if e >= min_end]
    return code[:ends[-1]] if ends else None


def is_parseable(code: str) -> bool:
    """Whether ``ast.parse`` accepts ``code``."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def syntactic_validity(prompts: Sequence[FilePrompt], continuations: Sequence[str],
                       max_chars: int) -> dict:
    """Share of (dedented function prompt + continuation cut to ``max_chars`` characters and
    then to its last complete statement) that parse, with per-sample details."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    if not prompts:
        raise ValueError("no prompts to score")
    ok, no_statement, kept = 0, 0, []
    examples = []
    for p, cont in zip(prompts, continuations, strict=True):
        body = _dedent(p.text[p.start:p.end], p.indent) or ""
        cont_lines = cont[:max_chars].split("\n")
        # The continuation's lines belong to the function: dedent them the same way; a line
        # that starts left of the ``def`` is past the function's end, and so is what follows.
        dedented = [cont_lines[0]]
        for ln in cont_lines[1:]:
            if ln.strip() and not ln.startswith(p.indent):
                break
            dedented.append(ln[len(p.indent):])
        code = body + "\n".join(dedented)
        cut = cut_to_last_statement(code, min_end=len(body) + 2)
        if cut is None:
            no_statement += 1
            kept.append(0)
            valid = False
        else:
            valid = is_parseable(cut)
            kept.append(len(cut) - len(body))
        ok += valid
        if len(examples) < 4:
            examples.append({"path": p.path, "code": cut if cut is not None else code,
                             "valid": valid})
    n = len(prompts)
    return {"n": n, "valid": ok, "valid_rate": ok / n, "no_complete_statement": no_statement,
            "mean_kept_chars": sum(kept) / n, "examples": examples}


def next_line_exact_match(prompts: Sequence[FilePrompt], continuations: Sequence[str]) -> dict:
    """Share of prompts whose continuation starts with newline + the target line + newline."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    if not prompts:
        raise ValueError("no prompts to score")
    hits = sum(c.startswith("\n" + p.target + "\n")
               for p, c in zip(prompts, continuations, strict=True))
    return {"n": len(prompts), "exact": hits, "exact_rate": hits / len(prompts)}


def lm_completer(model: nn.Module, encode: Callable[[str], list[int]],
                 decode: Callable[[Sequence[int]], str], *, prompt_tokens: int,
                 new_tokens: int, pad_id: int, greedy: bool = False, temperature: float = 1.0,
                 top_p: float | None = None, seed: int = 0, batch_size: int = 64) -> Completer:
    """A `Completer` of a token LM: each prompt's last ``prompt_tokens`` tokens (left-padded
    with ``pad_id``, the file separator, when shorter) extended by ``new_tokens`` tokens, in
    batches, sampled (``temperature``, ``top_p``) or greedy; returns the decoded new tokens."""

    def complete(prompts: Sequence[str]) -> list[str]:
        rows = []
        for text in prompts:
            ids = encode(text)[-prompt_tokens:]
            rows.append([pad_id] * (prompt_tokens - len(ids)) + ids)
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        out: list[str] = []
        for b in range(0, len(rows), batch_size):
            idx = torch.tensor(rows[b:b + batch_size], dtype=torch.long, device=device)
            seq = generate(model, idx, new_tokens, temperature=temperature, top_p=top_p,
                           greedy=greedy, generator=gen)
            out += [decode(r) for r in seq[:, prompt_tokens:].tolist()]
        return out

    return complete
