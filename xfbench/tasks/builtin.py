"""The built-in tasks. Each is a function of size parameters returning a :class:`Task`, so users can scale the
work (more samples, wider layers, bigger batches) without touching the model's structure.

The defaults reach the accuracy ``tests/test_conformance.py`` checks on every backend; ``xfbench run`` uses them.
"""

from __future__ import annotations

import numpy as np

from xfbench.errors import XfbenchError
from xfbench.tasks import data
from xfbench.tasks.spec import (
    SGD,
    Adam,
    Conv2D,
    Dataset,
    Dense,
    Flatten,
    MaxPool2D,
    Task,
    number_in,
    positive_int,
    seed_value,
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
