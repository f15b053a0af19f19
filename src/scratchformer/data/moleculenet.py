"""MoleculeNet regression sets (ESOL, FreeSolv, Lipophilicity): checked CSV reading.

Each task is one CSV of the catalogue's ``molecules`` data set, resolved like every data file
(the ``SCRATCHFORMER_DATA`` mirror, the cache, then the DeepChem download with a sha256 check).
A task names its file, its SMILES and target columns and the target's unit. Reading is strict
about the file (a missing column or a non-numeric target raises a `MoleculeFormatError` naming
the file and the line); SMILES that RDKit cannot parse are skipped and counted, because the
published sets are used as they are.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scratchformer.data.errors import DataError
from scratchformer.data.resolve import resolve
from scratchformer.validation import check_choice

__all__ = ["TASKS", "MoleculeFormatError", "MoleculeSet", "Task", "load_moleculenet",
           "read_smiles_csv"]


class MoleculeFormatError(DataError, ValueError):
    """A molecule CSV that cannot be read: missing column, bad target or no rows."""


@dataclass(frozen=True)
class Task:
    """One regression task: its file in the ``molecules`` data set, columns and unit."""

    name: str
    title: str
    file: str
    smiles_column: str
    target_column: str
    unit: str
    quantity: str


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("esol", "ESOL", "delaney-processed.csv", "smiles",
         "measured log solubility in mols per litre", "log10(mol/L)", "aqueous solubility"),
    Task("freesolv", "FreeSolv", "SAMPL.csv", "smiles", "expt", "kcal/mol",
         "hydration free energy"),
    Task("lipo", "Lipophilicity", "Lipophilicity.csv", "smiles", "exp", "logD (pH 7.4)",
         "octanol/water distribution coefficient"),
)}


@dataclass
class MoleculeSet:
    """The parseable molecules of one task: SMILES, targets and what was skipped."""

    task: Task
    smiles: list[str]
    targets: np.ndarray  # (n,) float64
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (CSV line, SMILES)

    def __len__(self) -> int:
        return len(self.smiles)

    def summary(self) -> dict:
        """Counts and target range, as studies record them."""
        return {"task": self.task.name, "file": self.task.file, "molecules": len(self),
                "skipped_unparseable": len(self.skipped),
                "skipped_lines": [line for line, _ in self.skipped],
                "target_mean": float(self.targets.mean()) if len(self) else math.nan,
                "target_std": float(self.targets.std()) if len(self) else math.nan,
                "target_min": float(self.targets.min()) if len(self) else math.nan,
                "target_max": float(self.targets.max()) if len(self) else math.nan,
                "unit": self.task.unit}


def read_smiles_csv(path: str | Path, smiles_column: str, target_column: str
                    ) -> list[tuple[int, str, float]]:
    """Rows ``(line, smiles, target)`` of the CSV at ``path`` (line 1 is the header)."""
    path = Path(path)
    rows: list[tuple[int, str, float]] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in (smiles_column, target_column) if c not in header]
            if missing:
                raise MoleculeFormatError(
                    f"{path}: line 1: missing column(s) {', '.join(missing)}; the header has "
                    f"{', '.join(header) or 'no columns'}")
            si, ti = header.index(smiles_column), header.index(target_column)
            for line, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if max(si, ti) >= len(row):
                    raise MoleculeFormatError(f"{path}: line {line}: {len(row)} cells, expected "
                                              f"{len(header)}")
                text = row[ti].strip()
                try:
                    value = float(text)
                except ValueError:
                    raise MoleculeFormatError(f"{path}: line {line}: column {target_column}: "
                                              f"{text!r} is not a number") from None
                if not math.isfinite(value):
                    raise MoleculeFormatError(f"{path}: line {line}: column {target_column}: "
                                              f"{text!r} is not finite")
                rows.append((line, row[si].strip(), value))
    except UnicodeDecodeError as e:
        raise MoleculeFormatError(f"{path}: not UTF-8 text ({e.reason})") from None
    except csv.Error as e:
        raise MoleculeFormatError(f"{path}: {e}") from None
    if not rows:
        raise MoleculeFormatError(f"{path}: no data rows")
    return rows


def load_moleculenet(task: str, path: str | Path | None = None) -> MoleculeSet:
    """Task ``task`` (``esol``, ``freesolv``, ``lipo``) from the resolved catalogue file, or the
    CSV at ``path``; SMILES RDKit cannot parse are skipped and listed in ``skipped``."""
    from scratchformer.data.molecular_graph import parse_smiles

    t = TASKS[check_choice("task", task, tuple(TASKS))]
    file = resolve("molecules", t.file, progress=False) if path is None else Path(path)
    smiles, targets, skipped = [], [], []
    for line, smi, y in read_smiles_csv(file, t.smiles_column, t.target_column):
        if parse_smiles(smi) is None:
            skipped.append((line, smi))
            continue
        smiles.append(smi)
        targets.append(y)
    return MoleculeSet(t, smiles, np.asarray(targets, dtype=np.float64), skipped)
