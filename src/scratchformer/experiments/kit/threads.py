"""Run a block of a study with a given number of torch threads, restoring the old count after.

Small models on a 2-core machine often train faster on one thread (a second one mostly waits at
barriers), so most studies have a ``threads`` knob; ``0`` leaves torch's setting alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from scratchformer.validation import check_int

__all__ = ["torch_threads"]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block (``n = 0``: unchanged); restored on exit."""
    check_int("threads (0 = torch's default)", n, 0)
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
