r"""Citable results: prose quotes a published metric through a marker, and a check keeps them equal.

A number in Markdown (``docs/**/*.md``, ``README.md`` and the Markdown cells of
``notebooks/*.ipynb``) that was measured by a study is followed *immediately* by an HTML comment,
invisible once rendered, naming where it comes from::

    an error of 4.7e-4<!-- cite: feedforward.gradient_flow metrics.tanh_approx_max_abs_error .1e -->

The marker is ``<!-- cite: STUDY PATH FORMAT -->``:

* ``STUDY`` is a folder of ``docs/results/``; the value is read from its ``metrics.json``.
* ``PATH`` is a dotted key path into that record. Integer parts index lists (``-1`` is the last
  entry). A key that itself contains dots (``lr_0.01``) is matched whole: at each mapping the
  longest run of parts naming a key wins. ``PATH/PATH`` cites the quotient of two values of the
  same record (a ratio quoted as "16×"). A path to a list of numbers may end in a reducer,
  ``:mean``, ``:min``, ``:max`` or ``:sum`` (``metrics.training.lr_0.01.gelu.dead_mean:max``).
* ``FORMAT`` is a Python format spec (``.3f``, ``.2e``, ``,d``, ``.1%``), optionally preceded by
  the scale ``%``, which multiplies the value by 100 and formats it with the rest of the spec, so
  ``%.1f`` turns 0.329 into ``32.9`` for prose that writes the per-cent sign itself or not at all
  (the spec ``.1%`` renders ``32.9%``, sign included). E-notation is written with its shortest
  exponent: ``8.6e-5``, not Python's ``8.6e-05``.

The number is the text right before the marker, in one of two forms, and a rewrite keeps the
form it finds: plain (``0.186``, ``−0.29``, ``109,448``, ``8.6e-5``, ``34%``) or a TeX math span
holding one number (``$8.6\times10^{-5}$``, ``$109{,}448$``, ``$34\%$``). Markers inside code
spans and fenced code blocks are examples, not citations, and are skipped.

``python -m scratchformer.cite --check`` lists every cited number that differs from
``docs/results`` (or whose source is missing) as ``file:line``, exiting 1 if there is any;
``--fix`` rewrites the numbers from the records; ``--list`` prints every citation and its value.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Citation",
    "Mismatch",
    "check",
    "default_paths",
    "find_citations",
    "fix",
    "main",
    "render",
    "resolve",
]

RESULTS_DIR = Path("docs/results")

MARKER = re.compile(r"<!--\s*cite:\s*(?P<body>.*?)\s*-->", re.DOTALL)
# A plain number ending right where the marker starts; not the tail of a word or a longer number.
PLAIN_NUMBER = re.compile(
    r"(?<![\w.,])[-−+]?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+−]?\d+)?%?\Z"
)
TEX_SPAN = re.compile(r"(?<!\$)\$(?P<inner>[^$\n]+)\$\Z")
TEX_NUMBER = re.compile(
    r"[-−+]?\d+(?:\{,\}\d{3})*(?:\.\d+)?(?:\\times10\^\{[-−+]?\d+\})?(?:\\%)?\Z"
)
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^ {0,3}\1[ \t]*$|\Z)", re.DOTALL | re.M)
LOOKBACK = 200  # characters searched for the number before a marker
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)


@dataclass(frozen=True)
class Citation:
    """One marker and the number quoted before it, with where both sit in their source."""

    where: str  # "path:line", or "path:cellN:line" for a notebook cell
    number: str  # the quoted number as written (for the TeX form, the inside of $…$)
    study: str
    expr: str  # PATH or PATH/PATH
    spec: str  # FORMAT, scale included
    style: str  # "plain" or "tex"
    start: int  # offsets of ``number`` in the scanned text
    end: int

    @property
    def marker(self) -> str:
        """The marker's content, as a reader would type it."""
        return f"{self.study} {self.expr} {self.spec}"


