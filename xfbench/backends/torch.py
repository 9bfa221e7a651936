"""PyTorch adapter, in PyTorch's own idiom: ``nn.Sequential`` of modules, ``torch.optim``. Two modes: eager
(``torch``) and ``torch-compile``, the model through ``torch.compile(mode="default")`` (TorchInductor; the
backward through AOTAutograd) as the PyTorch tutorials write it, with the fused optimizer step left eager.
Its compile time lands in ``first_step_s``; recompiles are counted from TorchDynamo's compiled-graph counter.

Images are logical NCHW with OIHW kernels (PyTorch's convention), stored channels_last; weights are converted
from and to the neutral layout in ``backends.common`` (including the flatten order after a conv stack).
float32 throughout; TF32 is switched off on GPU so every backend computes in full float32.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

import numpy as np

from xfbench.backends import common
from xfbench.backends.base import Backend, Trainer, Weights
from xfbench.machine import cpu_name
from xfbench.tasks.spec import SGD, AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, Task

if TYPE_CHECKING:
    import torch


COMPILE_MODE = "default"


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
        self.model = self._build_model().to(device, memory_format=self.memory_format)
        self.names = task.param_names()
        self.params = [param for _, param in self.model.named_parameters()]
        self.set_weights(weights)
        self.compiled = compile
        # the module every forward goes through: the compiled one (same parameters) in torch-compile
        self.forward = torch.compile(self.model, mode=COMPILE_MODE) if compile else self.model
        opt = task.optimizer
        # fused=True: one kernel per parameter instead of a chain of foreach ops; measured 2.21 -> 1.74 ms per
        # MLP 784-256-256-10 step on 2 CPU threads (same process, alternating; benchmarks/native agrees)
        if isinstance(opt, SGD):
            self.optimizer = torch.optim.SGD(self.params, lr=opt.learning_rate, momentum=opt.momentum, fused=True)
        else:
            self.optimizer = torch.optim.Adam(
                self.params, lr=opt.learning_rate, betas=(opt.beta1, opt.beta2), eps=opt.epsilon, fused=True,
            )
        self.loss_fn = {
            "mse": F.mse_loss,
            "softmax_cross_entropy": F.cross_entropy,
            "sigmoid_binary_cross_entropy": F.binary_cross_entropy_with_logits,
        }[task.loss]
        self.x_train = self._to_device(task.data.x_train)
        self.y_train = torch.from_numpy(common.as_labels(task, task.data.y_train)).to(device)
        self.x_batches = self.y_batches = None

    def _build_model(self) -> torch.nn.Sequential:
        nn = self._torch.nn
        modules: list[nn.Module] = []
        activations = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
        for index, layer in enumerate(self.task.layers):
            in_shape = self.task.shapes[index]
            if isinstance(layer, Dense):
                modules.append(nn.Linear(in_shape[0], layer.units))
            elif isinstance(layer, Conv2D):
                (top, bottom), (left, right) = common.conv_padding(self.task, index)
                symmetric = top == bottom and left == right
                if not symmetric:
                    modules.append(nn.ZeroPad2d((left, right, top, bottom)))
                modules.append(nn.Conv2d(
                    in_shape[2], layer.filters, layer.kernel_size, layer.strides,
                    padding=(top, left) if symmetric else 0,
                ))
            elif isinstance(layer, MaxPool2D):
                modules.append(nn.MaxPool2d(layer.pool_size, layer.strides))
            elif isinstance(layer, AvgPool2D):
                modules.append(nn.AvgPool2d(layer.pool_size, layer.strides))
            elif isinstance(layer, Flatten):
                modules.append(nn.Flatten())
            activation = common.layer_activation(layer)
            if activation != "linear":
                modules.append(activations[activation]())
        return nn.Sequential(*modules)

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        tensor = self._torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        return tensor.permute(0, 3, 1, 2) if self.images else tensor  # NHWC memory viewed as NCHW: channels_last

    def set_weights(self, weights: Weights) -> None:
        converted = common.to_channels_first(self.task, weights)
        with self._torch.no_grad():
            for name, param in zip(self.names, self.params, strict=True):
                param.copy_(self._torch.from_numpy(converted[name]))

    def set_epoch(self, order: np.ndarray) -> None:
        index = self._torch.from_numpy(order.reshape(-1)).to(self.device)
        batch = order.shape[1]
        x = self.x_train.index_select(0, index).contiguous(memory_format=self.memory_format)
        self.x_batches = x.split(batch)
        self.y_batches = self.y_train.index_select(0, index).split(batch)

    def train_step(self, batch: int) -> Any:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.forward(self.x_batches[batch]), self.y_batches[batch])
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def sync(self, value: Any = None) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)

    def predict(self, x: np.ndarray) -> np.ndarray:
        # compiled: chunks of the training batch size, the last one padded, so the graph sees one shape (another
        # would cost a recompile of tens of seconds)
        chunk = self.task.batch_size if self.compiled else 4096
        outputs = []
        with self._torch.no_grad():
            for start in range(0, len(x), chunk):
                part = x[start:start + chunk]
                if self.compiled and len(part) < chunk:
                    part = np.concatenate([part, np.zeros((chunk - len(part), *part.shape[1:]), part.dtype)])
                outputs.append(self.forward(self._to_device(part)).cpu().numpy()[:len(x) - start])
        return np.concatenate(outputs)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        torch = self._torch
        target = torch.from_numpy(common.as_labels(self.task, y)).to(self.device)
        loss = self.loss_fn(self.forward(self._to_device(x)), target)
        grads = torch.autograd.grad(loss, self.params)
        raw = {name: grad.detach().cpu().numpy() for name, grad in zip(self.names, grads, strict=True)}
        return float(loss.item()), common.from_channels_first(self.task, raw)

    def get_weights(self) -> Weights:
        raw = {name: param.detach().cpu().numpy() for name, param in zip(self.names, self.params, strict=True)}
        return common.from_channels_first(self.task, raw)

    def describe(self) -> dict[str, Any]:
        described = {"mode": "eager", "image_memory_format": "channels_last" if self.images else "contiguous (no images)"}
        if self.compiled:
            described.update(mode=f"torch.compile(model, mode={COMPILE_MODE!r}), optimizer step eager",
                             compiler="inductor")
        return described

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
