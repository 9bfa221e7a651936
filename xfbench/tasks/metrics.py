"""Losses and metrics in NumPy: every backend's predictions are scored by the same code.

Model outputs are logits for the two cross-entropy losses (the sigmoid / softmax is part of the loss), raw values
for mse. Losses are means over the samples (and, for a sequence model, over every position), as in training.
A sequence model's outputs are (n, length, classes) logits against (n, length) labels: its metrics are
``token_accuracy`` (the fraction of positions whose argmax is the label) and ``perplexity`` (``exp`` of the mean
cross-entropy per token).
"""

from __future__ import annotations

import math

import numpy as np


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def loss_value(loss: str, outputs: np.ndarray, targets: np.ndarray) -> float:
    """The mean loss of ``outputs`` (model outputs) against ``targets``, in float64.

    Example:
        >>> float(loss_value("mse", np.array([[1.0], [3.0]]), np.array([[0.0], [1.0]], "float32")))
        2.5
    """
    outputs = np.asarray(outputs, np.float64)
    if loss == "mse":
        return float(np.mean((outputs - targets) ** 2))
    if loss == "softmax_cross_entropy":
        labels = np.asarray(targets).reshape(-1)
        logp = _log_softmax(outputs.reshape(len(labels), -1))
        return float(-np.mean(logp[np.arange(len(labels)), labels]))
    if loss == "sigmoid_binary_cross_entropy":
        return float(np.mean(np.maximum(outputs, 0) - outputs * targets + np.log1p(np.exp(-np.abs(outputs)))))
    raise ValueError(f"unknown loss {loss!r}")


def predicted_classes(loss: str, outputs: np.ndarray) -> np.ndarray:
    """Class predictions: argmax of the logits (per position of a sequence), or logit > 0 (probability > 0.5) for
    one sigmoid output."""
    if loss == "sigmoid_binary_cross_entropy":
        return (outputs > 0).astype(np.int64)
    return np.argmax(outputs, axis=-1)


def compute_metrics(loss: str, metrics: tuple[str, ...], outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The task's metrics plus its loss, on one split.

    Example:
        >>> out = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
        >>> compute_metrics("softmax_cross_entropy", ("accuracy",), out, np.array([0, 1, 1]))["accuracy"]
        0.6666666666666666
        >>> tokens = np.array([[[2.0, 0.0], [0.0, 1.0]]])  # one sequence of two positions
        >>> values = compute_metrics("softmax_cross_entropy", ("token_accuracy", "perplexity"), tokens, np.array([[0, 0]]))
        >>> values["token_accuracy"], round(values["perplexity"], 3)
        (0.5, 2.055)
    """
    outputs = np.asarray(outputs, np.float64)
    values = {"loss": loss_value(loss, outputs, targets)}
    for metric in metrics:
        if metric == "accuracy":
            labels = targets.astype(np.int64).reshape(len(targets), -1)[:, 0] if targets.ndim > 1 else targets
            values["accuracy"] = float(np.mean(predicted_classes(loss, outputs).reshape(len(labels), -1)[:, 0] == labels))
        elif metric == "token_accuracy":
            values["token_accuracy"] = float(np.mean(predicted_classes(loss, outputs) == targets))
        elif metric == "perplexity":
            values["perplexity"] = math.exp(min(values["loss"], 700.0))  # exp overflows beyond ~709
        elif metric == "mse":
            values["mse"] = float(np.mean((outputs - targets) ** 2))
        elif metric == "r2":
            residual = np.sum((targets - outputs) ** 2)
            total = np.sum((targets - targets.mean(axis=0)) ** 2)
            values["r2"] = float(1.0 - residual / total)
    return values
