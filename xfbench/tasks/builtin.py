"""The built-in tasks. Each is a function of size parameters returning a :class:`Task`, so users can scale the
work (more samples, wider layers, bigger batches) without touching the model's structure.

The defaults reach the accuracy ``tests/test_conformance.py`` checks on every backend; ``xfbench run`` uses them.
"""

from __future__ import annotations

import numpy as np

from xfbench.errors import XfbenchError
from xfbench.tasks import data
from xfbench.tasks.checks import number_in, positive_int, seed_value
from xfbench.tasks.spec import (
    SGD,
    Activation,
    Adam,
    AdamW,
    BatchNorm,
    Conv2D,
    Dataset,
    Dense,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    LayerNorm,
    MaxPool2D,
    PositionEmbedding,
    Residual,
    SelfAttention,
    Task,
    WarmupCosine,
)


def _check(task: str, **values: object) -> None:
    """The built-in tasks' size parameters: positive ints, a seed >= 0, noise >= 0 (each named in the error)."""
    for name, value in values.items():
        if name == "seed":
            seed_value(f"{task} seed", value)
        elif name == "noise":
            number_in(f"{task} noise", value, 0, float("inf"), high_open=True)
        elif value is not None:
            positive_int(f"{task} {name}", value)


def regression(num_samples: int = 2000, num_features: int = 8, noise: float = 0.5, batch_size: int | None = None,
               epochs: int = 100, seed: int = 0) -> Task:
    """Linear regression in six steps: load data (synthetic, known coefficients), define the model (one Dense
    unit), the loss (mse), the optimizer (SGD with momentum), train, evaluate (R² and MSE on the test split).

    ``batch_size=None`` trains on the whole training split each step (batch gradient descent), which converges to
    the least-squares solution; a smaller batch makes it mini-batch SGD.
    """
    _check("regression", num_samples=num_samples, num_features=num_features, noise=noise, batch_size=batch_size,
           epochs=epochs, seed=seed)
    if num_samples < 10:
        raise XfbenchError(f"regression num_samples must be at least 10 (a 20% test split), got {num_samples}")
    x, y, _, _ = data.linear(num_samples, num_features, noise, seed)
    split = Dataset.split(x, y, test_fraction=0.2, seed=seed)
    return Task(
        name="regression", data=split, layers=(Dense(1),), loss="mse",
        optimizer=SGD(learning_rate=0.2, momentum=0.5),
        batch_size=len(split.x_train) if batch_size is None else batch_size, epochs=epochs,
        metrics=("r2", "mse"), seed=seed, target=0.99,
        description=f"linear regression, {num_features} features, {num_samples} samples",
    )


def mlp(width: int = 64, batch_size: int = 32, epochs: int = 20, seed: int = 0) -> Task:
    """A multilayer perceptron (64 -> width relu -> 10) classifying the bundled 8x8 digits."""
    _check("mlp", width=width, batch_size=batch_size, epochs=epochs, seed=seed)
    x, y = data.digits()
    return Task(
        name="mlp", data=Dataset.split(x, y, 0.2, seed), layers=(Dense(width, "relu"), Dense(10)),
        loss="softmax_cross_entropy", optimizer=Adam(learning_rate=1e-3), batch_size=batch_size, epochs=epochs,
        metrics=("accuracy",), seed=seed, description=f"MLP 64-{width}-10 on the 8x8 digits", target=0.95,
    )


def mlp_binary(digit: int = 3, width: int = 32, batch_size: int = 32, epochs: int = 15, seed: int = 0) -> Task:
    """The same MLP with one sigmoid output: is this image the digit ``digit`` or not."""
    if isinstance(digit, bool) or digit not in range(10):
        raise XfbenchError(f"digit must be 0-9, got {digit!r}")
    _check("mlp-binary", width=width, batch_size=batch_size, epochs=epochs, seed=seed)
    x, y = data.digits()
    target = (y == digit).astype(np.float32)[:, None]
    return Task(
        name="mlp-binary", data=Dataset.split(x, target, 0.2, seed), layers=(Dense(width, "relu"), Dense(1)),
        loss="sigmoid_binary_cross_entropy", optimizer=Adam(learning_rate=1e-3), batch_size=batch_size,
        epochs=epochs, metrics=("accuracy",), seed=seed, description=f"MLP 64-{width}-1 (sigmoid): digit {digit} or not",
        target=0.97,
    )


