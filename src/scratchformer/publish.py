"""Copy the figures and metrics of a full-profile run into ``docs/results/`` for the docs.

``python -m scratchformer.publish --results results/full --dest docs/results`` keeps only small
files (PNG figures, metrics.json, Markdown tables) so the published set stays light, plus the
study's served model (its ``model/`` folder: safetensors, tokenizer, manifest) when it is small.
Publishing one study's run leaves the other published studies in place; the index lists them all.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

KEEP_SUFFIXES = {".png", ".json", ".md"}
MAX_BYTES = 250_000
MODEL_SUFFIXES = {".safetensors", ".json", ".md"}
MAX_MODEL_BYTES = 8_000_000
"""A served model is published whole or not at all, and only while it stays a few MB."""


def publish(results: Path, dest: Path) -> list[Path]:
    """Copy each study's metrics, its listed figures and its top-level Markdown tables to
    ``dest/<study>/`` when small; checkpoints, logs and tokenizers stay behind."""
    results, dest = Path(results), Path(dest)
    records = sorted(results.glob("*/metrics.json"))
    if not records:
        raise FileNotFoundError(f"no study results under {results}")
    copied = []
    for metrics in records:
        study_dir = metrics.parent
        figures = json.loads(metrics.read_text()).get("figures", [])
        wanted = [metrics, *(study_dir / f for f in figures), *sorted(study_dir.glob("*.md"))]
        for path in wanted:
            if path.is_file() and path.suffix in KEEP_SUFFIXES and \
                    path.stat().st_size <= MAX_BYTES:
                target = dest / path.relative_to(results)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                copied.append(target)
        copied += _publish_model(study_dir / "model", dest / study_dir.name / "model")
    write_index(dest)
    return copied


def _publish_model(model: Path, target: Path) -> list[Path]:
    """Copy a study's ``model/`` folder whole when it is small (else nothing), replacing the
    published one so no file of an older model stays beside the new weights."""
    files = sorted(p for p in model.glob("*") if p.is_file() and p.suffix in MODEL_SUFFIXES) \
        if model.is_dir() else []
    if not files or sum(p.stat().st_size for p in files) > MAX_MODEL_BYTES:
        return []
    if target.is_dir():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    return [Path(shutil.copy2(p, target / p.name)) for p in files]


def write_index(dest: Path) -> Path:
    """``dest/README.md``: one row per published study (every ``dest/<study>/metrics.json``)
    with its profile, run time and the figures present beside it."""
    rows = ["# Published study results", "",
            "Full-profile records copied by `make publish` (`python -m scratchformer.publish`); "
            "each folder holds the study's `metrics.json` (config, seed, versions, metrics) and "
            "figures.", "", "| study | profile | wall time (s) | finished | figures |",
            "|---|---|---:|---|---|"]
    for path in sorted(Path(dest).glob("*/metrics.json")):
        rec = json.loads(path.read_text())
        study = rec["study"]
        figs = ", ".join(f"[{f}]({study}/{f})" for f in rec.get("figures", [])
                         if (Path(dest) / study / f).is_file())
        rows.append(f"| [{study}]({study}/metrics.json) | {rec['profile']} | "
                    f"{rec['wall_time_s']:.0f} | {rec['finished_at'][:10]} | {figs} |")
    index = Path(dest) / "README.md"
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text("\n".join(rows) + "\n")
    return index


def main() -> None:
    """Command-line entry for ``make publish``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results/full")
    ap.add_argument("--dest", default="docs/results")
    args = ap.parse_args()
    copied = publish(Path(args.results), Path(args.dest))
    print(f"published {len(copied)} files to {args.dest}")


if __name__ == "__main__":
    main()
