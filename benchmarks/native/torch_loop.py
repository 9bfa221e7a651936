"""Native PyTorch training loop, no xfbench code: `--mode eager`, or `--mode compile` for the model through
`torch.compile(model)` (mode "default", TorchInductor), as the PyTorch tutorial writes it.

Idiomatic `nn.Sequential` + `F.cross_entropy` + `torch.optim.Adam`, `zero_grad(set_to_none=True)`.
Canonical numpy weights are converted to torch layouts (Linear (out, in), Conv OIHW, and the CNN's
final dense rows permuted from HWC to CHW flatten order) so every framework computes the same function.
The defaults of `build()` are the measured-fastest choices on CPU (see README.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import common


def make_model(workload: str, seed: int) -> Any:
    """nn.Sequential with the canonical numpy weights loaded."""
    import torch
    from torch import nn

    p = common.make_params(workload, seed)
    if workload == "mlp":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        weights = [p["w1"].T, p["b1"], p["w2"].T, p["b2"], p["w3"].T, p["b3"]]
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(5 * 5 * 64, 10),
        )
        dense_chw = p["w"].reshape(5, 5, 64, 10).transpose(2, 0, 1, 3).reshape(-1, 10)
        oihw = (3, 2, 0, 1)
        weights = [p["c1"].transpose(oihw), p["cb1"], p["c2"].transpose(oihw), p["cb2"], dense_chw.T, p["b"]]
    with torch.no_grad():
        for param, w in zip(model.parameters(), weights, strict=True):
            param.copy_(torch.from_numpy(w.copy()))
    return model


def build(workload: str, seed: int, channels_last: bool = True, adam: str = "fused", compile: bool = False,
          ) -> tuple[Callable, Callable]:
    """Model, optimizer, device data and the `step(i)` / `sync(loss)` pair. adam: 'loop', 'foreach' or 'fused'."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    fmt = torch.channels_last if channels_last and workload == "cnn" else torch.contiguous_format
    model = make_model(workload, seed).to(memory_format=fmt)
    flags = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[adam]
    betas = (common.BETA1, common.BETA2)
    opt = torch.optim.Adam(model.parameters(), lr=common.LR, betas=betas, eps=common.EPS, **flags)

    forward = torch.compile(model) if compile else model

    # Data goes to the device once; one epoch's 40 batches are gathered once, before timing.
    x_np, y_np = common.make_data(workload, seed)
    x_all = torch.from_numpy(x_np)
    if workload == "cnn":
        x_all = x_all.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    y_all = torch.from_numpy(y_np).long()
    perm = torch.from_numpy(common.epoch_permutation(seed))
    xs = [x.contiguous(memory_format=fmt) for x in x_all[perm].chunk(common.BATCHES_PER_EPOCH)]
    ys = [y.contiguous() for y in y_all[perm].chunk(common.BATCHES_PER_EPOCH)]
    n = len(xs)

    def step(i: int) -> Any:
        loss = F.cross_entropy(forward(xs[i % n]), ys[i % n])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def sync(loss: Any) -> float:
        return loss.item()

    return step, sync


def main() -> None:
    args: argparse.Namespace = common.parse_args("torch")
    common.set_thread_env(args.threads)
    with common.quiet_stderr():
        import torch
    torch.set_num_threads(args.threads)
    mode = "compile" if args.mode == "compile" else "eager"
    common.run("torch", mode, args, lambda workload: build(workload, args.seed, compile=mode == "compile"),
               {"torch": torch.__version__})


if __name__ == "__main__":
    main()