def cnn(filters: int = 16, batch_size: int = 32, epochs: int = 15, seed: int = 0) -> Task:
    """conv -> pool -> conv -> pool -> dense on the digits as 8x8x1 images."""
    _check("cnn", filters=filters, batch_size=batch_size, epochs=epochs, seed=seed)
    x, y = data.digits(images=True)
    layers = (
        Conv2D(filters, 3, padding="same", activation="relu", init="he_uniform"), MaxPool2D(2),
        Conv2D(2 * filters, 3, padding="same", activation="relu", init="he_uniform"), MaxPool2D(2),
        Flatten(), Dense(10),
    )
    return Task(
        name="cnn", data=Dataset.split(x, y, 0.2, seed), layers=layers, loss="softmax_cross_entropy",
        optimizer=Adam(learning_rate=2e-3), batch_size=batch_size, epochs=epochs, metrics=("accuracy",), seed=seed,
        description=f"CNN conv{filters}-pool-conv{2 * filters}-pool-dense on 8x8x1 digits", target=0.95,
    )


def cnn28(num_samples: int = 6000, image_size: int = 28, batch_size: int = 128, epochs: int = 3, seed: int = 0) -> Task:
    """The speed-work CNN on MNIST-shaped inputs: conv 32 3x3 -> relu -> maxpool 2 -> conv 64 3x3 -> relu ->
    maxpool 2 -> dense 10, on digits upsampled to 28x28 with shifts and noise (generated, no download)."""
    _check("cnn28", num_samples=num_samples, batch_size=batch_size, epochs=epochs, seed=seed)
    if num_samples < 12:
        raise XfbenchError(f"cnn28 num_samples must be at least 12 (a 1/6 test split), got {num_samples}")
    if image_size != 28:
        raise XfbenchError(f"cnn28 images are 28x28; image_size must be 28, got {image_size!r}")
    x, y = data.digits28(num_samples, seed)
    layers = (
        Conv2D(32, 3, activation="relu", init="he_uniform"), MaxPool2D(2),
        Conv2D(64, 3, activation="relu", init="he_uniform"), MaxPool2D(2),
        Flatten(), Dense(10),
    )
    return Task(
        name="cnn28", data=Dataset.split(x, y, 1 / 6, seed), layers=layers, loss="softmax_cross_entropy",
        optimizer=Adam(learning_rate=1e-3), batch_size=batch_size, epochs=epochs, metrics=("accuracy",), seed=seed,
        description="CNN conv32-pool-conv64-pool-dense on 28x28x1 digits", target=0.9,
    )


