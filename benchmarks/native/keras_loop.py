"""Native Keras 3 training, no xfbench code: `--mode jax|tensorflow|torch` (the Keras backend, set before import).

Written as the Keras guides write it: a `keras.Sequential` of Keras layers, `model.compile(optimizer=
keras.optimizers.Adam(...), loss=SparseCategoricalCrossentropy(from_logits=True))` with Keras' default
`jit_compile="auto"`, and `model.fit(x, y, batch_size=128, epochs=1, shuffle=False, verbose=0)`. A timed block of
k steps is one `fit` call over k batches of the epoch's data, k at least one epoch (40 batches; more where the
calibration of the other loops asks for more), so the time includes what `fit` adds per epoch and per step: its
data adapter, epoch iterator and callbacks, spread over an epoch as a user's `fit` spreads it. The weights are
the canonical ones (Keras' channels_last layouts are the canonical layouts).

The transformer as Keras' "miniature GPT" example writes one: a token-and-position embedding layer (two
`Embedding`s), pre-norm blocks of `MultiHeadAttention(..., use_causal_mask=True)` and `LayerNormalization(epsilon=
1e-5)` with a GELU (tanh) `Dense` MLP, a final `LayerNormalization` and `Dense`; `AdamW` with `global_clipnorm` and
`CosineDecay` with a linear warm-up. The ResNet with the functional API: `Conv2D(use_bias=False)`,
`BatchNormalization(momentum=0.9, epsilon=1e-5)`, `Add`, `GlobalAveragePooling2D`; Adam. Both from Keras' own
initializers.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import common
import numpy as np


def modern_model(workload: str, seed: int) -> Any:
    import functools

    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    if workload == "transformer":
        class TokenAndPositionEmbedding(layers.Layer):
            def __init__(self) -> None:
                super().__init__()
                self.tokens = layers.Embedding(common.VOCAB, common.WIDTH)
                self.positions = layers.Embedding(common.SEQ, common.WIDTH)

            def call(self, ids: Any) -> Any:
                return self.tokens(ids) + self.positions(keras.ops.arange(0, keras.ops.shape(ids)[-1]))

        ids = keras.Input(shape=(common.SEQ,), dtype="int32")
        x = TokenAndPositionEmbedding()(ids)
        gelu = functools.partial(keras.activations.gelu, approximate=True)
        for _ in range(common.BLOCKS):
            h = layers.LayerNormalization(epsilon=1e-5)(x)
            h = layers.MultiHeadAttention(common.HEADS, common.WIDTH // common.HEADS)(h, h, use_causal_mask=True)
            x = layers.Add()([x, h])
            h = layers.LayerNormalization(epsilon=1e-5)(x)
            h = layers.Dense(common.WIDTH)(layers.Dense(common.MLP_RATIO * common.WIDTH, activation=gelu)(h))
            x = layers.Add()([x, h])
        logits = layers.Dense(common.VOCAB)(layers.LayerNormalization(epsilon=1e-5)(x))
        c = common.ADAMW
        schedule = keras.optimizers.schedules.CosineDecay(0.0, common.TOTAL - common.WARMUP, alpha=common.FINAL,
                                                          warmup_target=c["lr"], warmup_steps=common.WARMUP)
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=c["weight_decay"], beta_1=c["beta1"],
                                           beta_2=c["beta2"], epsilon=c["eps"], global_clipnorm=c["clip"])
        model = keras.Model(ids, logits)
    else:
        def conv_bn(h: Any, filters: int, size: int = 3) -> Any:
            h = layers.Conv2D(filters, size, padding="same", use_bias=False)(h)
            return layers.BatchNormalization(momentum=1 - common.BN_MOMENTUM, epsilon=common.BN_EPS)(h)

        images = keras.Input(shape=(28, 28, 1))
        f = common.FILTERS
        x = layers.ReLU()(conv_bn(images, f))
        x = layers.ReLU()(layers.Add()([conv_bn(layers.ReLU()(conv_bn(x, f)), f), x]))
        x = layers.MaxPooling2D(2)(x)
        x = layers.ReLU()(layers.Add()([conv_bn(layers.ReLU()(conv_bn(x, 2 * f)), 2 * f), conv_bn(x, 2 * f, 1)]))
        logits = layers.Dense(common.N_CLASSES)(layers.GlobalAveragePooling2D()(x))
        optimizer = keras.optimizers.Adam(learning_rate=common.RESNET_LR)
        model = keras.Model(images, logits)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def make_model(workload: str, seed: int) -> Any:
    import keras

    if workload in ("transformer", "resnet"):
        return modern_model(workload, seed)

    if workload == "mlp":
        layers = [keras.layers.Dense(256, activation="relu"), keras.layers.Dense(256, activation="relu"),
                  keras.layers.Dense(10)]
    else:
        layers = [keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2),
                  keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(2),
                  keras.layers.Flatten(), keras.layers.Dense(10)]
    model = keras.Sequential([keras.Input(shape=common.INPUT_SHAPE[workload]), *layers])
    model.set_weights(list(common.make_params(workload, seed).values()))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=common.LR, beta_1=common.BETA1, beta_2=common.BETA2,
                                                  epsilon=common.EPS),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class FitTimer(common.BlockTimer):
    """common.BlockTimer's protocol (warm-up, calibration, block_ms) with `model.fit` as the loop: a block of k
    steps is one fit call, k starting at one epoch."""

    def __init__(self, workload: str, seed: int) -> None:
        self.model = make_model(workload, seed)
        x, y = common.make_data(workload, seed)
        perm = common.epoch_permutation(seed, workload=workload)
        self.x, self.y = x[perm], y[perm].astype(np.int64)
        self.batch = common.batch_size(workload)
        self.k = common.BATCHES_PER_EPOCH
        self.counter = 0
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def block(self, k: int) -> float:
        if k not in self._blocks:  # k batches in epoch order, wrapping around: built once per k, off the clock
            index = np.arange(k * self.batch) % len(self.x)
            self._blocks[k] = self.x[index], self.y[index]
        x, y = self._blocks[k]
        start = time.perf_counter()
        self.model.fit(x, y, batch_size=self.batch, epochs=1, shuffle=False, verbose=0)
        return time.perf_counter() - start


def main() -> None:
    args: argparse.Namespace = common.parse_args("keras")
    if args.mode not in ("jax", "tensorflow", "torch"):
        raise SystemExit(f"keras_loop.py: --mode must be jax, tensorflow or torch, got {args.mode!r}")
    if not args.serve:
        raise SystemExit("keras_loop.py measures with --serve only (the turn protocol of native_overhead.py)")
    os.environ["KERAS_BACKEND"] = args.mode
    common.set_thread_env(args.threads)
    with common.quiet_stderr():
        import keras
        if args.mode == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        elif args.mode == "torch":
            import torch

            torch.set_num_threads(args.threads)
    common.run("keras", args.mode, args, lambda workload: FitTimer(workload, args.seed),
               {"keras": keras.__version__})


if __name__ == "__main__":
    main()
