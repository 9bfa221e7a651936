"""Native PyTorch training loop, no xfbench code: `--mode eager`, or `--mode compile` for the model through
`torch.compile(model)` (mode "default", TorchInductor), as the PyTorch tutorial writes it.

Idiomatic `nn.Sequential` + `F.cross_entropy` + `torch.optim.Adam`, `zero_grad(set_to_none=True)`.
Canonical numpy weights are converted to torch layouts (Linear (out, in), Conv OIHW, and the CNN's
final dense rows permuted from HWC to CHW flatten order) so every framework computes the same function.
The defaults of `build()` are the measured-fastest choices on CPU (see README.md).

The transformer is written as nanoGPT and PyTorch's tutorials write one: `nn.Embedding`s for tokens and positions,
pre-norm blocks with `nn.LayerNorm`, a fused query-key-value `nn.Linear` and `F.scaled_dot_product_attention(...,
is_causal=True)`, an `nn.GELU(approximate="tanh")` MLP; `torch.optim.AdamW(fused=True)`, `clip_grad_norm_` and a
`LambdaLR` warm-up-cosine. The ResNet as torchvision writes a BasicBlock: conv-`nn.BatchNorm2d`-relu twice, a 1x1
conv + BatchNorm shortcut where the width changes, `nn.AdaptiveAvgPool2d(1)`, channels_last. Both start from
PyTorch's own initializers.
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


def transformer_model() -> Any:
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    width, heads = common.WIDTH, common.HEADS

    class CausalSelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, length, _ = x.shape
            q, k, v = (part.view(batch, length, heads, width // heads).transpose(1, 2)
                       for part in self.qkv(x).split(width, dim=2))
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(out.transpose(1, 2).reshape(batch, length, width))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.attn, self.ln2 = nn.LayerNorm(width), CausalSelfAttention(), nn.LayerNorm(width)
            self.mlp = nn.Sequential(nn.Linear(width, common.MLP_RATIO * width), nn.GELU(approximate="tanh"),
                                     nn.Linear(common.MLP_RATIO * width, width))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens, self.positions = nn.Embedding(common.VOCAB, width), nn.Embedding(common.SEQ, width)
            self.blocks = nn.Sequential(*(Block() for _ in range(common.BLOCKS)))
            self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, common.VOCAB)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            positions = torch.arange(ids.shape[1], device=ids.device)
            return self.head(self.ln(self.blocks(self.tokens(ids) + self.positions(positions))))

    return GPT()


def resnet_model() -> Any:
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, inputs: int, outputs: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, outputs, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(outputs)
            self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(outputs)
            self.shortcut = nn.Identity() if inputs == outputs else nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, bias=False), nn.BatchNorm2d(outputs))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    filters = common.FILTERS
    return nn.Sequential(nn.Conv2d(1, filters, 3, padding=1, bias=False), nn.BatchNorm2d(filters), nn.ReLU(),
                         BasicBlock(filters, filters), nn.MaxPool2d(2), BasicBlock(filters, 2 * filters),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * filters, common.N_CLASSES))


def build_modern(workload: str, seed: int, compile: bool = False) -> tuple[Callable, Callable]:
    """The transformer or the ResNet, its optimizer, device data and the `step(i)` / `sync(loss)` pair."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    torch.manual_seed(seed)
    transformer = workload == "transformer"
    fmt = torch.contiguous_format if transformer else torch.channels_last
    model = (transformer_model() if transformer else resnet_model()).to(memory_format=fmt)
    if transformer:
        c = common.ADAMW
        opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"],
                                weight_decay=c["weight_decay"], fused=True)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda done: common.schedule_factor(done + 1))
    else:
        opt = torch.optim.Adam(model.parameters(), lr=common.RESNET_LR, fused=True)
    forward = torch.compile(model) if compile else model
    x_np, y_np = common.make_data(workload, seed)
    x_all = torch.from_numpy(x_np if transformer else x_np.transpose(0, 3, 1, 2).copy())
    y_all = torch.from_numpy(y_np).long()
    perm = torch.from_numpy(common.epoch_permutation(seed, workload=workload))
    xs = [x.contiguous(memory_format=fmt) if not transformer else x.contiguous()
          for x in x_all[perm].chunk(common.BATCHES_PER_EPOCH)]
    ys = [y.contiguous() for y in y_all[perm].chunk(common.BATCHES_PER_EPOCH)]
    n = len(xs)

    def step(i: int) -> Any:
        logits = forward(xs[i % n])
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), ys[i % n].view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if transformer:
            torch.nn.utils.clip_grad_norm_(model.parameters(), common.ADAMW["clip"])
        opt.step()
        if transformer:
            schedule.step()
        return loss

    return step, lambda loss: loss.item()


def build(workload: str, seed: int, channels_last: bool = True, adam: str = "fused", compile: bool = False,
          ) -> tuple[Callable, Callable]:
    """Model, optimizer, device data and the `step(i)` / `sync(loss)` pair. adam: 'loop', 'foreach' or 'fused'."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    if workload in ("transformer", "resnet"):
        return build_modern(workload, seed, compile)

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
