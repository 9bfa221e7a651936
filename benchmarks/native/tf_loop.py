"""Native TensorFlow training loop (no xfbench code): `--mode graph`, `--mode eager` or `--mode xla`.

Raw tf ops on tf.Variables with a GradientTape (no Keras).  Adam is the PyTorch/optax
formula, computed by the fused `ResourceApplyAdam` kernel (one op per variable) fed a
per-step epsilon `eps * sqrt(1 - beta2^t)`, which turns TF's "epsilon-hat" placement into
exactly `p -= lr * m_hat / (sqrt(v_hat) + eps)`.  Graph mode wraps the whole train step
in one `tf.function` (XLA `jit_compile=True` for the MLP only, see `build`); xla mode is the same
`tf.function` with `jit_compile=True` for both workloads; eager mode runs the very same Python step op by op.
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


def build(workload: str, mode: str, seed: int, jit_compile: bool | None = None) -> tuple[Callable, Callable]:
    """Create variables, device data and the `step(i)` / `sync(loss)` pair for the timing protocol.

    jit_compile (graph mode only) defaults to the measured-faster choice: XLA for the MLP (~15% faster),
    plain tf.function for the CNN (XLA:CPU convolutions are ~2.5x slower than TF's oneDNN kernels).
    """
    import tensorflow as tf

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
