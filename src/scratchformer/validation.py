"""Argument checks shared across the library: fail early, naming the argument and what came."""

from __future__ import annotations

import numbers


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` as an int ``>= minimum``; TypeError/ValueError naming ``name`` otherwise.

    Booleans are refused even though ``bool`` subclasses ``int``: ``dim=True`` is a bug.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