@dataclass(frozen=True)
class Mismatch:
    """A citation whose number differs from its record (``expected``) or cannot be checked."""

    citation: Citation
    expected: str | None  # the number the record gives; None when it cannot be computed
    problem: str

    def __str__(self) -> str:
        """``file:line: problem``, one line, for the command line and test failures."""
        return f"{self.citation.where}: {self.problem}"


class CiteError(ValueError):
    """A marker that cannot be resolved: unknown study, missing key, not a number, bad spec."""


# --- parsing ----------------------------------------------------------------------------------


def _blank(match: re.Match[str]) -> str:
    """The matched text with every character but newlines replaced by spaces (offsets kept)."""
    return re.sub(r"[^\n]", " ", match.group(0))


def _without_code(text: str) -> str:
    """``text`` with fenced code blocks and code spans blanked out, offsets and lines unchanged."""
    return CODE_SPAN.sub(_blank, FENCE.sub(_blank, text))


def _line_of(text: str, offset: int, first_line: int) -> int:
    """The 1-based line number of ``offset`` in ``text``, counting from ``first_line``."""
    return first_line + text.count("\n", 0, offset)


def _scan(text: str, source: str, first_line: int = 1
          ) -> tuple[list[Citation], list[tuple[str, str]]]:
    """Citations in ``text``, and ``(where, problem)`` for each marker that is not one."""
    scanned = _without_code(text)
    found, problems = [], []
    for m in MARKER.finditer(scanned):
        where = f"{source}:{_line_of(text, m.start(), first_line)}"
        parts = m.group("body").split()
        if len(parts) != 3:
            problems.append((where, f"a marker needs 'STUDY PATH FORMAT', got {m.group(0)!r}"))
            continue
        lead = max(0, m.start() - LOOKBACK)  # numbers are short: search a window, not the text
        before = text[lead : m.start()]
        tex = TEX_SPAN.search(before)
        if tex and TEX_NUMBER.match(re.sub(r"\s+", "", tex.group("inner"))):
            style, start, end = "tex", lead + tex.start("inner"), lead + tex.end("inner")
        elif plain := PLAIN_NUMBER.search(before):
            style, start, end = "plain", lead + plain.start(), lead + plain.end()
        else:
            problems.append((where, f"no number right before {m.group(0)!r}"))
            continue
        found.append(Citation(where, text[start:end], *parts, style, start, end))
    return found, problems


def find_citations(text: str, source: str = "<text>", first_line: int = 1) -> list[Citation]:
    """Every marker in ``text`` and its number; CiteError (``source:line``) for a bad marker."""
    found, problems = _scan(text, source, first_line)
    if problems:
        where, problem = problems[0]
        raise CiteError(f"{where}: {problem}")
    return found


# --- values -----------------------------------------------------------------------------------


def _lookup(record: object, parts: list[str], expr: str) -> object:
    """Follow ``parts`` into ``record``; dict keys may contain dots (longest match wins)."""
    node, i = record, 0
    while i < len(parts):
        if isinstance(node, dict):
            for j in range(len(parts), i, -1):
                key = ".".join(parts[i:j])
                if key in node:
                    node, i = node[key], j
                    break
            else:
                raise CiteError(f"no key {parts[i]!r} in {expr!r}")
        elif isinstance(node, list):
            try:
                index = int(parts[i].replace("−", "-"))
                node = node[index]
            except (ValueError, IndexError):
                raise CiteError(f"{parts[i]!r} does not index a list of {len(node)} in "
                                f"{expr!r}") from None
            i += 1
        else:
            raise CiteError(f"{'.'.join(parts[:i])!r} is a leaf, {expr!r} goes deeper")
    return node


REDUCERS = {"mean": lambda xs: sum(xs) / len(xs), "min": min, "max": max, "sum": sum}


