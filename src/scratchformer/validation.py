"""Argument checks shared across the library: fail early, naming the argument and what came.

Every check returns the value (converted to its plain Python type) so that it can be used inline,
``self.n = check_int("n", n)``, and raises ``TypeError`` for a value of the wrong kind and
``ValueError`` for a value of the right kind out of range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_optional_int",
    "check_probability",
    "check_real",
]


def check_int(name: str, value: object, minimum: int | None = 1, maximum: int | None = None
              ) -> int:
    """Return ``value`` as an int in [``minimum``, ``maximum``] (None: unbounded on that side).

    Booleans are refused even though ``bool`` subclasses ``int``: ``dim=True`` is a bug.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def check_optional_int(name: str, value: object, minimum: int | None = 1) -> int | None:
    """`check_int`, letting None through."""
    return None if value is None else check_int(name, value, minimum)


def check_real(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    finite: bool = True,
) -> float:
    """Return ``value`` as a float in the given range; NaN is always refused, ±inf unless
    ``finite=False``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if minimum is not None and (value < minimum or (not min_inclusive and value == minimum)):
        op = ">=" if min_inclusive else ">"
        raise ValueError(f"{name} must be {op} {minimum}, got {value}")
    if maximum is not None and (value > maximum or (not max_inclusive and value == maximum)):
        op = "<=" if max_inclusive else "<"
        raise ValueError(f"{name} must be {op} {maximum}, got {value}")
    return value


def check_probability(name: str, value: object) -> float:
    """A dropout-style probability: a float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool (not merely truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """``value`` if it is one of the strings ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
