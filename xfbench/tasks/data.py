"""Data that ships with a package or is generated: nothing is downloaded.

- ``digits``: scikit-learn's bundled handwritten digits (1797 images, 8x8, 10 classes), scaled to [0, 1].
- ``digits28``: the same digits upsampled to 28x28 (MNIST's shape) with random shifts and pixel noise, as many
  samples as asked for: real, learnable images at the size people time CNNs on.
- ``linear``: synthetic linear-regression data with known coefficients and Gaussian noise.
- ``text``: generated English-like stories (a template grammar, deterministic in a seed), as character ids for
  language modelling.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn; no download

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def digits(images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as (n, 64) vectors, or (n, 8, 8, 1) NHWC images, and their labels 0-9."""
    x, y = _digits()
    return (x[..., None] if images else x.reshape(len(x), 64)), y


def digits28(num_samples: int = 6000, seed: int = 0, max_shift: int = 2, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``num_samples`` 28x28x1 digit images: upsampled bundled digits, randomly shifted, with noise.

    Example:
        >>> x, y = digits28(10)
        >>> x.shape, x.dtype, y.shape
        ((10, 28, 28, 1), dtype('float32'), (10,))
    """
    from scipy.ndimage import zoom  # a dependency of scikit-learn

    base, labels = _digits()
    big = np.clip(zoom(base, (1, 3.5, 3.5), order=1), 0.0, 1.0)  # (1797, 28, 28)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(big), size=num_samples)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(num_samples, 2))
    out = np.empty((num_samples, 28, 28), np.float32)
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
            out[rows] = np.roll(big[pick[rows]], (dy, dx), axis=(1, 2))
    out += rng.normal(0.0, noise, size=out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)[..., None], labels[pick]


def linear(num_samples: int = 2000, num_features: int = 8, noise: float = 0.5,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Linear data ``y = x @ coef + intercept + noise``: returns x (float32), y (n, 1), coef, intercept.

    Example:
        >>> x, y, coef, intercept = linear(100, 3)
        >>> x.shape, y.shape, coef.shape
        ((100, 3), (100, 1), (3,))
    """
    rng = np.random.default_rng(seed)
    coef = rng.uniform(-3.0, 3.0, size=num_features)
    intercept = float(rng.uniform(-1.0, 1.0))
    x = rng.normal(size=(num_samples, num_features))
    y = x @ coef + intercept + rng.normal(0.0, noise, size=num_samples)
    return x.astype(np.float32), y[:, None].astype(np.float32), coef, intercept


# ------------------------------------------------------------------------------------------------------ text
ALPHABET = "\n .,abcdefghijklmnopqrstuvwxyz"  # the characters of ``text``; a character's id is its index here
_NAMES = ("anna", "omar", "lena", "yuki", "paul", "sara", "ivan", "maya", "noah", "rosa", "theo", "zoe")
_THINGS = ("a book", "an apple", "the red ball", "a small box", "the old map", "a blue cup", "the letter", "a kite",
           "the green hat", "a warm coat")
_PLACES = ("in the garden", "by the river", "at the market", "on the hill", "near the school", "in the kitchen")
_TIMES = ("today", "at night", "every morning", "after lunch", "in the spring", "on monday")
_ANIMALS = ("the cat", "a dog", "the bird", "an old horse", "the fox", "a small fish")
_ACTIONS = ("sleeps", "runs", "sings", "waits", "hides", "plays", "eats", "swims")


def _sentence(rng: np.random.Generator) -> str:
    """One short story of a template grammar. Some templates repeat names from earlier in the story, so predicting
    them needs attention to the context, not only the previous few characters."""
    pick = lambda options: options[rng.integers(len(options))]  # noqa: E731
    a, b = rng.choice(len(_NAMES), size=2, replace=False)
    first, second = _NAMES[a], _NAMES[b]
    kind = rng.integers(4)
    if kind == 0:
        return f"{first} gives {pick(_THINGS)} to {second}. {second} thanks {first}."
    if kind == 1:
        return f"{pick(_ANIMALS)} {pick(_ACTIONS)} {pick(_PLACES)} {pick(_TIMES)}."
    if kind == 2:
        return f"{first} meets {second} {pick(_PLACES)}, and {first} smiles at {second}."
    return f"{first} finds {pick(_THINGS)} {pick(_PLACES)} {pick(_TIMES)}."


def text(num_chars: int, seed: int = 0) -> str:
    """``num_chars`` characters of generated English-like text (stories of a small template grammar, one per line),
    deterministic in ``seed``: a language-modelling corpus that needs no download.

    Example:
        >>> sample = text(60)
        >>> len(sample), set(sample) <= set(ALPHABET)
        (60, True)
    """
    rng = np.random.default_rng([seed, 7])
    parts, size = [], 0
    while size < num_chars:
        parts.append(_sentence(rng) + "\n")
        size += len(parts[-1])
    return "".join(parts)[:num_chars]


def text_sequences(num_sequences: int, seq_len: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``num_sequences`` windows of :func:`text` as character ids: inputs (n, seq_len) and next-character targets
    (n, seq_len), the inputs shifted by one (the language-modelling task).

    Example:
        >>> x, y = text_sequences(3, 8)
        >>> x.shape, y.shape, bool((x[:, 1:] == y[:, :-1]).all())
        ((3, 8), (3, 8), True)
    """
    ids = np.frombuffer(text(num_sequences * seq_len + 1, seed).encode("ascii"), np.uint8)
    lookup = np.zeros(256, np.int64)
    lookup[np.frombuffer(ALPHABET.encode("ascii"), np.uint8)] = np.arange(len(ALPHABET))
    ids = lookup[ids]
    x = ids[:-1].reshape(num_sequences, seq_len)
    y = ids[1:].reshape(num_sequences, seq_len)
    return x.astype(np.int32), y.astype(np.int64)
