"""Build ``report.md`` and a self-contained ``report.html`` from every stored ``metrics.json``."""

from __future__ import annotations

import base64
import errno
import html
import json
from pathlib import Path
from typing import Any

from scratchformer.report.tradeoff import analysis, collect, fmt, pareto_front, plot_tradeoffs


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten nested metrics into (dotted key, scalar) rows; long lists are summarised."""
    rows: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(d, list):
        if len(d) <= 8 and all(isinstance(x, (int, float, str, bool)) or x is None for x in d):
            rows.append((prefix, ", ".join(_fmt(x) for x in d)))
        else:
            rows.append((prefix, f"[{len(d)} values]"))
    else:
        rows.append((prefix, d))
    return rows


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


class ReportError(ValueError):
    """A stored study record (``metrics.json``) the report cannot use; the message names it."""


# Fields every record needs, with their types; "description" and "figures" are optional.
_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "study": str, "profile": str, "wall_time_s": (int, float), "finished_at": str,
    "metrics": dict,
}


def _check_record(rec: Any, path: Path) -> dict:
    """``rec`` if it has the fields the report reads, else a ReportError naming ``path``."""
    if not isinstance(rec, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(rec).__name__}")
    for key, kind in _RECORD_FIELDS.items():
        if not isinstance(rec.get(key), kind) or isinstance(rec.get(key), bool):
            raise ReportError(f"{path}: field {key!r} is missing or not a "
                              f"{getattr(kind, '__name__', 'number')}")
    if not isinstance(rec.get("description", ""), str):
        raise ReportError(f"{path}: field 'description' must be a string")
    figures = rec.get("figures", [])
    if not isinstance(figures, list) or not all(isinstance(f, str) for f in figures):
        raise ReportError(f"{path}: field 'figures' must be a list of file names")
    return rec


def load_records(results: Path) -> list[dict]:
    """All study records under ``results`` sorted by study name; a malformed one raises
    `ReportError` naming its file."""
    records = []
    for path in sorted(Path(results).glob("*/metrics.json")):
        try:
            rec = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ReportError(f"{path} is not UTF-8 text ({e})") from None
        except (json.JSONDecodeError, RecursionError) as e:
            raise ReportError(f"{path} is not valid JSON: {e}") from None
        rec = _check_record(rec, path)
        rec["_dir"] = str(path.parent)
        rec["_path"] = str(path)
        records.append(rec)
    return records


def _output_folder(out: Path) -> Path:
    """Create the report folder ``out`` if needed; a file in its place is a clear OSError."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "the report folder is a file", str(out))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _figure_path(rec: dict, fig: str) -> Path | None:
    """Where figure ``fig`` of a record is, or None when the name leaves the study folder."""
    folder = Path(rec["_dir"]).resolve()
    path = (folder / fig).resolve()
    return path if path.is_relative_to(folder) else None


def build_report(results: Path, out: Path | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (figures inlined as base64) and return both paths."""
    results = Path(results)
    records = load_records(results)
    if not records:
        raise FileNotFoundError(
            f"no study results under {results}; run: scratchformer run all"
        )
    out = _output_folder(Path(out) if out else results)
    md = ["# scratchformer report", ""]
    body = ["<h1>scratchformer report</h1>"]
    md.append("| study | profile | wall time (s) | finished |")
    md.append("|---|---|---:|---|")
    for r in records:
        md.append(
            f"| {r['study']} | {r['profile']} | {r['wall_time_s']:.1f} | {r['finished_at']} |"
        )
    md.append("")
    try:
        tradeoffs = collect(records)
    except ValueError as e:
        raise ReportError(f"a tradeoff block under {results} is malformed: {e}") from None
    if tradeoffs:
        md_part, html_part = _tradeoff_section(tradeoffs, out)
        md += md_part
        body += html_part
    for r in records:
        name = r["study"]
        md += [f"## {name}", "", r.get("description", ""), ""]
        body += [f"<h2>{html.escape(name)}</h2>", f"<p>{html.escape(r.get('description', ''))}</p>"]
        rows = _flatten(r["metrics"])
        md += ["| metric | value |", "|---|---|"]
        md += [f"| {k} | {_fmt(v)} |" for k, v in rows]
        md.append("")
        body.append("<table><tr><th>metric</th><th>value</th></tr>")
        body += [
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows
        ]
        body.append("</table>")
        for fig in r.get("figures", []):
            found = _figure_path(r, fig)
            if found is None:
                raise ReportError(f"{r['_path']}: figure {fig!r} is outside its study folder")
            path = Path(r["_dir"]) / fig
            rel = path.relative_to(out) if path.is_relative_to(out) else path.resolve()
            md += [f"![{name}: {fig}]({rel})", ""]
            if path.suffix == ".png" and path.exists():
                body.append(_inline_png(path, fig))
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text("\n".join(md) + "\n")
    style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
             "img{max-width:100%}")
    html_path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>scratchformer report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
    return md_path, html_path


def _inline_png(path: Path, caption: str) -> str:
    """An HTML figure with the PNG at ``path`` embedded as base64."""
    data = base64.b64encode(path.read_bytes()).decode()
    alt = html.escape(caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
            f"<figcaption>{alt}</figcaption></figure>")


def _tradeoff_section(tradeoffs: list, out: Path) -> tuple[list[str], list[str]]:
    """Markdown and HTML of the speed-vs-accuracy section: tables, Pareto plot, analysis."""
    figure = plot_tradeoffs(tradeoffs, out / "tradeoff.png")
    md = ["## Speed vs accuracy", "",
          "Every study that compares variants at a cost records (speed, quality) points; the "
          "Pareto front holds the variants that no other variant beats on both axes.", "",
          f"![speed vs accuracy]({figure.name})", ""]
    body = ["<h2>Speed vs accuracy</h2>", _inline_png(figure, "speed vs accuracy")]
    for t in tradeoffs:
        front = set(pareto_front(t.points, t.higher_is_better))
        md += [f"### {t.study}", "", f"| variant | {t.speed_name} | {t.quality_name} | Pareto |",
               "|---|---:|---:|:---:|"]
        md += [f"| {p['variant']} | {fmt(p['speed'])} | {fmt(p['quality'])} | "
               f"{'yes' if p['variant'] in front else ''} |" for p in t.points]
        lines = analysis(t)
        md += ["", *lines, ""]
        body.append(f"<h3>{html.escape(t.study)}</h3><table><tr><th>variant</th>"
                    f"<th>{html.escape(t.speed_name)}</th><th>{html.escape(t.quality_name)}</th>"
                    "<th>Pareto</th></tr>")
        body += [f"<tr><td>{html.escape(str(p['variant']))}</td><td>{fmt(p['speed'])}</td>"
                 f"<td>{fmt(p['quality'])}</td><td>{'yes' if p['variant'] in front else ''}"
                 "</td></tr>" for p in t.points]
        body.append("</table><ul>" + "".join(
            f"<li>{html.escape(line[2:]).replace('**', '')}</li>" for line in lines) + "</ul>")
    return md, body