def transformer(seq_len: int = 64, width: int = 128, heads: int = 4, blocks: int = 2, mlp_ratio: int = 4,
                num_sequences: int = 3000, batch_size: int = 32, epochs: int = 2, learning_rate: float = 3e-3,
                seed: int = 0) -> Task:
    """A small decoder-only (GPT-style) language model on generated text (``data.text``: stories of a template
    grammar, characters as tokens): token and learned position embeddings, ``blocks`` pre-norm blocks of causal
    multi-head self-attention and a GELU (tanh) MLP, each a residual, a final LayerNorm and a Dense over the
    characters. AdamW with a linear warm-up then cosine schedule and gradient clipping, the usual recipe; the
    metric is next-character accuracy on held-out stories.
    """
    _check("transformer", seq_len=seq_len, width=width, heads=heads, blocks=blocks, mlp_ratio=mlp_ratio,
           num_sequences=num_sequences, batch_size=batch_size, epochs=epochs, seed=seed)
    number_in("transformer learning_rate", learning_rate, 0, float("inf"), low_open=True, high_open=True)
    if width % heads:
        raise XfbenchError(f"transformer heads ({heads}) must divide width ({width}): each head gets width / heads "
                           f"channels")
    if num_sequences < 6:
        raise XfbenchError(f"transformer num_sequences must be at least 6 (a 1/6 test split), got {num_sequences}")
    x, y = data.text_sequences(num_sequences, seq_len, seed)
    split = Dataset.split(x, y, 1 / 6, seed)
    vocab = len(data.ALPHABET)
    layers: list = [Embedding(vocab, width), PositionEmbedding(seq_len)]
    for _ in range(blocks):
        layers += [
            Residual((LayerNorm(1e-5), SelfAttention(heads, width // heads, causal=True))),
            Residual((LayerNorm(1e-5), Dense(mlp_ratio * width, "gelu_tanh"), Dense(width))),
        ]
    layers += [LayerNorm(1e-5), Dense(vocab)]
    steps = epochs * (len(split.x_train) // batch_size) if batch_size <= len(split.x_train) else 1
    optimizer = AdamW(learning_rate=learning_rate, beta1=0.9, beta2=0.99, epsilon=1e-8, weight_decay=0.01,
                      clip_norm=1.0, schedule=WarmupCosine(max(1, steps // 10), max(2, steps), final_ratio=0.1))
    return Task(
        name="transformer", data=split, layers=tuple(layers), loss="softmax_cross_entropy", optimizer=optimizer,
        batch_size=batch_size, epochs=epochs, metrics=("token_accuracy", "perplexity"), seed=seed, target=0.75,
        description=f"decoder-only transformer, {blocks} blocks, width {width}, {heads} heads, sequence {seq_len}, "
                    f"on generated text",
    )


def resnet(filters: int = 16, num_samples: int = 6000, batch_size: int = 32, epochs: int = 2, seed: int = 0) -> Task:
    """A small ResNet on ``cnn28``'s 28x28 digits: a conv-BatchNorm-relu stem, a residual block of two 3x3 convs
    with BatchNorm (identity shortcut), a 2x2 max-pool, a residual block with twice the filters (its shortcut a
    1x1 conv and BatchNorm), global average pooling and a Dense. Convs without bias (BatchNorm's beta is the bias),
    as ResNets write them."""
    _check("resnet", filters=filters, num_samples=num_samples, batch_size=batch_size, epochs=epochs, seed=seed)
    if num_samples < 12:
        raise XfbenchError(f"resnet num_samples must be at least 12 (a 1/6 test split), got {num_samples}")
    x, y = data.digits28(num_samples, seed)

    def conv(width: int, size: int = 3) -> Conv2D:
        return Conv2D(width, size, padding="same", init="he_normal", use_bias=False)

    wide = 2 * filters
    layers = (
        conv(filters), BatchNorm(), Activation("relu"),
        Residual((conv(filters), BatchNorm(), Activation("relu"), conv(filters), BatchNorm()), activation="relu"),
        MaxPool2D(2),
        Residual((conv(wide), BatchNorm(), Activation("relu"), conv(wide), BatchNorm()),
                 shortcut=(conv(wide, 1), BatchNorm()), activation="relu"),
        GlobalAvgPool2D(), Dense(10),
    )
    return Task(
        name="resnet", data=Dataset.split(x, y, 1 / 6, seed), layers=layers, loss="softmax_cross_entropy",
        optimizer=Adam(learning_rate=2e-3), batch_size=batch_size, epochs=epochs, metrics=("accuracy",), seed=seed,
        description=f"ResNet: stem {filters}, a residual block of {filters}, pool, a residual block of {wide} "
                    "(1x1 projection), global average pool, on 28x28x1 digits", target=0.9,
    )
