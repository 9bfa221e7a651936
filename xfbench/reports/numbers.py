"""Human number formats, the same in every report: ``1.31 ms``, ``99,560 samples/s``, ``898 MB``, ``3.12×``.

Rules: three significant digits for measurements (the noise here is a few percent), thousands separators for
counts and rates, a unit chosen so the number reads naturally (µs / ms / s), and ``-`` for a value not measured.
"""

from __future__ import annotations

import math

MISSING = "-"


def _missing(value: float | None) -> bool:
    return value is None or isinstance(value, bool) or not math.isfinite(value)


def significant(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, thousands separated, never in exponent form.

    Example:
        >>> significant(0.012345), significant(9956000.0), significant(12.0)
        ('0.0123', '9,960,000', '12.0')
    """
    if _missing(value):
        return MISSING
    if value == 0:
        return "0"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    if decimals >= 0:
        return f"{value:,.{decimals}f}"
    return f"{round(value, decimals):,.0f}"


def duration(seconds: float | None) -> str:
    """A duration in the unit that reads best.

    Example:
        >>> duration(0.0000726), duration(0.00131), duration(0.315), duration(94.4)
        ('72.6 µs', '1.31 ms', '315 ms', '94.4 s')
    """
    if _missing(seconds):
        return MISSING
    if abs(seconds) < 1e-3:
        return f"{significant(seconds * 1e6)} µs"
    if abs(seconds) < 1:
        return f"{significant(seconds * 1e3)} ms"
    return f"{significant(seconds)} s"


def step_time(ms: float | None) -> str:
    """A step time given in milliseconds (``1.31 ms``, ``72.6 µs``)."""
    return MISSING if _missing(ms) else duration(ms / 1e3)  # type: ignore[operator]


def rate(per_second: float | None, unit: str = "samples/s") -> str:
    """A throughput: ``99,560 samples/s`` (whole numbers from 100 up).

    Example:
        >>> rate(99560.4), rate(11553010.0), rate(42.42)
        ('99,560 samples/s', '11,553,010 samples/s', '42.4 samples/s')
    """
    if _missing(per_second):
        return MISSING
    text = f"{round(per_second):,}" if abs(per_second) >= 100 else significant(per_second)  # type: ignore[arg-type]
    return f"{text} {unit}".strip()


def megabytes(mb: float | None) -> str:
    """Memory in MiB, whole: ``1,138 MB``."""
    return MISSING if _missing(mb) else f"{round(mb):,} MB"  # type: ignore[arg-type]


def metric(value: float | None, std: float | None = None) -> str:
    """An accuracy or R²: four decimals, or ``mean ± std`` over seeds with three.

    Example:
        >>> metric(0.97493), metric(0.9701, 0.0068)
        ('0.9749', '0.970 ± 0.007')
    """
    if _missing(value):
        return MISSING
    if std is not None and not _missing(std):
        return f"{value:.3f} ± {std:.3f}"
    return f"{value:.4f}"


def times(ratio: float | None) -> str:
    """A ratio: ``3.12×``."""
    return MISSING if _missing(ratio) else f"{ratio:.2f}×"


def interval(low: float | None, high: float | None) -> str:
    """A 95% interval of ratios: ``[3.05–3.20]``."""
    return MISSING if _missing(low) or _missing(high) else f"[{low:.2f}–{high:.2f}]"


def scientific(value: float | None) -> str:
    """A small difference (parity): ``2.1e-06``."""
    return MISSING if _missing(value) else f"{value:.2g}"
