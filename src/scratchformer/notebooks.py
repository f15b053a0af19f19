"""Notebooks: the published results they show, and a check that their stored outputs are current.

The notebooks in ``notebooks/`` are stored executed, so that a reader sees every formula, figure,
table and number without running anything. They read the published full-profile records in
``docs/results/<study>/`` (`published_record`, `show_figure`) and run library code only at small
size; they never run a whole study.

``python -m scratchformer.notebooks --store [PATHS]`` executes notebooks and writes their outputs
in place; ``--check [PATHS]`` executes them and lists every output that differs from the stored
one (timings, addresses and dates masked; figures compared by their decoded pixels), exiting 1 if
there is any.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "compare",
    "doc_section",
    "execute",
    "main",
    "markdown_table",
    "mask_volatile",
    "published_figures",
    "published_record",
    "published_text",
    "repo_root",
    "results_dir",
    "show_figure",
    "show_markdown",
    "show_plot",
]

RESULTS_SUBDIR = Path("docs") / "results"
NOTEBOOK_DIR = Path("notebooks")
KERNEL = "python3"
CELL_TIMEOUT_S = 300
IMAGE_TOLERANCE = 1e-3  # mean absolute difference of decoded pixels (values in [0, 1])
IMAGE_TYPES = ("image/png", "image/jpeg")

# Parts of an output that change from run to run without the computation changing.
VOLATILE = [
    (re.compile(r"0x[0-9a-fA-F]+"), "0x…"),
    (re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
                r"(?:Z|[+-]\d{2}:?\d{2})?)?"), "<date>"),
    (re.compile(r"(?<![\d.])\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?![\d.])"), "<clock>"),
    (re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?\s*"
                r"(?:it/s|s/it|ns|µs|us|ms|sec|min|s)(?!\w)"), "<time>"),
]


# --- the published results --------------------------------------------------------------------


def repo_root(start: Path | None = None) -> Path:
    """The folder holding ``docs/results``: ``start`` (default: the current directory), one of
    its parents, or the checkout this package was installed from."""
    start = Path.cwd() if start is None else Path(start)
    candidates = [start.resolve(), *start.resolve().parents,
                  Path(__file__).resolve().parents[2]]
    for folder in candidates:
        if (folder / RESULTS_SUBDIR).is_dir():
            return folder
    raise FileNotFoundError(
        f"no published results folder {RESULTS_SUBDIR} in {start.resolve()}, its parents or "
        f"{candidates[-1]}; run the notebooks from a checkout of the repository")


def results_dir(start: Path | None = None) -> Path:
    """``docs/results`` of the repository (see `repo_root`)."""
    return repo_root(start) / RESULTS_SUBDIR


def published_record(study: str, results: Path | None = None) -> dict[str, Any]:
    """The published record ``docs/results/<study>/metrics.json``, with a clear error if absent."""
    folder = results_dir() if results is None else Path(results)
    path = folder / study / "metrics.json"
    if not path.is_file():
        known = sorted(p.parent.name for p in folder.glob("*/metrics.json"))
        raise FileNotFoundError(
            f"no published record for study {study!r} at {path}; published studies: "
            f"{', '.join(known) or 'none'}; publish with: make publish")
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return record


def published_figures(record: dict[str, Any], results: Path | None = None) -> list[str]:
    """The figures of ``record`` that were published (large ones stay behind), in its order."""
    folder = (results_dir() if results is None else Path(results)) / record["study"]
    return [f for f in record.get("figures", []) if (folder / f).is_file()]


def published_text(study: str, name: str, results: Path | None = None) -> str:
    """A text file published beside a record (a Markdown table the study wrote), as a string."""
    path = (results_dir() if results is None else Path(results)) / study / name
    if not path.is_file():
        raise FileNotFoundError(f"no published file {path}; publish with: make publish")
    return path.read_text(encoding="utf-8")


def show_figure(study: str, name: str, width: int = 720, results: Path | None = None) -> None:
    """Display the published figure ``docs/results/<study>/<name>``, embedded at its stored size."""
    from IPython.display import Image, display

    path = (results_dir() if results is None else Path(results)) / study / name
    if not path.is_file():
        raise FileNotFoundError(f"no published figure {path}; publish with: make publish")
    display(Image(filename=str(path), width=width))


def show_markdown(text: str) -> None:
    """Display ``text`` as Markdown."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table of ``header`` and ``rows`` (cells converted with ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _relink(text: str, folder: Path) -> str:
    """``text`` with Markdown links relative to ``folder`` made relative to the current one."""
    def fix(m: re.Match[str]) -> str:
        target = m.group(2)
        if re.match(r"[a-z]+:|#|/", target):
            return m.group(0)
        return f"{m.group(1)}({os.path.relpath(folder / target, Path.cwd())})"

    return re.sub(r"(\[[^\]]*\])\(([^)\s]+)\)", fix, text)


