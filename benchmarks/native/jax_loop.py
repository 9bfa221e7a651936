"""Native JAX training loop (no xfbench code, no optax).

A pure `loss_fn(params, x, y)`, `jax.value_and_grad`, and a hand-written Adam on pytrees with
`jax.tree_util.tree_map` (PyTorch/optax formula), all in ONE `jax.jit` step that donates the params and
optimizer-state buffers (`donate_argnums`), so XLA updates them in place.  The CNN is NHWC/HWIO with
`lax.conv_general_dilated`; 2x2 max pooling is a reshape + max (its gradient is a cheap fusion, whereas
`lax.reduce_window`'s select-and-scatter gradient made the step ~1.4x slower on CPU).
The defaults of `build()` are the measured-fastest choices on CPU (see README.md).

The transformer and the ResNet are written the same way (Flax's modules computed by hand, no Flax): embeddings by
`jnp.take`, LayerNorm and BatchNorm as Flax computes them, `jax.nn.dot_product_attention(..., is_causal=True)`,
`jax.nn.gelu(approximate=True)`; AdamW with global-norm clipping and the warm-up-cosine schedule by `tree_map`, as
optax's `adamw` and `clip_by_global_norm` compute them; BatchNorm's running statistics carried through the jitted
step beside the parameters. Weights start from Glorot-uniform kernels (He-normal convolutions), N(0, 0.02)
embeddings.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import common
import numpy as np


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


def modern_params(workload: str, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Initial parameters and model state (BatchNorm's running statistics) of the transformer or the ResNet."""

    rng = np.random.default_rng(seed)

    def glorot(shape: tuple[int, ...]) -> Any:
        limit = (6 / (shape[-2] + shape[-1])) ** 0.5
        return rng.uniform(-limit, limit, shape).astype("float32")

    def he(shape: tuple[int, ...]) -> Any:
        return (rng.normal(size=shape) * (2 / (shape[0] * shape[1] * shape[2])) ** 0.5).astype("float32")

    zeros, ones = (lambda n: np.zeros(n, "float32")), (lambda n: np.ones(n, "float32"))
    params: dict[str, Any] = {}
    state: dict[str, Any] = {}
    if workload == "transformer":
        w, hidden = common.WIDTH, common.MLP_RATIO * common.WIDTH
        params["tokens"] = (rng.normal(size=(common.VOCAB, w)) * 0.02).astype("float32")
        params["positions"] = (rng.normal(size=(common.SEQ, w)) * 0.02).astype("float32")
        for b in range(common.BLOCKS):
            params.update({f"{b}.ln1.g": ones(w), f"{b}.ln1.b": zeros(w), f"{b}.qkv.k": glorot((w, 3 * w)),
                           f"{b}.qkv.b": zeros(3 * w), f"{b}.proj.k": glorot((w, w)), f"{b}.proj.b": zeros(w),
                           f"{b}.ln2.g": ones(w), f"{b}.ln2.b": zeros(w), f"{b}.fc1.k": glorot((w, hidden)),
                           f"{b}.fc1.b": zeros(hidden), f"{b}.fc2.k": glorot((hidden, w)), f"{b}.fc2.b": zeros(w)})
        params.update({"ln.g": ones(w), "ln.b": zeros(w), "head.k": glorot((w, common.VOCAB)),
                       "head.b": zeros(common.VOCAB)})
        return params, state
    f = common.FILTERS
    convs = {"stem": (1, f), "b1.c1": (f, f), "b1.c2": (f, f), "b2.c1": (f, 2 * f), "b2.c2": (2 * f, 2 * f)}
    for name, (cin, cout) in convs.items():
        params[f"{name}.k"] = he((3, 3, cin, cout))
    params["b2.sc.k"] = he((1, 1, f, 2 * f))
    for name, size in {"stem": f, "b1.c1": f, "b1.c2": f, "b2.c1": 2 * f, "b2.c2": 2 * f, "b2.sc": 2 * f}.items():
        params[f"{name}.g"], params[f"{name}.b"] = ones(size), zeros(size)
        state[f"{name}.mean"], state[f"{name}.var"] = zeros(size), ones(size)
    params["head.k"], params["head.b"] = glorot((2 * f, common.N_CLASSES)), zeros(common.N_CLASSES)
    return params, state


def layer_norm(x: Any, g: Any, b: Any) -> Any:
    import jax.numpy as jnp
    from jax import lax

    mean = x.mean(-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + 1e-5) * g + b