def _reduce(value: object, reducer: str, part: str) -> float:
    """``value``, a non-empty list of numbers, reduced by ``reducer`` (mean, min, max, sum)."""
    if reducer not in REDUCERS:
        raise CiteError(f"{part!r}: unknown reducer {reducer!r}, use one of {sorted(REDUCERS)}")
    if not isinstance(value, list) or not value or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise CiteError(f"{part!r}: {reducer} needs a non-empty list of numbers")
    return REDUCERS[reducer](value)


def resolve(study: str, expr: str, results: Path = RESULTS_DIR,
            cache: dict[str, object] | None = None) -> float:
    """The number ``expr`` (PATH or PATH/PATH) names in ``results/<study>/metrics.json``."""
    cache = {} if cache is None else cache
    if study not in cache:
        path = Path(results) / study / "metrics.json"
        if not path.is_file():
            raise CiteError(f"no published record {path}")
        cache[study] = json.loads(path.read_text(encoding="utf-8"))
    values = []
    for part in expr.split("/"):
        path, _, reducer = part.partition(":")
        value = _lookup(cache[study], path.split("."), expr)
        if reducer:
            value = _reduce(value, reducer, part)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CiteError(f"{study} {part} is {value!r}, not a number")
        values.append(value)
    if len(values) == 1:
        return values[0]
    if len(values) != 2 or values[1] == 0:
        raise CiteError(f"{expr!r}: a quotient needs two paths and a non-zero divisor")
    return values[0] / values[1]


def _short_exponent(text: str) -> str:
    """``8.6e-05`` → ``8.6e-5``, ``1e+03`` → ``1e3``: e-notation with its shortest exponent."""
    return re.sub(r"([eE])([-+]?)0*(\d)", lambda m: m[1] + m[2].replace("+", "") + m[3], text)


def render(value: float, spec: str, style: str = "plain") -> str:
    """``value`` formatted by ``spec`` (a leading ``%`` scales by 100) in ``style`` plain or tex."""
    if spec.startswith("%"):
        value, spec = value * 100, spec[1:]
    if spec[-1:] in ("d", "n") and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise CiteError(f"the value is {value}, which prose cannot quote")
    try:
        text = _short_exponent(format(value, spec))
    except (ValueError, TypeError) as err:
        raise CiteError(f"format spec {spec!r} does not apply to {value!r}: {err}") from None
    if style == "tex":
        text = re.sub(r"[eE]([-+]?\d+)\Z", r"\\times10^{\1}", text)
        text = text.replace(",", "{,}").replace("%", r"\%")
    return text


def _normal(number: str, style: str) -> str:
    """A quoted number in a form comparable with `render`'s: plain minus, no TeX spacing."""
    number = number.replace("−", "-")
    return re.sub(r"\s+", "", number) if style == "tex" else number


# --- files ------------------------------------------------------------------------------------