def doc_section(path: Path | str, title: str, level: int = 2) -> str:
    """The section of the Markdown file ``path`` (relative to the repository) whose heading of
    ``level`` starts with ``title``, up to the next heading as high, without image links; the
    other links are made relative to the current directory."""
    path = repo_root() / path
    lines = path.read_text(encoding="utf-8").splitlines()
    heading = re.compile(rf"^#{{1,{level}}} ")
    for i, line in enumerate(lines):
        if line.startswith("#" * level + " ") and \
                line[level + 1:].lower().startswith(title.lower()):
            end = next((j for j in range(i + 1, len(lines)) if heading.match(lines[j])),
                       len(lines))
            kept = [x for x in lines[i:end] if not re.fullmatch(r"!\[[^\]]*\]\([^)]*\)\s*", x)]
            return _relink("\n".join(kept).rstrip() + "\n", path.parent)
    raise KeyError(f"no section {title!r} at heading level {level} in {path}")


def show_plot(fig: Any, width: int = 720) -> None:
    """Display a matplotlib figure as an embedded PNG (any backend) and close it."""
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buffer.getvalue(), width=width))


# --- executing and comparing ------------------------------------------------------------------


def execute(path: Path | str) -> Any:
    """Execute the notebook at ``path`` in a fresh kernel (one torch thread, cwd its folder) and
    return it with new outputs; execution stops at the first error, whose output it keeps."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL,
                            record_timing=False,
                            resources={"metadata": {"path": str(path.resolve().parent)}})
    with contextlib.suppress(CellExecutionError):  # the failing cell keeps its error output
        client.execute(env=env)
    return nb


def mask_volatile(text: str) -> str:
    """``text`` with timings, memory addresses, dates and clock times replaced by placeholders."""
    for pattern, placeholder in VOLATILE:
        text = pattern.sub(placeholder, text)
    return text


def _text(value: object) -> str:
    """A notebook text field, stored as a string or a list of lines."""
    return "".join(value) if isinstance(value, list) else str(value)


def _outputs(cell: Any) -> list[dict[str, Any]]:
    """The outputs of ``cell`` with consecutive stream outputs of one stream merged."""
    merged: list[dict[str, Any]] = []
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream" and merged and merged[-1].get("output_type") == "stream" \
                and merged[-1].get("name") == out.get("name"):
            merged[-1] = {**merged[-1], "text": _text(merged[-1]["text"]) + _text(out["text"])}
        else:
            merged.append(dict(out))
    return merged


def _kind(out: dict[str, Any]) -> str:
    """A short name of an output: its type and, for rich outputs, its richest MIME type."""
    kind = str(out.get("output_type"))
    if kind == "stream":
        return f"stream {out.get('name')}"
    data = out.get("data", {})
    for mime in (*IMAGE_TYPES, "text/html", "text/markdown", "text/latex", "text/plain"):
        if mime in data:
            return f"{kind} {mime}"
    return kind


def _first_difference(a: str, b: str) -> str:
    """The first line where ``a`` and ``b`` differ, both versions, shortened."""
    la, lb = a.splitlines(), b.splitlines()
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else "<end>"
        y = lb[i] if i < len(lb) else "<end>"
        if x != y:
            return f"line {i + 1}: stored {x[:160]!r}, now {y[:160]!r}"
    return "same lines, different line endings"


def _decode_image(data: object) -> Any:
    """Pixels of a base64 PNG or JPEG as a float array in [0, 1]."""
    import matplotlib.image as mpimg
    import numpy as np

    raw = base64.b64decode(_text(data))
    pixels = np.asarray(mpimg.imread(io.BytesIO(raw)), dtype=np.float64)
    return pixels / 255.0 if pixels.max() > 1.0 else pixels


def _image_difference(stored: object, fresh: object) -> str | None:
    """Why two encoded images differ (shape or mean pixel difference), or None when close."""
    import numpy as np

    if _text(stored) == _text(fresh):
        return None
    a, b = _decode_image(stored), _decode_image(fresh)
    if a.shape != b.shape:
        return f"image size {a.shape} stored, {b.shape} now"
    diff = float(np.abs(a - b).mean())
    if diff >= IMAGE_TOLERANCE:
        return f"image pixels differ by {diff:.2e} on average (tolerance {IMAGE_TOLERANCE:.0e})"
    return None


def _compare_output(where: str, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Differences between one stored output ``a`` and the fresh output ``b``."""
    if _kind(a) != _kind(b):
        return [f"{where}: stored {_kind(a)}, now {_kind(b)}"]
    if a.get("output_type") == "stream":
        sa, sb = mask_volatile(_text(a.get("text", ""))), mask_volatile(_text(b.get("text", "")))
        return [] if sa == sb else [f"{where} ({_kind(a)}): {_first_difference(sa, sb)}"]
    da, db = a.get("data", {}), b.get("data", {})
    if sorted(da) != sorted(db):
        return [f"{where}: MIME types {sorted(da)} stored, {sorted(db)} now"]
    found = []
    for mime in sorted(da):
        if mime in IMAGE_TYPES:
            problem = _image_difference(da[mime], db[mime])
            if problem:
                found.append(f"{where} ({mime}): {problem}")
        elif mime.startswith("text/"):
            sa, sb = mask_volatile(_text(da[mime])), mask_volatile(_text(db[mime]))
            if sa != sb:
                found.append(f"{where} ({mime}): {_first_difference(sa, sb)}")
        elif da[mime] != db[mime]:
            found.append(f"{where} ({mime}): the data differs")
    return found