def transformer_forward(p: dict[str, Any], ids: Any) -> Any:
    import jax
    import jax.numpy as jnp

    batch, length = ids.shape
    w, heads = common.WIDTH, common.HEADS
    x = jnp.take(p["tokens"], ids, axis=0) + p["positions"][:length]
    for b in range(common.BLOCKS):
        h = layer_norm(x, p[f"{b}.ln1.g"], p[f"{b}.ln1.b"]) @ p[f"{b}.qkv.k"] + p[f"{b}.qkv.b"]
        q, k, v = (part.reshape(batch, length, heads, w // heads) for part in jnp.split(h, 3, axis=-1))
        out = jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(batch, length, w)
        x = x + out @ p[f"{b}.proj.k"] + p[f"{b}.proj.b"]
        h = jax.nn.gelu(layer_norm(x, p[f"{b}.ln2.g"], p[f"{b}.ln2.b"]) @ p[f"{b}.fc1.k"] + p[f"{b}.fc1.b"],
                        approximate=True)
        x = x + h @ p[f"{b}.fc2.k"] + p[f"{b}.fc2.b"]
    return layer_norm(x, p["ln.g"], p["ln.b"]) @ p["head.k"] + p["head.b"]


def resnet_forward(p: dict[str, Any], s: dict[str, Any], x: Any) -> tuple[Any, dict[str, Any]]:
    """Logits in training mode and the new running statistics."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    new: dict[str, Any] = {}

    def conv_bn(h: Any, name: str, size: int = 3) -> Any:
        h = lax.conv_general_dilated(h, p[f"{name}.k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        mean = h.mean(axis=(0, 1, 2))
        var = jnp.mean(jnp.square(h - mean), axis=(0, 1, 2))
        m = common.BN_MOMENTUM
        new[f"{name}.mean"] = (1 - m) * s[f"{name}.mean"] + m * lax.stop_gradient(mean)
        new[f"{name}.var"] = (1 - m) * s[f"{name}.var"] + m * lax.stop_gradient(var)
        return (h - mean) * lax.rsqrt(var + common.BN_EPS) * p[f"{name}.g"] + p[f"{name}.b"]

    relu = jax.nn.relu
    h = relu(conv_bn(x, "stem"))
    h = relu(conv_bn(relu(conv_bn(h, "b1.c1")), "b1.c2") + h)
    n, hh, ww, c = h.shape
    h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
    h = relu(conv_bn(relu(conv_bn(h, "b2.c1")), "b2.c2") + conv_bn(h, "b2.sc", 1))
    return h.mean(axis=(1, 2)) @ p["head.k"] + p["head.b"], new


def build_modern(workload: str, seed: int) -> tuple[Callable, Callable]:
    """The transformer or the ResNet: params, state, device data and the `step(i)` / `sync(loss)` pair."""
    import jax
    import jax.numpy as jnp

    tree_map = jax.tree_util.tree_map
    transformer = workload == "transformer"
    c = common.ADAMW if transformer else {"lr": common.RESNET_LR, "beta1": common.BETA1, "beta2": common.BETA2,
                                          "eps": common.EPS, "weight_decay": 0.0, "clip": None}

    def loss_fn(p: dict[str, Any], s: dict[str, Any], x: Any, y: Any) -> tuple[Any, dict[str, Any]]:
        logits, new = (transformer_forward(p, x), s) if transformer else resnet_forward(p, s, x)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[..., None], axis=-1)), new

    @partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(p: dict[str, Any], s: dict[str, Any], opt: tuple[Any, Any, Any], x: Any, y: Any) -> Any:
        (loss, s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y)
        t, m, v = opt
        t = t + 1
        if c["clip"] is not None:
            norm = jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(g)))
            g = tree_map(lambda leaf: leaf * jnp.minimum(1.0, c["clip"] / norm), g)
        lr = c["lr"] * (common.schedule_factor(t, jnp) if transformer else 1.0)
        m = tree_map(lambda m, g: c["beta1"] * m + (1 - c["beta1"]) * g, m, g)
        v = tree_map(lambda v, g: c["beta2"] * v + (1 - c["beta2"]) * g * g, v, g)
        bc1, bc2 = 1 - c["beta1"] ** t, 1 - c["beta2"] ** t
        p = tree_map(lambda p, m, v: p - lr * (m / bc1 / (jnp.sqrt(v / bc2) + c["eps"]) + c["weight_decay"] * p),
                     p, m, v)
        return p, s, (t, m, v), loss

    params, model_state = modern_params(workload, seed)
    params = {k: jnp.asarray(value) for k, value in params.items()}
    model_state = {k: jnp.asarray(value) for k, value in model_state.items()}
    state = [params, model_state, (jnp.zeros((), jnp.float32), tree_map(jnp.zeros_like, params),
                                   tree_map(jnp.zeros_like, params))]
    x_batches, y_batches = common.epoch_batches(workload, seed)
    xs, ys = [jax.device_put(x) for x in x_batches], [jax.device_put(y) for y in y_batches]
    n = len(xs)

    def step(i: int) -> Any:
        state[0], state[1], state[2], loss = train_step(state[0], state[1], state[2], xs[i % n], ys[i % n])
        return loss

    return step, jax.block_until_ready


def build(workload: str, seed: int, pool: str = "reshape") -> tuple[Callable, Callable]:
    """Params, optimizer state, device data and the `step(i)` / `sync(loss)` pair."""
    import jax
    import jax.numpy as jnp

    if workload in ("transformer", "resnet"):
        return build_modern(workload, seed)

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
    perm = jax.device_put(common.epoch_permutation(seed, workload=workload).astype("int32"))
    shape = (common.BATCHES_PER_EPOCH, common.batch_size(workload))
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
