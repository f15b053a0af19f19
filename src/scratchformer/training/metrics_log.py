"""The training log: one JSON object per line (JSONL), appended and flushed as training goes.

Each line of a trainer log has the fields in `LOG_FIELDS` plus whatever the evaluation function
returned at that step. JSONL keeps a crashed run's log readable up to its last full line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

LOG_FIELDS: dict[str, str] = {
    "step": "optimizer updates done so far (1 after the first update)",
    "loss": "training loss of this step (mean over its micro-batches)",
    "lr": "learning rate used by this step's update",
    "grad_norm": "global L2 norm of the gradient before clipping",
    "tokens": "tokens trained on so far (null if loss_fn does not report them)",
    "tokens_per_s": "throughput since the previous record (eval, checkpoints, hooks excluded)",
    "ms_per_step": "mean wall time per update since the previous record (same exclusions)",
    "elapsed_s": "wall time since training started (carried over on resume)",
}


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSONL log; a half-written last line (crash mid-write) is ignored."""
    records = []
    lines = Path(path).read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:80]!r}") from None
    return records


class MetricsLog:
    """Append-only JSONL writer; on resume it first drops records newer than the resumed step."""

    def __init__(self, path: str | os.PathLike, *, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        mode = "a" if resume_step is not None else "w"
        self._file: TextIO = open(self.path, mode)  # noqa: SIM115  (closed by close())

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as a line and flush, so the log is current if the run dies."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()
