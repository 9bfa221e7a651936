"""Floating-point operations of one training step, counted from the task spec (no framework).

A multiply-add counts as 2 FLOPs. Forward: dense and conv layers and attention (its four projections, the scores
``q k^T`` and the mixing ``p v``, counted in full even when causal, as most kernels compute them), each ``2 *
MACs``, nested ones included; embeddings, normalizations, pooling, activations and the loss are ignored (they are
memory-bound and small). Backward: the weight gradient costs the forward's MACs again,
and the input gradient too, except for the first parametric layer (nothing needs its input gradient).
So a step is about 3x the forward.
"""

from __future__ import annotations

import math

from xfbench.tasks.layers import walk
from xfbench.tasks.spec import Conv2D, Dense, SelfAttention, Task


def forward_macs(task: Task) -> list[int]:
    """Multiply-adds per sample of each dense, conv and attention layer, in order (nested ones included)."""
    macs = []
    for site in walk(task.layers, task.input_shape):
        layer, in_shape = site.layer, site.in_shape
        if isinstance(layer, Dense):
            macs.append(math.prod(in_shape) * layer.units)
        elif isinstance(layer, Conv2D):
            out_shape = layer.output_shape(in_shape, site.prefix)
            macs.append(math.prod(out_shape) * layer.kernel_size[0] * layer.kernel_size[1] * in_shape[2])  # type: ignore[index]
        elif isinstance(layer, SelfAttention):
            length, width = in_shape
            inner = layer.heads * layer.head_size
            macs.append(4 * length * width * inner + 2 * length * length * inner)
    return macs


def flops_per_step(task: Task) -> int:
    """FLOPs of one optimizer step (forward + backward) on one batch.

    Example:
        >>> from xfbench.tasks import Dataset, Dense, Adam
        >>> import numpy as np
        >>> data = Dataset(np.zeros((4, 3), "float32"), np.zeros(4, "int64"),
        ...                np.zeros((1, 3), "float32"), np.zeros(1, "int64"))
        >>> task = Task("t", data, (Dense(5), Dense(2)), "softmax_cross_entropy", Adam(), batch_size=2, epochs=1)
        >>> flops_per_step(task)  # forward 2*2*(15+10) + weight grads 2*2*25 + input grads (2nd layer) 2*2*10
        240
    """
    macs = forward_macs(task)
    if not macs:
        return 0
    per_sample = 3 * sum(macs) - macs[0]
    return 2 * task.batch_size * per_sample
