"""Native TensorFlow training loop (no xfbench code): `--mode graph`, `--mode eager` or `--mode xla`.

Raw tf ops on tf.Variables with a GradientTape (no Keras).  Adam is the PyTorch/optax
formula, computed by the fused `ResourceApplyAdam` kernel (one op per variable) fed a
per-step epsilon `eps * sqrt(1 - beta2^t)`, which turns TF's "epsilon-hat" placement into
exactly `p -= lr * m_hat / (sqrt(v_hat) + eps)`.  Graph mode wraps the whole train step
in one `tf.function` (XLA `jit_compile=True` for the MLP only, see `build`); xla mode is the same
`tf.function` with `jit_compile=True` for both workloads; eager mode runs the very same Python step op by op.

The transformer and the ResNet in the same raw-op style: `tf.gather` embeddings, LayerNorm and BatchNorm by
`tf.nn.moments` and `(x - mean) * rsqrt(var + eps) * gamma + beta` (or `tf.compat.v1.nn.fused_batch_norm` with
`--fused-bn`), attention by `tf.einsum` and a masked softmax (TensorFlow has no fused attention op),
`tf.nn.gelu(approximate=True)`; `tf.clip_by_global_norm`, the decoupled decay and the schedule before
`ResourceApplyAdam`; graph mode compiles the transformer with XLA (no convolutions) and not the ResNet,
as for the MLP and the CNN.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import common


def forward(workload: str, p: list[Any], x: Any) -> Any:
    """Logits for a batch (x is NHWC for the CNN)."""
    import tensorflow as tf

    if workload == "mlp":
        h = tf.nn.relu(tf.nn.bias_add(tf.matmul(x, p[0]), p[1]))
        h = tf.nn.relu(tf.nn.bias_add(tf.matmul(h, p[2]), p[3]))
        return tf.nn.bias_add(tf.matmul(h, p[4]), p[5])
    h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, p[0], 1, "VALID"), p[1]))
    h = tf.nn.max_pool2d(h, 2, 2, "VALID")
    h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, p[2], 1, "VALID"), p[3]))
    h = tf.nn.max_pool2d(h, 2, 2, "VALID")
    return tf.nn.bias_add(tf.matmul(tf.reshape(h, (-1, 5 * 5 * 64)), p[4]), p[5])


def build_modern(workload: str, mode: str, seed: int, jit_compile: bool | None = None, fused_bn: bool = False
                 ) -> tuple[Callable, Callable]:
    """The transformer or the ResNet: variables, device data and the `step(i)` / `sync(loss)` pair."""
    import numpy as np
    import tensorflow as tf

    if mode == "xla":
        mode, jit_compile = "graph", True
    transformer = workload == "transformer"
    if jit_compile is None:
        jit_compile = transformer
    rng = np.random.default_rng(seed)

    def glorot(shape: tuple[int, ...]) -> tf.Variable:
        limit = (6 / (shape[-2] + shape[-1])) ** 0.5
        return tf.Variable(rng.uniform(-limit, limit, shape).astype("float32"))

    def he(shape: tuple[int, ...]) -> tf.Variable:
        return tf.Variable((rng.normal(size=shape) * (2 / np.prod(shape[:3])) ** 0.5).astype("float32"))

    zeros = lambda n: tf.Variable(tf.zeros(n))  # noqa: E731
    ones = lambda n: tf.Variable(tf.ones(n))  # noqa: E731
    p: dict[str, tf.Variable] = {}
    state: dict[str, tf.Variable] = {}
    w, heads, f = common.WIDTH, common.HEADS, common.FILTERS
    if transformer:
        hidden = common.MLP_RATIO * w
        p["tokens"] = tf.Variable((rng.normal(size=(common.VOCAB, w)) * 0.02).astype("float32"))
        p["positions"] = tf.Variable((rng.normal(size=(common.SEQ, w)) * 0.02).astype("float32"))
        for b in range(common.BLOCKS):
            p.update({f"{b}.ln1.g": ones(w), f"{b}.ln1.b": zeros(w), f"{b}.qkv.k": glorot((w, 3 * w)),
                      f"{b}.qkv.b": zeros(3 * w), f"{b}.proj.k": glorot((w, w)), f"{b}.proj.b": zeros(w),
                      f"{b}.ln2.g": ones(w), f"{b}.ln2.b": zeros(w), f"{b}.fc1.k": glorot((w, hidden)),
                      f"{b}.fc1.b": zeros(hidden), f"{b}.fc2.k": glorot((hidden, w)), f"{b}.fc2.b": zeros(w)})
        p.update({"ln.g": ones(w), "ln.b": zeros(w), "head.k": glorot((w, common.VOCAB)), "head.b": zeros(common.VOCAB)})
    else:
        for name, (cin, cout, size) in {"stem": (1, f, 3), "b1.c1": (f, f, 3), "b1.c2": (f, f, 3),
                                        "b2.c1": (f, 2 * f, 3), "b2.c2": (2 * f, 2 * f, 3),
                                        "b2.sc": (f, 2 * f, 1)}.items():
            p[f"{name}.k"] = he((size, size, cin, cout))
            p[f"{name}.g"], p[f"{name}.b"] = ones(cout), zeros(cout)
            state[f"{name}.mean"], state[f"{name}.var"] = zeros(cout), ones(cout)
        p["head.k"], p["head.b"] = glorot((2 * f, common.N_CLASSES)), zeros(common.N_CLASSES)
    params = list(p.values())

    def dense(x: Any, name: str) -> Any:
        shape = tf.shape(x)
        out = tf.matmul(tf.reshape(x, [-1, shape[-1]]), p[f"{name}.k"]) + p[f"{name}.b"]
        return tf.reshape(out, tf.concat([shape[:-1], [-1]], 0))

    def normalize(x: Any, mean: Any, var: Any, name: str, eps: float) -> Any:
        # (x - mean) * rsqrt(var + eps) * gamma + beta: faster here than tf.nn.batch_normalization's
        # x * inv + (beta - mean * inv), and without its cancellation where |mean| >> std
        return (x - mean) * (tf.math.rsqrt(var + eps) * p[f"{name}.g"]) + p[f"{name}.b"]

    def layer_norm(x: Any, name: str) -> Any:
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return normalize(x, mean, var, name, 1e-5)

    def conv_bn(x: Any, name: str) -> Any:
        h = tf.nn.conv2d(x, p[f"{name}.k"], 1, "SAME")
        m = common.BN_MOMENTUM
        if fused_bn:
            out, mean, var = tf.compat.v1.nn.fused_batch_norm(h, p[f"{name}.g"], p[f"{name}.b"],
                                                              epsilon=common.BN_EPS, is_training=True)
        else:
            mean, var = tf.nn.moments(h, axes=[0, 1, 2])
            out = normalize(h, mean, var, name, common.BN_EPS)
        state[f"{name}.mean"].assign((1 - m) * state[f"{name}.mean"] + m * mean)
        state[f"{name}.var"].assign((1 - m) * state[f"{name}.var"] + m * var)
        return out

    def forward(x: Any) -> Any:
        if not transformer:
            h = tf.nn.relu(conv_bn(x, "stem"))
            h = tf.nn.relu(conv_bn(tf.nn.relu(conv_bn(h, "b1.c1")), "b1.c2") + h)
            h = tf.nn.max_pool2d(h, 2, 2, "VALID")
            h = tf.nn.relu(conv_bn(tf.nn.relu(conv_bn(h, "b2.c1")), "b2.c2") + conv_bn(h, "b2.sc"))
            return tf.matmul(tf.reduce_mean(h, axis=[1, 2]), p["head.k"]) + p["head.b"]
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        h = tf.gather(p["tokens"], x) + p["positions"][:length]
        mask = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
        for b in range(common.BLOCKS):
            q, k, v = tf.split(dense(layer_norm(h, f"{b}.ln1"), f"{b}.qkv"), 3, axis=-1)
            q, k, v = (tf.reshape(t, [batch, length, heads, w // heads]) for t in (q, k, v))
            scores = tf.einsum("bqhd,bkhd->bhqk", q, k) * (w // heads) ** -0.5
            weights = tf.nn.softmax(tf.where(mask, scores, tf.constant(-np.inf)), axis=-1)
            out = tf.reshape(tf.einsum("bhqk,bkhd->bqhd", weights, v), [batch, length, w])
            h = h + dense(out, f"{b}.proj")
            h = h + dense(tf.nn.gelu(dense(layer_norm(h, f"{b}.ln2"), f"{b}.fc1"), approximate=True), f"{b}.fc2")
        return dense(layer_norm(h, "ln"), "head")

    c = common.ADAMW if transformer else {"lr": common.RESNET_LR, "beta1": common.BETA1, "beta2": common.BETA2,
                                          "eps": common.EPS, "weight_decay": 0.0, "clip": None}
    ms = [tf.Variable(tf.zeros_like(v)) for v in params]
    vs = [tf.Variable(tf.zeros_like(v)) for v in params]
    b1, b2, zero = tf.constant(c["beta1"]), tf.constant(c["beta2"]), tf.constant(0.0)
    t = tf.Variable(0.0)

    def train_step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=forward(x)))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, params)]
        if c["clip"] is not None:
            grads, _ = tf.clip_by_global_norm(grads, c["clip"])
        step_no = t.assign_add(1.0)
        lr = c["lr"] * (common.schedule_factor(step_no, tf.math) if transformer else 1.0)
        root2 = tf.sqrt(1.0 - tf.pow(b2, step_no))
        alpha, eps_t = lr * root2 / (1.0 - tf.pow(b1, step_no)), c["eps"] * root2
        for var, m, v, g in zip(params, ms, vs, grads, strict=True):
            if c["weight_decay"]:
                var.assign_sub(lr * c["weight_decay"] * var)
            tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, beta1_power=zero, beta2_power=zero,
                                         lr=alpha, beta1=b1, beta2=b2, epsilon=eps_t, grad=g)
        return loss

    run = tf.function(train_step, jit_compile=jit_compile) if mode == "graph" else train_step
    x_batches, y_batches = common.epoch_batches(workload, seed)
    xs, ys = [tf.constant(x) for x in x_batches], [tf.constant(y) for y in y_batches]
    n = len(xs)

    def step(i: int) -> Any:
        return run(xs[i % n], ys[i % n])

    return step, lambda loss: float(loss.numpy())


def build(workload: str, mode: str, seed: int, jit_compile: bool | None = None) -> tuple[Callable, Callable]:
    """Create variables, device data and the `step(i)` / `sync(loss)` pair for the timing protocol.

    jit_compile (graph mode only) defaults to the measured-faster choice: XLA for the MLP (~15% faster),
    plain tf.function for the CNN (XLA:CPU convolutions are ~2.5x slower than TF's oneDNN kernels).
    """
    import tensorflow as tf

    if workload in ("transformer", "resnet"):
        return build_modern(workload, mode, seed, jit_compile)
    if mode == "xla":
        mode, jit_compile = "graph", True
    if jit_compile is None:
        jit_compile = workload == "mlp"
    f32 = tf.float32
    params = [tf.Variable(a) for a in common.make_params(workload, seed).values()]
    ms = [tf.Variable(tf.zeros_like(p)) for p in params]
    vs = [tf.Variable(tf.zeros_like(p)) for p in params]
    lr, b1, b2 = (tf.constant(c, f32) for c in (common.LR, common.BETA1, common.BETA2))

    def train_step(x: Any, y: Any, b1p: Any, b2p: Any, eps_t: Any) -> Any:
        with tf.GradientTape() as tape:
            logits = forward(workload, params, x)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, params)
        for p, m, v, g in zip(params, ms, vs, grads, strict=True):
            tf.raw_ops.ResourceApplyAdam(
                var=p.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=b1p,
                beta2_power=b2p,
                lr=lr,
                beta1=b1,
                beta2=b2,
                epsilon=eps_t,
                grad=g,
            )
        return loss

    if mode == "graph":
        t = tf.Variable(0.0)

        @tf.function(jit_compile=jit_compile)
        def graph_step(x: Any, y: Any) -> Any:
            t.assign_add(1.0)
            b2p = tf.pow(b2, t)
            return train_step(x, y, tf.pow(b1, t), b2p, common.EPS * tf.sqrt(1.0 - b2p))

        def run(x: Any, y: Any, step_no: int) -> Any:
            return graph_step(x, y)
    else:

        def run(x: Any, y: Any, step_no: int) -> Any:
            b1p, b2p = common.BETA1**step_no, common.BETA2**step_no
            eps_t = common.EPS * (1.0 - b2p) ** 0.5  # see module docstring
            return train_step(x, y, tf.constant(b1p, f32), tf.constant(b2p, f32), tf.constant(eps_t, f32))

    # Data goes to the device once; one epoch's 40 batches are gathered once, before timing.
    x_np, y_np = common.make_data(workload, seed)
    x_all, y_all = tf.constant(x_np), tf.constant(y_np)
    perm = tf.constant(common.epoch_permutation(seed))
    xs = tf.split(tf.gather(x_all, perm), common.BATCHES_PER_EPOCH)
    ys = tf.split(tf.gather(y_all, perm), common.BATCHES_PER_EPOCH)
    n = len(xs)

    def step(i: int) -> Any:
        return run(xs[i % n], ys[i % n], i + 1)

    def sync(loss: Any) -> float:
        return float(loss.numpy())

    return step, sync


def main() -> None:
    args: argparse.Namespace = common.parse_args("tensorflow")
    common.set_thread_env(args.threads)
    with common.quiet_stderr():
        import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    common.run("tensorflow", args.mode, args, lambda workload: build(workload, args.mode, args.seed),
               {"tensorflow": tf.__version__})


if __name__ == "__main__":
    main()
