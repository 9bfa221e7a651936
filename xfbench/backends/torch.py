"""PyTorch adapter, in PyTorch's own idiom: ``nn.Module``s (``nn.Sequential``, ``nn.Linear``, ``nn.Conv2d``,
``nn.LayerNorm``, ``nn.Embedding``, attention through ``F.scaled_dot_product_attention``), ``torch.optim``. Two
modes: eager (``torch``) and ``torch-compile``, the model through ``torch.compile(mode="default")`` (TorchInductor;
the backward through AOTAutograd) as the PyTorch tutorials write it, with the fused optimizer step left eager.
Its compile time lands in ``first_step_s``; recompiles are counted from TorchDynamo's compiled-graph counter.

Images are logical NCHW with OIHW kernels (PyTorch's convention), stored channels_last; weights are converted
from and to the neutral layout in ``backends.common`` (including the flatten order after a conv stack).
float32 throughout; TF32 is switched off on GPU so every backend computes in full float32.

Where PyTorch's defaults differ from the spec, the adapter sets the spec's: GELU's form (``approximate``),
LayerNorm's epsilon, the attention scale, BatchNorm's running variance (PyTorch keeps the *unbiased* batch
variance; the spec the biased one, Keras' and Flax's: :class:`BatchNorm` normalizes with
``torch.native_batch_norm`` and moves the running statistics itself, from the mean and inverse deviation that
kernel returns), gradient clipping without the 1e-6 that ``clip_grad_norm_`` adds to the norm, and the schedule
(``LambdaLR`` of the spec's factor of the update about to run).
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xfbench.backends import common
from xfbench.backends.base import Backend, Trainer, Weights
from xfbench.machine import cpu_name
from xfbench.tasks.layers import infer_shapes
from xfbench.tasks.spec import (
    SGD,
    AdamW,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    LayerNorm,
    MaxPool2D,
    PositionEmbedding,
    Residual,
    SelfAttention,
    Task,
)

if TYPE_CHECKING:
    import torch


COMPILE_MODE = "default"
ATTENTION = "torch.nn.functional.scaled_dot_product_attention"


@functools.cache
def _modules() -> Any:
    """The adapter's own modules, where PyTorch has none that computes the spec's function (defined on first use:
    torch is imported only in a worker)."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    class ChannelsLast(nn.Module):
        """Apply ``inner`` over the last axis of NCHW feature maps (the neutral channels axis), or as is."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dim() == 4:
                return self.inner(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            return self.inner(x)

    class HWCFlatten(nn.Module):
        """Flatten NCHW feature maps in the neutral H, W, C order (a free view of channels_last memory)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x.flatten(1)

    class GlobalAvgPool(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    class BatchNorm(nn.Module):
        """BatchNorm over the channels (dim 1 of NCHW or vectors, the last axis of sequences) with the spec's
        running statistics: ``running = (1 - momentum) * running + momentum * batch`` with the *biased* batch
        variance, recovered from ``torch.native_batch_norm``'s inverse deviation (no second pass over the data)."""

        def __init__(self, channels: int, momentum: float, epsilon: float) -> None:
            super().__init__()
            self.momentum, self.epsilon = momentum, epsilon
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
            self.register_buffer("running_mean", torch.zeros(channels))
            self.register_buffer("running_var", torch.ones(channels))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sequence = x.dim() == 3
            if sequence:
                x = x.transpose(1, 2)
            if self.training:
                out, mean, inverse = torch.native_batch_norm(x, self.weight, self.bias, None, None, True, 0.0,
                                                             self.epsilon)
                with torch.no_grad():
                    self.running_mean.lerp_(mean, self.momentum)
                    self.running_var.lerp_(inverse.pow(-2) - self.epsilon, self.momentum)
            else:
                out = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                                   self.epsilon)
            return out.transpose(1, 2) if sequence else out

    class PositionEmbedding(nn.Module):
        def __init__(self, max_length: int, width: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(max_length, width))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.weight[: x.shape[1]]

    class SelfAttention(nn.Module):
        """Multi-head self-attention with ``F.scaled_dot_product_attention`` (PyTorch's fused kernel), the scale and
        causality explicit; no key bias (the spec has none)."""

        def __init__(self, width: int, layer: Any) -> None:
            super().__init__()
            inner = layer.heads * layer.head_size
            self.heads, self.size, self.scale, self.causal = layer.heads, layer.head_size, layer.scale, layer.causal
            self.query = nn.Linear(width, inner, bias=layer.use_bias)
            self.key = nn.Linear(width, inner, bias=False)
            self.value = nn.Linear(width, inner, bias=layer.use_bias)
            self.output = nn.Linear(inner, width, bias=layer.use_bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, length, _ = x.shape
            q, k, v = (part(x).view(batch, length, self.heads, self.size).transpose(1, 2)
                       for part in (self.query, self.key, self.value))
            mixed = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)
            return self.output(mixed.transpose(1, 2).reshape(batch, length, self.heads * self.size))

    class Residual(nn.Module):
        def __init__(self, body: nn.Module, shortcut: nn.Module | None, activation: nn.Module | None) -> None:
            super().__init__()
            self.body, self.shortcut = body, shortcut if shortcut is not None else nn.Identity()
            self.activation = activation if activation is not None else nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.activation(self.body(x) + self.shortcut(x))

    return type("Modules", (), {name: value for name, value in locals().items() if isinstance(value, type)})


