"""The optimizers of the task spec, every formula and hyperparameter explicit, so each adapter computes the same
update. Plain Python.

Where the frameworks differ, the spec picks one and says so: Adam's epsilon after the bias correction (PyTorch's and
optax's; Keras adds it before), AdamW's decay decoupled and applied with the step's learning rate to every trainable
tensor (PyTorch's, optax's and Keras' placement), gradient clipping by the global norm with no epsilon
(``g * min(1, clip_norm / ||g||)``: optax's and Keras'; PyTorch adds 1e-6 to the norm), and a learning-rate schedule
defined for the t-th update, t counted from 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Union

from xfbench.errors import XfbenchError
from xfbench.tasks.checks import number_in, positive_int


@dataclass(frozen=True)
class WarmupCosine:
    """The learning rate of the t-th update (t from 1): ``learning_rate * factor(t)``, rising linearly over
    ``warmup_steps`` (``t / warmup_steps``), then falling along a cosine to ``final_ratio`` at ``total_steps`` and
    staying there.

    Example:
        >>> schedule = WarmupCosine(warmup_steps=2, total_steps=4, final_ratio=0.1)
        >>> [round(schedule.factor(t), 3) for t in (1, 2, 3, 4, 5)]
        [0.5, 1.0, 0.55, 0.1, 0.1]
    """

    warmup_steps: int
    total_steps: int
    final_ratio: float = 0.0

    def __post_init__(self) -> None:
        warmup = self.warmup_steps
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise XfbenchError(f"WarmupCosine warmup_steps must be an int >= 0, got {warmup!r}")
        object.__setattr__(self, "total_steps", positive_int("WarmupCosine total_steps", self.total_steps))
        if self.total_steps <= warmup:
            raise XfbenchError(f"WarmupCosine total_steps ({self.total_steps}) must be more than warmup_steps "
                               f"({warmup})")
        number_in("WarmupCosine final_ratio", self.final_ratio, 0, 1)

    def factor(self, step: int) -> float:
        """The factor of the learning rate at update ``step`` (from 1)."""
        if step <= self.warmup_steps:
            return step / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class SGD:
    """SGD with (heavy-ball) momentum: ``buf = momentum * buf + grad; param -= learning_rate * buf``.

    This is PyTorch's and optax's formula (dampening 0, no Nesterov); Keras' ``v = m*v - lr*g`` is the same
    for a constant learning rate.
    """

    learning_rate: float
    momentum: float = 0.0

    def __post_init__(self) -> None:
        number_in("SGD learning_rate", self.learning_rate, 0, math.inf, low_open=True, high_open=True)
        number_in("SGD momentum", self.momentum, 0, 1, high_open=True)


def _common(opt: Adam, kind: str) -> None:
    number_in(f"{kind} learning_rate", opt.learning_rate, 0, math.inf, low_open=True, high_open=True)
    for name in ("beta1", "beta2"):
        number_in(f"{kind} {name}", getattr(opt, name), 0, 1, high_open=True)
    number_in(f"{kind} epsilon", opt.epsilon, 0, math.inf, low_open=True, high_open=True)
    if opt.clip_norm is not None:
        number_in(f"{kind} clip_norm", opt.clip_norm, 0, math.inf, low_open=True, high_open=True)
    if opt.schedule is not None and not isinstance(opt.schedule, WarmupCosine):
        raise XfbenchError(f"{kind} schedule must be an xfbench.tasks.WarmupCosine or None, got "
                           f"{type(opt.schedule).__name__}")


@dataclass(frozen=True)
class Adam:
    """Adam with bias correction, every hyperparameter explicit.

    Update at step t (from 1), after clipping the gradients by their global norm when ``clip_norm`` is set:
    ``m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; param -= lr_t * (m / (1-b1**t)) / (sqrt(v / (1-b2**t)) + epsilon)``
    with ``lr_t = learning_rate * schedule.factor(t)`` (or ``learning_rate``). That is PyTorch's and optax's formula.
    Keras applies epsilon before the bias correction and defaults it to 1e-7, PyTorch and optax to 1e-8: xfbench
    passes the same value to every backend and uses this formula everywhere.
    """

    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    clip_norm: float | None = None
    schedule: WarmupCosine | None = None
    ADDED: ClassVar[dict[str, Any]] = {"clip_norm": None, "schedule": None}  # see tasks.layers.spec_repr

    def __post_init__(self) -> None:
        _common(self, "Adam")

    def rate(self, step: int) -> float:
        """The learning rate of update ``step`` (from 1)."""
        return self.learning_rate * (self.schedule.factor(step) if self.schedule is not None else 1.0)


@dataclass(frozen=True)
class AdamW(Adam):
    """Adam with decoupled weight decay: before Adam's update, ``param -= lr_t * weight_decay * param`` on every
    trainable tensor (PyTorch's, optax's and Keras' formula, the decay scaled by the step's learning rate)."""

    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        _common(self, "AdamW")
        number_in("AdamW weight_decay", self.weight_decay, 0, math.inf, high_open=True)


Optimizer = Union[SGD, Adam, AdamW]
OPTIMIZER_TYPES = (SGD, Adam, AdamW, WarmupCosine)
