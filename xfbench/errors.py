"""The one exception type xfbench raises for bad user input and unusable configurations.

Rule: every message says what was received, what was expected, and how to fix it, on one line.
"""

from __future__ import annotations

from collections.abc import Iterable


class XfbenchError(ValueError):
    """Bad user input (an unknown name, a bad value) or a configuration xfbench cannot run."""


def unknown_name(kind: str, received: str, choices: Iterable[str]) -> XfbenchError:
    """Build the standard 'unknown X' error naming the valid choices.

    Example:
        >>> str(unknown_name("backend", "pytorch", ["torch", "jax"]))
        "unknown backend 'pytorch'; choose one of: jax, torch"
    """
    return XfbenchError(f"unknown {kind} {received!r}; choose one of: {', '.join(sorted(choices))}")
