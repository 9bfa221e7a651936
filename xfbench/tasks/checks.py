"""The checks every spec value goes through when it is built: one-line errors naming the field, the value and what is
allowed. Plain Python and NumPy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from xfbench.errors import XfbenchError


def choice(kind: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise XfbenchError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")


def is_int(value: object) -> bool:
    """An integer that is not a bool (``Dense(True)`` is a mistake, not one unit)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: object) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value))


def positive_int(what: str, value: object) -> int:
    """``value`` if it is an integer > 0, else the error naming ``what``."""
    if not is_int(value) or value <= 0:  # type: ignore[operator]
        raise XfbenchError(f"{what} must be a positive int, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def seed_value(what: str, value: object) -> int:
    """A seed: an integer >= 0 (NumPy's generators refuse negative ones)."""
    if not is_int(value) or value < 0:  # type: ignore[operator]
        raise XfbenchError(f"{what} must be an int >= 0, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def number_in(what: str, value: object, low: float, high: float, low_open: bool = False, high_open: bool = False
              ) -> float:
    """``value`` if it is a finite number in the range, else the error naming ``what`` and the range."""
    if not is_number(value) or (value <= low if low_open else value < low) or (  # type: ignore[operator]
            value >= high if high_open else value > high):  # type: ignore[operator]
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise XfbenchError(f"{what} must be a finite number in {bounds}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    """``(value, value)`` for an int, the pair itself for two positive ints, else the error naming ``what``."""
    try:
        items = (value, value) if is_int(value) else tuple(value)  # type: ignore[arg-type]
    except TypeError:
        items = ()
    if len(items) != 2 or not all(is_int(v) and v > 0 for v in items):
        raise XfbenchError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return int(items[0]), int(items[1])


def flag(what: str, value: object) -> bool:
    """``value`` if it is a bool (not a truthy number or string), else the error naming ``what``."""
    if not isinstance(value, (bool, np.bool_)):
        raise XfbenchError(f"{what} must be True or False, got {value!r}")
    return bool(value)
