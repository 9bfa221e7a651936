"""What a :class:`~xfbench.compare.results.result.Result` shows of itself but computes elsewhere: its step-time
ratios (``compare.stats``), its notebook HTML and its charts (``reports``).

The model imports neither of those rooms (arrows point down): the package's facade (``xfbench/__init__.py``, the
top) registers the functions here when ``xfbench`` is imported, which every import of a submodule does first.

Example:
    >>> import xfbench
    >>> sorted(registered())
    ['compare', 'html', 'plot']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_VIEWS: dict[str, Callable[..., Any]] = {}


def register(**views: Callable[..., Any]) -> None:
    """Register (or replace) views by name: ``compare(result, relative_to)``, ``html(result)``,
    ``plot(result, kinds, task, target)``."""
    _VIEWS.update(views)


def registered() -> list[str]:
    return list(_VIEWS)


def view(name: str) -> Callable[..., Any]:
    """The registered view ``name`` (a RuntimeError when the facade did not register it: ``import xfbench``)."""
    try:
        return _VIEWS[name]
    except KeyError:
        raise RuntimeError(f"no {name!r} view is registered; import xfbench first") from None
