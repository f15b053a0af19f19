"""Copy the figures and metrics of a full-profile run into ``docs/results/`` for the docs.

``python -m scratchformer.publish --results results/full --dest docs/results`` keeps only small
files (PNG figures, metrics.json, Markdown tables) so the published set stays light.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

KEEP_SUFFIXES = {".png", ".json", ".md"}
MAX_BYTES = 250_000


def publish(results: Path, dest: Path) -> list[Path]:
    """Copy every small figure/metrics file under ``results/<study>/`` to ``dest/<study>/``."""
    results, dest = Path(results), Path(dest)
    if not any(results.glob("*/metrics.json")):
        raise FileNotFoundError(f"no study results under {results}")
    copied = []
    for path in sorted(results.rglob("*")):
        if path.is_file() and path.suffix in KEEP_SUFFIXES and path.stat().st_size <= MAX_BYTES:
            target = dest / path.relative_to(results)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(target)
    return copied


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
