"""ETT (Electricity Transformer Temperature, hourly): checked CSV reading, splits and windows.

The Informer/Autoformer protocol, which every published ETT figure follows:

* **splits by time**: months 1-12, 13-16 and 17-20 of the record, i.e. hours [0, 8640),
  [8640, 11520) and [11520, 14400) for train, validation and test (the last 3,020 rows are
  unused); a validation or test window may read its history from the ``lookback`` hours
  before its split (Informer's ``border1 = start - seq_len``);
* **standardisation** per channel with the mean and (population) standard deviation of the
  train split only; errors are reported on that standardised scale;
* **sliding windows**, stride 1: a window is the position ``t0`` of its first forecast hour,
  with history ``[t0 - lookback, t0)`` and target ``[t0, t0 + horizon)``; a split holds the
  ``t0`` whose target lies inside it, so there are ``2880 - horizon + 1`` test windows whatever
  the lookback.

Reading is strict: a missing column, a non-numeric or non-finite cell, or too few rows raise a
`SeriesFormatError` naming the file and the line.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from scratchformer.data.errors import DataError
from scratchformer.data.resolve import resolve
from scratchformer.validation import check_choice, check_int

__all__ = [
    "CHANNELS",
    "DATASETS",
    "SPLITS",
    "SPLIT_HOURS",
    "TARGET",
    "ETTData",
    "SeriesFormatError",
    "load_ett",
    "read_columns",
]

DATASETS = ("ETTh1", "ETTh2")
CHANNELS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
TARGET = "OT"
SPLITS = ("train", "val", "test")
SPLIT_HOURS = {"train": (0, 8640), "val": (8640, 11520), "test": (11520, 14400)}


class SeriesFormatError(DataError, ValueError):
    """A CSV of series that cannot be read: missing column, bad cell or too few rows."""


def read_columns(path: str | Path, columns: Sequence[str], min_rows: int = 1,
                 required: Sequence[str] = ()) -> np.ndarray:
    """The float64 values (rows, len(columns)) of ``columns`` in the CSV at ``path``.

    ``required`` names further columns that must exist (not read); a problem raises
    `SeriesFormatError` naming ``path`` and the line (line 1 is the header).
    """
    path = Path(path)
    min_rows = check_int("min_rows", min_rows, 1)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise SeriesFormatError(f"{path}: line 1: empty file, expected a header row")
            header = [h.strip() for h in header]
            missing = [c for c in (*required, *columns) if c not in header]
            if missing:
                raise SeriesFormatError(
                    f"{path}: line 1: missing column(s) {', '.join(missing)}; the header has "
                    f"{', '.join(header) or 'no columns'}")
            index = [header.index(c) for c in columns]
            rows: list[list[float]] = []
            for line, row in enumerate(reader, start=2):
                if not row or all(not cell.strip() for cell in row):
                    continue
                rows.append([_cell(path, line, row, i, name)
                             for i, name in zip(index, columns, strict=True)])
    except UnicodeDecodeError as e:
        raise SeriesFormatError(f"{path}: not UTF-8 text ({e.reason})") from None
    except csv.Error as e:
        raise SeriesFormatError(f"{path}: line {reader.line_num}: {e}") from None
    if len(rows) < min_rows:
        raise SeriesFormatError(f"{path}: line {len(rows) + 1}: too few rows: {len(rows)} data "
                                f"row(s), at least {min_rows} needed")
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(columns))


def _cell(path: Path, line: int, row: list[str], i: int, name: str) -> float:
    """Cell ``i`` (column ``name``) of ``row`` as a finite float, or a `SeriesFormatError`."""
    if i >= len(row):
        raise SeriesFormatError(f"{path}: line {line}: column {name} is missing "
                                f"({len(row)} cells in the row)")
    text = row[i].strip()
    try:
        value = float(text)
    except ValueError:
        raise SeriesFormatError(
            f"{path}: line {line}: column {name}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SeriesFormatError(f"{path}: line {line}: column {name}: {text!r} is not finite")
    return value


@dataclass(frozen=True)
class ETTData:
    """One ETT data set cut to the protocol's 14,400 hours, raw and standardised."""

    name: str
    raw: np.ndarray  # (14400, 7) float64, channels in CHANNELS order
    mean: np.ndarray  # (7,) train-split mean
    std: np.ndarray  # (7,) train-split population std

    @cached_property
    def values(self) -> np.ndarray:
        """The standardised series (14400, 7) float32: ``(raw - mean) / std``."""
        return ((self.raw - self.mean) / self.std).astype(np.float32)

    def split(self, name: str) -> tuple[int, int]:
        """The hours ``[start, end)`` of split ``name``."""
        return SPLIT_HOURS[check_choice("split", name, SPLITS)]

    def windows(self, split: str, horizon: int, lookback: int, stride: int = 1) -> np.ndarray:
        """Forecast starts ``t0`` of the split's windows: target ``[t0, t0 + horizon)`` inside
        the split, history ``[t0 - lookback, t0)`` inside the data (train: inside train)."""
        horizon, lookback = check_int("horizon", horizon), check_int("lookback", lookback)
        stride = check_int("stride", stride)
        start, end = self.split(split)
        first = start + lookback if split == "train" else start
        if first < lookback:
            raise ValueError(f"lookback={lookback} reaches before the first hour")
        last = end - horizon
        if last < first:
            raise ValueError(f"the {split} split has no window of lookback {lookback} and "
                             f"horizon {horizon}")
        return np.arange(first, last + 1, stride)

    def channel(self, name: str) -> int:
        """The column index of channel ``name``."""
        return CHANNELS.index(check_choice("channel", name, CHANNELS))


def load_ett(name: str = "ETTh1", path: str | Path | None = None) -> ETTData:
    """ETT data set ``name`` (resolved: mirror, cache, checksummed download) or the CSV at
    ``path``, checked, cut to 14,400 hours and standardised on its train split."""
    check_choice("name", name, DATASETS)
    file = resolve("ETT", f"{name}.csv", progress=False) if path is None else Path(path)
    end = SPLIT_HOURS["test"][1]
    raw = read_columns(file, CHANNELS, min_rows=end, required=("date",))[:end]
    train = raw[slice(*SPLIT_HOURS["train"])]
    mean, std = train.mean(0), train.std(0)
    if not (std > 0).all():
        flat = [c for c, s in zip(CHANNELS, std, strict=True) if not s > 0]
        raise SeriesFormatError(f"{file}: channel(s) {', '.join(flat)} are constant over the "
                                "train split")
    return ETTData(name, raw, mean, std)