def _activation(name: str) -> Any:
    from torch import nn

    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
            "gelu": lambda: nn.GELU(approximate="none"), "gelu_tanh": lambda: nn.GELU(approximate="tanh")}.get(name)


class _Builder:
    """Builds the task's modules and records which PyTorch tensor holds each spec tensor (by spec name)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.tensors: dict[str, Any] = {}
        self.chw = common.chw_flattens(task)

    def stack(self, layers: Sequence[Layer], in_shape: tuple[int, ...], prefix: str) -> Any:
        from torch import nn

        shapes = infer_shapes(in_shape, layers)
        modules: list[nn.Module] = []
        for index, layer in enumerate(layers):
            modules += self.layer(layer, f"{prefix}{index}.{type(layer).__name__}", shapes[index])
            activation = _activation(common.layer_activation(layer))
            if activation is not None and not isinstance(layer, Residual):
                modules.append(activation())
        return nn.Sequential(*modules)

    def layer(self, layer: Layer, name: str, in_shape: tuple[int, ...]) -> list[Any]:
        from torch import nn

        own = _modules()
        if isinstance(layer, Dense):
            module = nn.Linear(in_shape[-1], layer.units, bias=layer.use_bias)
            self._record(name, kernel=module.weight, bias=module.bias)
            return [module]
        if isinstance(layer, Conv2D):
            (top, bottom), (left, right) = common.conv_padding(layer, in_shape)
            symmetric = top == bottom and left == right
            conv = nn.Conv2d(in_shape[2], layer.filters, layer.kernel_size, layer.strides,
                             padding=(top, left) if symmetric else 0, bias=layer.use_bias)
            self._record(name, kernel=conv.weight, bias=conv.bias)
            return [conv] if symmetric else [nn.ZeroPad2d((left, right, top, bottom)), conv]
        if isinstance(layer, MaxPool2D):
            return [nn.MaxPool2d(layer.pool_size, layer.strides)]
        if isinstance(layer, AvgPool2D):
            return [nn.AvgPool2d(layer.pool_size, layer.strides)]
        if isinstance(layer, GlobalAvgPool2D):
            return [own.GlobalAvgPool()]
        if isinstance(layer, Flatten):
            return [nn.Flatten() if name in self.chw else own.HWCFlatten()]
        if isinstance(layer, LayerNorm):
            norm = nn.LayerNorm(in_shape[-1], eps=layer.epsilon)
            self._record(name, gamma=norm.weight, beta=norm.bias)
            return [own.ChannelsLast(norm) if len(in_shape) == 3 else norm]
        if isinstance(layer, BatchNorm):
            norm = own.BatchNorm(in_shape[-1], layer.momentum, layer.epsilon)
            self._record(name, gamma=norm.weight, beta=norm.bias, running_mean=norm.running_mean,
                         running_var=norm.running_var)
            return [norm]
        if isinstance(layer, Embedding):
            table = nn.Embedding(layer.vocab_size, layer.width)
            self._record(name, embeddings=table.weight)
            return [table]
        if isinstance(layer, PositionEmbedding):
            table = own.PositionEmbedding(layer.max_length, in_shape[-1])
            self._record(name, embeddings=table.weight)
            return [table]
        if isinstance(layer, SelfAttention):
            attention = own.SelfAttention(in_shape[-1], layer)
            for part in ("query", "key", "value", "output"):
                linear = getattr(attention, part)
                self._record(f"{name}.{part}", kernel=linear.weight, bias=linear.bias)
            return [attention]
        if isinstance(layer, Residual):
            body = self.stack(layer.body, in_shape, f"{name}.body.")
            shortcut = self.stack(layer.shortcut, in_shape, f"{name}.shortcut.") if layer.shortcut else None
            activation = _activation(layer.activation)
            return [own.Residual(body, shortcut, activation() if activation else None)]
        return []  # Activation: added by the caller

    def _record(self, name: str, **tensors: Any) -> None:
        self.tensors.update({f"{name}.{key}": value for key, value in tensors.items() if value is not None})


class TorchTrainer(Trainer):
    def __init__(self, task: Task, device: torch.device, weights: Weights, compile: bool = False) -> None:
        import torch
        import torch.nn.functional as F  # noqa: N812

        self._torch = torch
        self.task = task
        self.device = device
        self.images = len(task.input_shape) == 3
        # Images: logical NCHW in channels_last memory (NHWC). PyTorch's CPU kernels run the whole conv -> relu ->
        # max-pool chain in that format much faster: max_pool2d took 5.9 ms per call in NCHW memory vs 0.66 ms
        # in channels_last on the 28x28 CNN (torch.profiler, 2 threads), 1.1-1.6x on the whole step.
        self.memory_format = torch.channels_last if self.images else torch.contiguous_format
        builder = _Builder(task)
        self.model = builder.stack(task.layers, task.input_shape, "").to(device, memory_format=self.memory_format)
        # the spec's tensors, in its order, as this model holds them (after .to(): the module's own tensors)
        held = {id(value): name for name, value in builder.tensors.items()}
        by_name = {held[id(value)]: value for value in [*self.model.parameters(), *self.model.buffers()]
                   if id(value) in held}
        self.tensors = {name: by_name[name] for name in task.tensors}
        self.names = task.param_names()
        self.params = [self.tensors[name] for name in self.names]
        self.stateful = common.has_state(task)
        self.set_weights(weights)
        self.compiled = compile
        # the module every forward goes through: the compiled one (same parameters) in torch-compile
        self.forward = torch.compile(self.model, mode=COMPILE_MODE) if compile else self.model
        opt = task.optimizer
        # fused=True: one kernel per parameter instead of a chain of foreach ops; measured 2.21 -> 1.74 ms per
        # MLP 784-256-256-10 step on 2 CPU threads (same process, alternating; benchmarks/native agrees)
        if isinstance(opt, SGD):
            self.optimizer = torch.optim.SGD(self.params, lr=opt.learning_rate, momentum=opt.momentum, fused=True)
        elif isinstance(opt, AdamW):
            self.optimizer = torch.optim.AdamW(self.params, lr=opt.learning_rate, betas=(opt.beta1, opt.beta2),
                                               eps=opt.epsilon, weight_decay=opt.weight_decay, fused=True)
        else:
            self.optimizer = torch.optim.Adam(
                self.params, lr=opt.learning_rate, betas=(opt.beta1, opt.beta2), eps=opt.epsilon, fused=True,
            )
        self.clip_norm = getattr(opt, "clip_norm", None)
        schedule = getattr(opt, "schedule", None)
        # LambdaLR sets the rate of the next update from the number of updates so far: the spec's factor(t), t from 1
        self.scheduler = None if schedule is None else torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda done: schedule.factor(done + 1))
        loss = {
            "mse": F.mse_loss,
            "softmax_cross_entropy": F.cross_entropy,
            "sigmoid_binary_cross_entropy": F.binary_cross_entropy_with_logits,
        }[task.loss]
        # a sequence model's logits (N, T, classes) as rows: the mean over every position
        self.loss_fn = (lambda out, y: loss(out.flatten(0, -2), y.flatten())) if len(task.shapes[-1]) == 2 else loss
        self.x_train = self._to_device(task.data.x_train)
        self.y_train = torch.from_numpy(common.as_labels(task, task.data.y_train)).to(device)
        self.x_batches = self.y_batches = None

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        tensor = self._torch.from_numpy(np.ascontiguousarray(common.as_inputs(self.task, x))).to(self.device)
        return tensor.permute(0, 3, 1, 2) if self.images else tensor  # NHWC memory viewed as NCHW: channels_last

    def set_weights(self, weights: Weights) -> None:
        converted = common.to_channels_first(self.task, weights)
        with self._torch.no_grad():
            for name, tensor in self.tensors.items():
                tensor.copy_(self._torch.from_numpy(converted[name]))

    def _train_mode(self, training: bool) -> None:
        """A model with BatchNorm trains on batch statistics and evaluates on running ones; others never switch
        (a compiled model would compile once more for the other mode)."""
        if self.stateful and self.model.training != training:
            self.model.train(training)

    def set_epoch(self, order: np.ndarray) -> None:
        index = self._torch.from_numpy(order.reshape(-1)).to(self.device)
        batch = order.shape[1]
        x = self.x_train.index_select(0, index).contiguous(memory_format=self.memory_format)
        self.x_batches = x.split(batch)
        self.y_batches = self.y_train.index_select(0, index).split(batch)
        self._train_mode(True)

    def _clip(self) -> None:
        """``g * min(1, clip / ||g||)``: the spec's clipping (``clip_grad_norm_`` divides by ``||g|| + 1e-6``)."""
        torch = self._torch
        norm = torch.nn.utils.get_total_norm([p.grad for p in self.params])
        torch._foreach_mul_([p.grad for p in self.params], torch.clamp(self.clip_norm / norm, max=1.0))

    def train_step(self, batch: int) -> Any:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.forward(self.x_batches[batch]), self.y_batches[batch])
        loss.backward()
        if self.clip_norm is not None:
            self._clip()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()

    def sync(self, value: Any = None) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)

    def predict(self, x: np.ndarray) -> np.ndarray:
        # compiled: chunks of the training batch size, the last one padded, so the graph sees one shape (another
        # would cost a recompile of tens of seconds)
        chunk = self.task.batch_size if self.compiled else 4096
        outputs = []
        self._train_mode(False)
        with self._torch.no_grad():
            for start in range(0, len(x), chunk):
                part = x[start:start + chunk]
                if self.compiled and len(part) < chunk:
                    part = np.concatenate([part, np.zeros((chunk - len(part), *part.shape[1:]), part.dtype)])
                outputs.append(self.forward(self._to_device(part)).cpu().numpy()[:len(x) - start])
        self._train_mode(True)
        return np.concatenate(outputs)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        torch = self._torch
        target = torch.from_numpy(common.as_labels(self.task, y)).to(self.device)
        state = {name: tensor.clone() for name, tensor in self.tensors.items() if name not in self.names}
        self._train_mode(True)
        loss = self.loss_fn(self.forward(self._to_device(x)), target)
        grads = torch.autograd.grad(loss, self.params)
        with torch.no_grad():  # gradients only: the running statistics this forward moved go back
            for name, value in state.items():
                self.tensors[name].copy_(value)
        raw = {name: grad.detach().cpu().numpy() for name, grad in zip(self.names, grads, strict=True)}
        return float(loss.item()), common.from_channels_first(self.task, raw)

    def get_weights(self) -> Weights:
        raw = {name: tensor.detach().cpu().numpy() for name, tensor in self.tensors.items()}
        return common.from_channels_first(self.task, raw)

    def describe(self) -> dict[str, Any]:
        described = {"mode": "eager", "image_memory_format": "channels_last" if self.images else "contiguous (no images)"}
        if self.compiled:
            described.update(mode=f"torch.compile(model, mode={COMPILE_MODE!r}), optimizer step eager",
                             compiler="inductor")
        if any(isinstance(site.layer, SelfAttention) for site in common.sites(self.task)):
            described["attention"] = ATTENTION
        return {**described, **common.conventions(self.task)}

    def compile_count(self) -> int | None:
        if not self.compiled:
            return None
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])

    def device_peak_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return self._torch.cuda.max_memory_allocated(self.device) / 2**20