def _cells(path: Path) -> list[tuple[str, str, int]]:
    """``(text, source label, first line)`` of each Markdown part of ``path``."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        return [(raw, str(path), 1)]
    out = []
    for i, cell in enumerate(json.loads(raw).get("cells", [])):
        if cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            out.append(("".join(source) if isinstance(source, list) else source,
                        f"{path}:cell{i}", 1))
    return out


def _check_text(text: str, source: str, results: Path, cache: dict[str, object]
                ) -> tuple[list[Citation], list[Mismatch]]:
    """Citations of one Markdown text and the ones that disagree with their record."""
    citations, problems = _scan(text, source)
    bad = [Mismatch(Citation(where, "", "", "", "", "plain", 0, 0), None, problem)
           for where, problem in problems]
    for c in citations:
        try:
            expected = render(resolve(c.study, c.expr, results, cache), c.spec, c.style)
        except CiteError as err:
            bad.append(Mismatch(c, None, f"{c.number!r} cites {c.marker!r}: {err}"))
            continue
        if _normal(c.number, c.style) != expected:
            bad.append(Mismatch(c, expected, f"{c.number!r} should be {expected!r} "
                                             f"({c.study} {c.expr})"))
    return citations, bad


def citations_in(paths: Iterable[Path], results: Path = RESULTS_DIR
                 ) -> tuple[list[Citation], list[Mismatch]]:
    """All citations in ``paths`` and every mismatch among them."""
    cache: dict[str, object] = {}
    found, bad = [], []
    for path in paths:
        for text, source, _ in _cells(Path(path)):
            cites, wrong = _check_text(text, source, Path(results), cache)
            found += cites
            bad += wrong
    return found, bad


def check(paths: Iterable[Path], results: Path = RESULTS_DIR) -> list[Mismatch]:
    """Every cited number in ``paths`` that differs from ``results`` or cannot be resolved."""
    return citations_in(paths, results)[1]


def _fixed(text: str, mismatches: Sequence[Mismatch]) -> str:
    """``text`` with each fixable mismatch's number replaced by the record's, in its style."""
    for m in sorted(mismatches, key=lambda m: m.citation.start, reverse=True):
        c = m.citation
        if m.expected is None:
            continue
        new = m.expected.replace("-", "−") if "−" in c.number else m.expected
        text = text[: c.start] + new + text[c.end:]
    return text


def fix(paths: Iterable[Path], results: Path = RESULTS_DIR) -> list[Mismatch]:
    """Rewrite wrong cited numbers in ``paths`` from ``results``; returns what it cannot fix."""
    cache: dict[str, object] = {}
    left = []
    for path in map(Path, paths):
        raw = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            nb = json.loads(raw)
            for i, cell in enumerate(nb.get("cells", [])):
                if cell.get("cell_type") != "markdown":
                    continue
                source = cell.get("source", "")
                text = "".join(source) if isinstance(source, list) else source
                _, bad = _check_text(text, f"{path}:cell{i}", Path(results), cache)
                left += [m for m in bad if m.expected is None]
                new = _fixed(text, bad)
                if new != text:
                    cell["source"] = new.splitlines(keepends=True) if isinstance(source, list) \
                        else new
            new_raw = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        else:
            _, bad = _check_text(raw, str(path), Path(results), cache)
            left += [m for m in bad if m.expected is None]
            new_raw = _fixed(raw, bad)
        if new_raw != raw and any(m.expected is not None for m in bad):
            path.write_text(new_raw, encoding="utf-8")
    return left


def default_paths(root: Path = Path(".")) -> list[Path]:
    """The prose the check covers: ``docs/**/*.md``, ``README.md``, ``notebooks/*.ipynb``."""
    root = Path(root)
    paths = sorted((root / "docs").rglob("*.md")) + sorted((root / "notebooks").glob("*.ipynb"))
    readme = root / "README.md"
    return ([readme] if readme.is_file() else []) + paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--check`` (default), ``--fix`` or ``--list`` over the prose files."""
    ap = argparse.ArgumentParser(prog="python -m scratchformer.cite",
                                 description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="report wrong numbers (default)")
    mode.add_argument("--fix", action="store_true", help="rewrite wrong numbers from the records")
    mode.add_argument("--list", action="store_true", help="print every citation and its value")
    ap.add_argument("--results", type=Path, default=RESULTS_DIR, help="published records")
    ap.add_argument("paths", nargs="*", type=Path,
                    help="Markdown or notebook files (default: docs/, README.md, notebooks/)")
    args = ap.parse_args(argv)
    paths = args.paths or default_paths()
    if args.fix:
        left = fix(paths, args.results)
        for m in left:
            print(m)
        return 1 if left else 0
    found, bad = citations_in(paths, args.results)
    if args.list:
        for c in found:
            print(f"{c.where}: {c.number} <- {c.marker}")
    for m in bad:
        print(m, file=sys.stdout if args.list else sys.stderr)
    if not args.list:
        print(f"{len(found)} cited numbers, {len(bad)} wrong or unresolved", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
