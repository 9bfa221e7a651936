"""Native JAX training loop (no xfbench code, no optax).

A pure `loss_fn(params, x, y)`, `jax.value_and_grad`, and a hand-written Adam on pytrees with
`jax.tree_util.tree_map` (PyTorch/optax formula), all in ONE `jax.jit` step that donates the params and
optimizer-state buffers (`donate_argnums`), so XLA updates them in place.  The CNN is NHWC/HWIO with
`lax.conv_general_dilated`; 2x2 max pooling is a reshape + max (its gradient is a cheap fusion, whereas
`lax.reduce_window`'s select-and-scatter gradient made the step ~1.4x slower on CPU).
The defaults of `build()` are the measured-fastest choices on CPU (see README.md).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import common


def forward(workload: str, p: dict[str, Any], x: Any, pool: str) -> Any:
    """Logits for a batch (x is NHWC for the CNN)."""
    import jax
    from jax import lax

    if workload == "mlp":
        h = jax.nn.relu(x @ p["w1"] + p["b1"])
        h = jax.nn.relu(h @ p["w2"] + p["b2"])
        return h @ p["w3"] + p["b3"]

    def conv_relu(h: Any, k: Any, b: Any) -> Any:
        dims = ("NHWC", "HWIO", "NHWC")
        return jax.nn.relu(lax.conv_general_dilated(h, k, (1, 1), "VALID", dimension_numbers=dims) + b)

    def max_pool(h: Any) -> Any:
        if pool == "reduce_window":
            return lax.reduce_window(h, -float("inf"), lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        n, hh, ww, c = h.shape  # reshape pooling: drop the odd row/col, then max over the 2x2 windows
        h = h[:, : hh // 2 * 2, : ww // 2 * 2, :].reshape(n, hh // 2, 2, ww // 2, 2, c)
        return h.max(axis=(2, 4))

    h = max_pool(conv_relu(x, p["c1"], p["cb1"]))
    h = max_pool(conv_relu(h, p["c2"], p["cb2"]))
    return h.reshape(h.shape[0], -1) @ p["w"] + p["b"]


def build(workload: str, seed: int, pool: str = "reshape") -> tuple[Callable, Callable]:
    """Params, optimizer state, device data and the `step(i)` / `sync(loss)` pair."""
    import jax
    import jax.numpy as jnp

    tree_map = jax.tree_util.tree_map
    lr, b1, b2, eps = common.LR, common.BETA1, common.BETA2, common.EPS

    def loss_fn(p: dict[str, Any], x: Any, y: Any) -> Any:
        logp = jax.nn.log_softmax(forward(workload, p, x, pool))
        return -jnp.mean(jnp.sum(logp * jax.nn.one_hot(y, common.N_CLASSES, dtype=logp.dtype), axis=-1))

    @partial(jax.jit, donate_argnums=(0, 1))
    def train_step(p: dict[str, Any], opt: tuple[Any, Any, Any], x: Any, y: Any) -> tuple[Any, Any, Any]:
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        t, m, v = opt
        t = t + 1
        m = tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        p = tree_map(lambda p, m, v: p - lr * (m / bc1) / (jnp.sqrt(v / bc2) + eps), p, m, v)
        return p, (t, m, v), loss

    params = {k: jnp.asarray(v) for k, v in common.make_params(workload, seed).items()}
    state = [params, (jnp.zeros((), jnp.float32), tree_map(jnp.zeros_like, params), tree_map(jnp.zeros_like, params))]

    # Data goes to the device once; one epoch's 40 batches are gathered once, before timing.
    x_np, y_np = common.make_data(workload, seed)
    x_all, y_all = jax.device_put(x_np), jax.device_put(y_np)
    perm = jax.device_put(common.epoch_permutation(seed).astype("int32"))
    shape = (common.BATCHES_PER_EPOCH, common.BATCH)
    xb = jnp.take(x_all, perm, axis=0).reshape(*shape, *x_np.shape[1:])
    yb = jnp.take(y_all, perm, axis=0).reshape(shape)
    xs, ys = jax.block_until_ready(([xb[j] for j in range(shape[0])], [yb[j] for j in range(shape[0])]))
    n = len(xs)

    def step(i: int) -> Any:
        state[0], state[1], loss = train_step(state[0], state[1], xs[i % n], ys[i % n])
        return loss

    def sync(loss: Any) -> Any:
        return jax.block_until_ready(loss)

    return step, sync


def main() -> None:
    args: argparse.Namespace = common.parse_args("jax")
    common.set_thread_env(args.threads)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.threads == 1:  # XLA:CPU otherwise sizes its intra-op pool to the core count
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    with common.quiet_stderr():
        import jax
    common.run("jax", "jit", args, lambda workload: build(workload, args.seed),
               {"jax": jax.__version__, "jaxlib": jax.lib.__version__})


if __name__ == "__main__":
    main()