class TorchBackend(Backend):
    name = "torch"
    module = "torch"
    distribution = "torch"
    extra = "torch"
    layout = "NCHW"

    def __init__(self, compile: bool = False) -> None:
        self.compile = compile
        if compile:  # subclasses (tests' fakes) keep their own class-level name
            self.name, self.compiles, self.slow_compile = "torch-compile", True, True

    def unavailable_reason(self) -> str | None:
        reason = super().unavailable_reason()
        if reason is None and self.compile and not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
            return "torch.compile's CPU backend (inductor) needs a C++ compiler: install g++ (apt install g++)"
        return reason

    def setup(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already set in this process
            pass
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self._threads = threads

    def versions(self) -> dict[str, str]:
        import torch

        versions = {"torch": torch.__version__}
        if torch.cuda.is_available():
            versions["cuda"] = str(torch.version.cuda)
            versions["cudnn"] = str(torch.backends.cudnn.version())
        return versions

    def devices(self) -> list[dict[str, str]]:
        import torch

        found = [{"kind": "cpu", "name": cpu_name()}]
        if torch.cuda.is_available():
            found.append({"kind": "gpu", "name": torch.cuda.get_device_name(0)})
        return found

    def fingerprint(self, device_kind: str) -> dict[str, Any]:
        import torch

        return {
            "dtype": "float32",
            "layout": self.layout,
            "matmul_precision": "float32" if not torch.backends.cuda.matmul.allow_tf32 else "tf32",
            "conv_precision": "float32" if not torch.backends.cudnn.allow_tf32 else "tf32",
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "deterministic_ops": torch.are_deterministic_algorithms_enabled(),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "optimizer_impl": "torch.optim (fused)",
            "optimizer_formula": "spec",
        }

    def build(self, task: Task, device_kind: str, weights: Weights) -> Trainer:
        import torch

        return TorchTrainer(task, torch.device("cuda" if device_kind == "gpu" else "cpu"), weights, self.compile)
