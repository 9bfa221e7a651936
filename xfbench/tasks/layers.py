"""The layers of the framework-neutral model spec, each checked when it is built and knowing its own shape rule and
its tensors. Plain Python and NumPy.

Neutral layouts: images NHWC, conv kernels HWIO, dense kernels (in, out) applied to the last axis (so a Dense works
on vectors and on sequences of them), ``Flatten`` in H, W, C order, attention projections (width, heads x head_size)
with the heads outermost. A :class:`Residual` block adds its body's output to its input (or to its shortcut's), so a
model is a stack of layers whose entries may themselves hold stacks.

Tensor names: the layer at index ``i`` of the stack is ``"{i}.{Type}"`` (``"0.Dense"``), a layer of a residual body
``"{block}.body.{j}.{Type}"`` (``"3.Residual.body.0.Conv2D"``); a tensor is ``"{layer}.{name}"``
(``"3.Residual.body.0.Conv2D.kernel"``). Trainable tensors are parameters; a :class:`BatchNorm`'s running statistics
are state, carried and compared but never trained.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar, NamedTuple, Union

from xfbench.errors import XfbenchError
from xfbench.tasks.checks import choice, flag, number_in, pair, positive_int

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "gelu", "gelu_tanh")  # gelu: exact (erf); gelu_tanh: tanh form
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "small_normal")  # small: N(0, 0.02²)
PADDINGS = ("valid", "same")
Shape = tuple[int, ...]


class Tensor(NamedTuple):
    """One tensor of a layer: its neutral shape, how it starts (an initializer, ``zeros`` or ``ones``) and whether
    the optimizer trains it (a parameter) or the layer updates it itself (state)."""

    shape: Shape
    init: str
    trainable: bool = True


def conv_output_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a conv or pool along one axis (TensorFlow's rule)."""
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's 'same' rule along one axis: the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def spec_repr(value: Any) -> str:
    """The text a spec value is hashed by (``Task.spec_hash``): the dataclass ``repr`` without the fields a class
    gained after its first release while they hold their default (``ADDED``), so a task that uses none of the newer
    options keeps the hash it had before they existed, and results stored then still compare with today's.

    Example:
        >>> spec_repr(Dense(10))
        "Dense(units=10, activation='linear', init='glorot_uniform')"
        >>> spec_repr((Dense(10, use_bias=False),))
        "(Dense(units=10, activation='linear', init='glorot_uniform', use_bias=False),)"
    """
    if is_dataclass(value) and not isinstance(value, type):
        added = getattr(type(value), "ADDED", {})
        items = [f"{item.name}={spec_repr(getattr(value, item.name))}" for item in fields(value)
                 if item.repr and not (item.name in added and getattr(value, item.name) == added[item.name])]
        return f"{type(value).__name__}({', '.join(items)})"
    if isinstance(value, tuple):
        inner = ", ".join(spec_repr(item) for item in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _needs(where: str, shape: Shape, rank: int, what: str) -> None:
    if len(shape) != rank:
        raise XfbenchError(f"{where} needs {what} but gets shape {shape}")


# ------------------------------------------------------------------------------------- dense and conv
@dataclass(frozen=True)
class Dense:
    """A fully connected layer ``activation(x @ kernel + bias)`` on the last axis; kernel is (in, out)."""

    units: int
    activation: str = "linear"
    init: str = "glorot_uniform"
    use_bias: bool = True
    ADDED: ClassVar[dict[str, Any]] = {"use_bias": True}

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", positive_int("Dense units", self.units))
        choice("activation", self.activation, ACTIVATIONS)
        choice("initializer", self.init, INITIALIZERS)
        object.__setattr__(self, "use_bias", flag("Dense use_bias", self.use_bias))

    def output_shape(self, shape: Shape, where: str) -> Shape:
        if len(shape) not in (1, 2):
            raise XfbenchError(f"{where} needs vectors (or sequences of them) but gets shape {shape}; put Flatten() "
                               f"before it")
        return (*shape[:-1], self.units)

    def tensors(self, shape: Shape) -> dict[str, Tensor]:
        out = {"kernel": Tensor((shape[-1], self.units), self.init)}
        return {**out, "bias": Tensor((self.units,), "zeros")} if self.use_bias else out


@dataclass(frozen=True)
class Conv2D:
    """A 2-D convolution (cross-correlation, as every framework computes it) on NHWC input; kernel is HWIO.

    ``padding="same"`` follows TensorFlow's rule: the total padding is split with the extra pixel at the
    bottom/right, which matters for stride > 1.
    """

    filters: int
    kernel_size: int | tuple[int, int] = 3
    strides: int | tuple[int, int] = 1
    padding: str = "valid"
    activation: str = "linear"
    init: str = "glorot_uniform"
    use_bias: bool = True
    ADDED: ClassVar[dict[str, Any]] = {"use_bias": True}

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", positive_int("Conv2D filters", self.filters))
        object.__setattr__(self, "kernel_size", pair(self.kernel_size, "Conv2D kernel_size"))
        object.__setattr__(self, "strides", pair(self.strides, "Conv2D strides"))
        choice("padding", self.padding, PADDINGS)
        choice("activation", self.activation, ACTIVATIONS)
        choice("initializer", self.init, INITIALIZERS)
        object.__setattr__(self, "use_bias", flag("Conv2D use_bias", self.use_bias))

    def output_shape(self, shape: Shape, where: str) -> Shape:
        _needs(where, shape, 3, "(height, width, channels) inputs")
        return (*_window(where, shape, self.kernel_size, self.strides, self.padding), self.filters)  # type: ignore[arg-type]

    def tensors(self, shape: Shape) -> dict[str, Tensor]:
        out = {"kernel": Tensor((*self.kernel_size, shape[2], self.filters), self.init)}  # type: ignore[misc]
        return {**out, "bias": Tensor((self.filters,), "zeros")} if self.use_bias else out


def _window(where: str, shape: Shape, kernel: tuple[int, int], strides: tuple[int, int], padding: str
            ) -> tuple[int, int]:
    height, width = (conv_output_size(shape[axis], kernel[axis], strides[axis], padding) for axis in (0, 1))
    if height <= 0 or width <= 0:
        raise XfbenchError(f"{where} window {kernel} does not fit its input {shape[:2]}")
    return height, width


@dataclass(frozen=True)
class _Pool2D:
    pool_size: int | tuple[int, int] = 2
    strides: int | tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool_size", pair(self.pool_size, f"{type(self).__name__} pool_size"))
        strides = self.pool_size if self.strides is None else self.strides
        object.__setattr__(self, "strides", pair(strides, f"{type(self).__name__} strides"))

    def output_shape(self, shape: Shape, where: str) -> Shape:
        _needs(where, shape, 3, "(height, width, channels) inputs")
        return (*_window(where, shape, self.pool_size, self.strides, "valid"), shape[2])  # type: ignore[arg-type]

    def tensors(self, shape: Shape) -> dict[str, Tensor]:
        return {}


@dataclass(frozen=True)
class MaxPool2D(_Pool2D):
    """Max pooling over windows of ``pool_size`` (valid padding); ``strides`` defaults to ``pool_size``."""


@dataclass(frozen=True)
class AvgPool2D(_Pool2D):
    """Average pooling over windows of ``pool_size`` (valid padding); ``strides`` defaults to ``pool_size``."""


@dataclass(frozen=True)
class GlobalAvgPool2D:
    """The mean over height and width: (height, width, channels) feature maps to (channels,) vectors."""

    def output_shape(self, shape: Shape, where: str) -> Shape:
        _needs(where, shape, 3, "(height, width, channels) inputs")
        return (shape[2],)

    def tensors(self, shape: Shape) -> dict[str, Tensor]:
        return {}


@dataclass(frozen=True)
class Flatten:
    """Flatten (H, W, C) feature maps (or anything) to vectors in H, W, C order (the neutral order)."""

    def output_shape(self, shape: Shape, where: str) -> Shape:
        return (math.prod(shape),)

    def tensors(self, shape: Shape) -> dict[str, Tensor]:
        return {}


@dataclass(frozen=True)
class Activation:
    """A standalone activation layer."""

    name: str

    def __post_init__(self) -> None:
        choice("activation", self.name, ACTIVATIONS)

    def output_shape(self, shape: Shape, where: str) -> Shape:
        return shape

    def tensors(self, shape: Shape) -> dict[str, Tensor]:
        return {}


# --------------------------------------------------------------------------------------- normalization
@dataclass(frozen=True)
class LayerNorm:
    """Normalization over the last axis, ``(x - mean) / sqrt(var + epsilon) * gamma + beta`` (biased variance);
    ``epsilon`` explicit (PyTorch's default 1e-5, Keras' 1e-3: each adapter sets this one)."""

    epsilon: float = 1e-5

    def __post_init__(self) -> None:
        number_in("LayerNorm epsilon", self.epsilon, 0, 1, low_open=True)

    def output_shape(self, shape: Shape, where: str) -> Shape:
        if not shape:
            raise XfbenchError(f"{where} needs vectors (or sequences of them) but gets scalars")
        return shape

    def tensors(self, shape: Shape) -> dict[str, Tensor]:
        return {"gamma": Tensor((shape[-1],), "ones"), "beta": Tensor((shape[-1],), "zeros")}


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalization over every axis but the last (the channels). Training normalizes with the batch's mean
    and biased variance and updates the running statistics, ``running = (1 - momentum) * running + momentum *
    batch`` (PyTorch's convention: ``momentum`` weighs the new batch; Keras' momentum is ``1 - momentum``), with the
    batch's *biased* variance (Keras' and Flax's; PyTorch keeps the unbiased one, and its adapter corrects that).
    Evaluation normalizes with the running statistics."""

    momentum: float = 0.1
    epsilon: float = 1e-5

    def __post_init__(self) -> None:
        number_in("BatchNorm momentum", self.momentum, 0, 1, low_open=True)
        number_in("BatchNorm epsilon", self.epsilon, 0, 1, low_open=True)

    def output_shape(self, shape: Shape, where: str) -> Shape:
        if not shape:
            raise XfbenchError(f"{where} needs features (a last axis) but gets scalars")
        return shape

    def tensors(self, shape: Shape) -> dict[str, Tensor]:
        channels = (shape[-1],)
        return {"gamma": Tensor(channels, "ones"), "beta": Tensor(channels, "zeros"),
                "running_mean": Tensor(channels, "zeros", trainable=False),
                "running_var": Tensor(channels, "ones", trainable=False)}


# ------------------------------------------------------------------------------------------- sequences
@dataclass(frozen=True)
class Embedding:
    """Token ids (integers in ``[0, vocab_size)``, shape (length,)) to vectors (length, width): the first layer of a
    sequence model."""

    vocab_size: int
    width: int
    init: str = "small_normal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocab_size", positive_int("Embedding vocab_size", self.vocab_size))
        object.__setattr__(self, "width", positive_int("Embedding width", self.width))
        choice("initializer", self.init, INITIALIZERS)

    def output_shape(self, shape: Shape, where: str) -> Shape:
        _needs(where, shape, 1, "token ids of shape (length,)")
        return (shape[0], self.width)

    def tensors(self, shape: Shape) -> dict[str, Tensor]:
        return {"embeddings": Tensor((self.vocab_size, self.width), self.init)}


@dataclass(frozen=True)
class PositionEmbedding:
    """A learned position embedding: adds row ``t`` of a (max_length, width) table to position ``t``."""

    max_length: int
    init: str = "small_normal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_length", positive_int("PositionEmbedding max_length", self.max_length))
        choice("initializer", self.init, INITIALIZERS)

    def output_shape(self, shape: Shape, where: str) -> Shape:
        _needs(where, shape, 2, "sequences of vectors, shape (length, width)")
        if shape[0] > self.max_length:
            raise XfbenchError(f"{where} holds {self.max_length} positions but gets sequences of {shape[0]}")
        return shape

    def tensors(self, shape: Shape) -> dict[str, Tensor]:
        return {"embeddings": Tensor((self.max_length, shape[1]), self.init)}


@dataclass(frozen=True)
class SelfAttention:
    """Multi-head self-attention on (length, width) sequences: query, key and value projections to ``heads x
    head_size``, ``softmax(scale * q k^T)`` (causal: position t sees positions <= t), the output projection back to
    width. ``scale`` is explicit (None: 1 / sqrt(head_size), stored as its value).

    ``use_bias`` gives the query, value and output projections a bias, not the key: a key bias adds ``q . b`` to
    every score of a query, which softmax ignores, so its gradient is rounding noise that Adam would turn into
    full-size steps, different in every framework (measured: a relative parameter difference of 6e8 after 5 steps).
    """

    heads: int
    head_size: int
    causal: bool = True
    scale: float | None = None
    use_bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", positive_int("SelfAttention heads", self.heads))
        object.__setattr__(self, "head_size", positive_int("SelfAttention head_size", self.head_size))
        object.__setattr__(self, "causal", flag("SelfAttention causal", self.causal))
        object.__setattr__(self, "use_bias", flag("SelfAttention use_bias", self.use_bias))
        scale = 1 / math.sqrt(self.head_size) if self.scale is None else self.scale
        object.__setattr__(self, "scale", number_in("SelfAttention scale", scale, 0, math.inf, low_open=True,
                                                    high_open=True))

    def output_shape(self, shape: Shape, where: str) -> Shape:
        _needs(where, shape, 2, "sequences of vectors, shape (length, width)")
        return shape

    def tensors(self, shape: Shape) -> dict[str, Tensor]:
        width, inner = shape[1], self.heads * self.head_size
        out: dict[str, Tensor] = {}
        for name, size in (("query", (width, inner)), ("key", (width, inner)), ("value", (width, inner)),
                           ("output", (inner, width))):
            out[f"{name}.kernel"] = Tensor(size, "glorot_uniform")
            if self.use_bias and name != "key":
                out[f"{name}.bias"] = Tensor((size[1],), "zeros")
        return out


# --------------------------------------------------------------------------------------------- residual
@dataclass(frozen=True)
class Residual:
    """``activation(body(x) + shortcut(x))``: a block whose output is added to its input (an empty ``shortcut`` is
    the identity) or to a projection of it (e.g. ``(Conv2D(32, 1, strides=2),)`` when the body changes the shape)."""

    body: tuple[Layer, ...]
    shortcut: tuple[Layer, ...] = ()
    activation: str = "linear"

    def __post_init__(self) -> None:
        for name in ("body", "shortcut"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise XfbenchError(f"Residual {name} must be a sequence of layers, got {type(value).__name__}")
            object.__setattr__(self, name, tuple(value))
        if not self.body:
            raise XfbenchError("Residual body needs at least one layer")
        choice("activation", self.activation, ACTIVATIONS)

    def output_shape(self, shape: Shape, where: str) -> Shape:
        body = infer_shapes(shape, self.body, f"{where} body ")[-1]
        shortcut = infer_shapes(shape, self.shortcut, f"{where} shortcut ")[-1] if self.shortcut else shape
        if body != shortcut:
            other = "its shortcut gives" if self.shortcut else "its input is"
            hint = "" if self.shortcut else "; give it a shortcut that projects its input (e.g. a 1x1 Conv2D)"
            raise XfbenchError(f"{where}: its body ends in shape {body} but {other} {shortcut}; they are added, so "
                               f"they must match{hint}")
        return body

    def tensors(self, shape: Shape) -> dict[str, Tensor]:
        return {}


Layer = Union[Dense, Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten, Activation, LayerNorm, BatchNorm,
              Embedding, PositionEmbedding, SelfAttention, Residual]
LAYER_TYPES = (Dense, Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten, Activation, LayerNorm, BatchNorm,
               Embedding, PositionEmbedding, SelfAttention, Residual)


def infer_shapes(input_shape: Shape, layers: Sequence[Layer], where: str = "") -> tuple[Shape, ...]:
    """The shape (without batch) after every layer, checking that the layers fit together; ``where`` prefixes the
    layer's name in errors (a residual block's body names its block).

    Example:
        >>> infer_shapes((8, 8, 1), [Conv2D(4, 3), MaxPool2D(2), Flatten(), Dense(10)])
        ((8, 8, 1), (6, 6, 4), (3, 3, 4), (36,), (10,))
    """
    if not layers:
        raise XfbenchError("a task needs at least one layer")
    if not input_shape or 0 in input_shape:
        raise XfbenchError(f"each input sample needs a shape with no empty axis, e.g. (features,) or (height, width, "
                           f"channels); got {tuple(input_shape)}")
    shapes = [tuple(input_shape)]
    for index, layer in enumerate(layers):
        name = f"{where}layer {index} ({type(layer).__name__})"
        if not isinstance(layer, LAYER_TYPES):
            raise XfbenchError(f"{name} is not an xfbench layer; use one of: "
                               f"{', '.join(kind.__name__ for kind in LAYER_TYPES)}")
        if isinstance(layer, Embedding) and (index or where):
            raise XfbenchError(f"{name} must be the first layer of the model: its input is token ids")
        shapes.append(tuple(layer.output_shape(shapes[-1], name)))
    return tuple(shapes)


class Site(NamedTuple):
    """One layer of a model, nested ones included: the prefix of its tensors' names, the layer, its input shape."""

    prefix: str
    layer: Layer
    in_shape: Shape


def walk(layers: Sequence[Layer], input_shape: Shape, prefix: str = "") -> Iterator[Site]:
    """Every layer of a stack in order, depth first: a residual block, then its body's layers, then its shortcut's.

    Example:
        >>> block = Residual((Dense(4, "relu"), Dense(4)))
        >>> [site.prefix for site in walk([Dense(4), block], (3,))]
        ['0.Dense', '1.Residual', '1.Residual.body.0.Dense', '1.Residual.body.1.Dense']
    """
    shapes = infer_shapes(input_shape, layers)
    for index, layer in enumerate(layers):
        here = f"{prefix}{index}.{type(layer).__name__}"
        yield Site(here, layer, shapes[index])
        if isinstance(layer, Residual):
            yield from walk(layer.body, shapes[index], f"{here}.body.")
            if layer.shortcut:
                yield from walk(layer.shortcut, shapes[index], f"{here}.shortcut.")


def tensor_specs(layers: Sequence[Layer], input_shape: Shape) -> dict[str, Tensor]:
    """Every tensor of a model by name, in order (parameters and state)."""
    return {f"{site.prefix}.{name}": tensor for site in walk(layers, input_shape)
            for name, tensor in site.layer.tensors(site.in_shape).items()}
