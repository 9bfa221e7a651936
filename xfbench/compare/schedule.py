"""The one timing scheduler: live participants take turns in rounds, in an order that changes from round to round.

A participant is anything that can take a timing turn when called: a worker process of ``xfbench run`` (through its
channel), a native training loop of the overhead benchmark, a base or head worker of a CI comparison. In each round
every live participant takes one turn, one at a time, so the machine's drift (its load moves by tens of percent
over seconds here) hits every participant alike and ratios between turns of the same round cancel it.

Orders: ``rotate`` (the default) shifts the base order by one place each round, so every participant runs in
every position equally often (with two participants it alternates A-B, B-A); ``shuffle`` draws a permutation per
round from a seeded generator. A participant whose turn fails (:class:`TurnError`) leaves the schedule; the others
go on.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from xfbench.compare.protocol import ORDERS
from xfbench.errors import unknown_name


class TurnError(Exception):
    """A participant could not take its turn (its process died, hung or raised); the message says why."""


@dataclass
class TurnRecord:
    """One turn as it happened: who, which round, its position in that round, when it started (seconds since the
    schedule began) and what the participant returned."""

    key: Hashable
    round: int
    position: int
    start_s: float
    value: Any


def round_order(keys: list[Hashable], round_index: int, order: str, rng: random.Random) -> list[Hashable]:
    """The order of one round.

    Example:
        >>> round_order(["a", "b", "c"], 1, "rotate", random.Random(0))
        ['b', 'c', 'a']
    """
    if order == "rotate":
        shift = round_index % len(keys) if keys else 0
        return keys[shift:] + keys[:shift]
    if order == "shuffle":
        shuffled = list(keys)
        rng.shuffle(shuffled)
        return shuffled
    raise unknown_name("order", order, ORDERS)


def run_rounds(participants: Mapping[Hashable, Callable[[], Any]], rounds: int, order: str = "rotate", seed: int = 0,
               on_turn: Callable[[TurnRecord], None] | None = None,
               on_failure: Callable[[Hashable, str], None] | None = None, warmup_rounds: int = 0) -> list[TurnRecord]:
    """Give every participant one turn per round for ``rounds`` rounds; returns every turn in the order taken.

    ``participants`` maps a key to a callable that takes one turn and returns its measurement (or raises
    :class:`TurnError`). ``on_turn`` sees each turn as it finishes; ``on_failure`` each participant that drops out.
    ``warmup_rounds`` rounds go first and are not recorded: a worker that sat idle while the others trained runs
    its first turn measurably off (measured here: tf-graph's 28x28 CNN up to 30% slow, JAX's tiny MLP 10% fast in
    the first round or two), so those turns are warm-up, like the warm-up steps.

    Example:
        >>> taken = run_rounds({"a": lambda: 1, "b": lambda: 2}, rounds=2)
        >>> [(t.key, t.round, t.position) for t in taken]
        [('a', 0, 0), ('b', 0, 1), ('b', 1, 0), ('a', 1, 1)]
    """
    live = list(participants)
    rng = random.Random(seed)
    started = time.perf_counter()
    taken: list[TurnRecord] = []
    for index in range(warmup_rounds + rounds):
        round_index = index - warmup_rounds  # negative while warming up
        position = 0
        for key in round_order(list(participants), index, order, rng):
            if key not in live:
                continue
            start_s = time.perf_counter() - started
            try:
                value = participants[key]()
            except TurnError as failure:
                live.remove(key)
                if on_failure is not None:
                    on_failure(key, str(failure))
                continue
            if round_index >= 0:
                record = TurnRecord(key, round_index, position, start_s, value)
                taken.append(record)
                if on_turn is not None:
                    on_turn(record)
            position += 1
        if not live:
            break
    return taken