def _errors(where: str, outputs: list[dict[str, Any]], which: str) -> list[str]:
    """One line per error output: an error is always a difference."""
    return [f"{where}: {which} output is an error, {o.get('ename')}: {o.get('evalue')}"
            for o in outputs if o.get("output_type") == "error"]


def compare(stored: Any, fresh: Any) -> list[str]:
    """Differences between the code-cell outputs of ``stored`` and ``fresh`` (same notebook):
    text after `mask_volatile`, figures by decoded pixels; any error output is a difference."""
    found: list[str] = []
    s_cells = [(i, c) for i, c in enumerate(stored.cells) if c.cell_type == "code"]
    f_cells = [(i, c) for i, c in enumerate(fresh.cells) if c.cell_type == "code"]
    if len(s_cells) != len(f_cells):
        found.append(f"{len(s_cells)} code cells stored, {len(f_cells)} now")
    for (i, s), (_, f) in zip(s_cells, f_cells, strict=False):
        where = f"cell {i}"
        if _text(s.source) != _text(f.source):
            found.append(f"{where}: the source differs")
            continue
        so, fo = _outputs(s), _outputs(f)
        found += _errors(where, so, "stored") + _errors(where, fo, "new")
        if len(so) != len(fo):
            found.append(f"{where}: {len(so)} outputs stored {[_kind(o) for o in so]}, "
                         f"{len(fo)} now {[_kind(o) for o in fo]}")
            continue
        for j, (a, b) in enumerate(zip(so, fo, strict=True)):
            if "error" not in (a.get("output_type"), b.get("output_type")):
                found += _compare_output(f"{where}, output {j}", a, b)
    return found


# --- command line -----------------------------------------------------------------------------


def _paths(given: Sequence[Path]) -> list[Path]:
    """The notebooks named, or every ``notebooks/*.ipynb`` of the repository."""
    return list(given) or sorted((repo_root() / NOTEBOOK_DIR).glob("*.ipynb"))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--store`` (execute, write outputs) or ``--check`` (execute, compare)."""
    import nbformat

    ap = argparse.ArgumentParser(prog="python -m scratchformer.notebooks",
                                 description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--store", action="store_true", help="execute and write outputs in place")
    mode.add_argument("--check", action="store_true", help="execute and list changed outputs")
    ap.add_argument("paths", nargs="*", type=Path,
                    help="notebooks (default: notebooks/*.ipynb of the repository)")
    args = ap.parse_args(argv)
    failed = False
    for path in _paths(args.paths):
        start = time.perf_counter()
        fresh = execute(path)
        took = time.perf_counter() - start
        if args.store:
            errors = _errors("", [o for c in fresh.cells for o in c.get("outputs", [])], "new")
            if errors:
                failed = True
                print(f"{path}: not stored, a cell failed{errors[0]}", file=sys.stderr)
                continue
            nbformat.write(fresh, path)
            print(f"{path}: stored ({took:.1f} s, {path.stat().st_size:,} bytes)")
        else:
            diffs = compare(nbformat.read(path, as_version=4), fresh)
            failed |= bool(diffs)
            for d in diffs:
                print(f"{path}: {d}")
            print(f"{path}: {len(diffs)} differences ({took:.1f} s)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
