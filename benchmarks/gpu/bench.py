"""The GPU benchmark of issue 16, one script: `python benchmarks/gpu/bench.py` (≤ 3 minutes on one GPU).

Nothing is downloaded: a ViT-B/16 is built from its timm config with random weights and trained on
synthetic 224-px batches. It measures
- an `ft` step: images/s and MFU (bf16 autocast, fused AdamW; batch 64 and 128; with and without
  torch.compile), the FLOPs of a training image counted by torch's FlopCounterMode (3 × forward);
- the optimizer-side work of l2sp, ewc and imp-reg after backward: the torch path (closed-form
  penalty added to g, then torch.optim's step) against the fused Triton step, in ms and GB/s;
- each method's whole training step through ribench's own loop (`training_step`, its hooks, bf16
  autocast), with --kernels torch and triton, over ft's step with the same optimizer;
- the per-sample gradient statistics (EWC's Fisher / importance) by vmap and by the kernel, in
  ft-step equivalents per image;
- evaluation images/s (bf16, no grad);
- decoding of the real suites' files (224 px from ImageNet-sized JPEGs) in worker processes on every
  core of the host, in images/s against ft's training images/s;
- the sample-statistics kernel against its torch reference at a ViT-B/16 MLP shape.
It writes results.json and results.md to --out. Without CUDA it says so and exits 0; `--tiny` runs
the same code on a small ViT on CPU (kernels under TRITON_INTERPRET=1), which the tests use.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ribench.data.images import Decoding, ImageFiles, ImageGeometry
from ribench.data.splits import TrainSplit
from ribench.engine.compose import resolve_method
from ribench.engine.context import FitContext
from ribench.engine.protocol import Protocol
from ribench.engine.trainer import start_training, training_step
from ribench.engine.weight_penalty import WeightPenalty
from ribench.kernels import resolve_kernels, triton_importable
from ribench.kernels import penalised_step as fused
from ribench.kernels.sample_stats import linear_sample_stats_torch, linear_sample_stats_triton
from ribench.pretrains.base import Classifier
from ribench.toolkit.gradients import per_sample_gradient_means

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}   # dense, TFLOP/s × 1e12


def _model(tiny: bool, device: str) -> torch.nn.Module:
    if tiny:
        return timm.models.VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                                             num_classes=10).to(device)
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=1000).to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int, warmups: int = 1) -> float:
    """Median seconds of `fn` after `warmups` calls (a compiled step recompiles once its optimizer
    state exists, so it needs two)."""
    for _ in range(warmups):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast(
        "cpu", enabled=False)


def training_flops(model, size: int, device: str) -> float:
    x = torch.randn(1, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x).sum()
    return 3.0 * counter.get_total_flops()


def ft_step(model, batch: int, size: int, device: str, repeats: int, compile_model: bool) -> dict:
    net = torch.compile(model) if compile_model else model
    fused_ok = device.startswith("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused_ok)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        with _autocast(device):
            loss = F.cross_entropy(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = _timed(step, device, repeats)
    return {"batch": batch, "compile": compile_model, "step_s": seconds, "images_per_s": batch / seconds}


def penalty_work(model, device: str, repeats: int, kernels: str, compile_step: bool) -> dict:
    """ms of the optimizer-side work of each penalty (after backward): the torch path (foreach penalty,
    then torch.optim's step, fused on CUDA), the same function under torch.compile (issue 16: keep
    the faster of it and the kernel), and the fused Triton step."""
    params = [p for p in model.parameters()]
    anchors = [p.detach().clone() + 1e-3 for p in params]
    fisher = [torch.rand_like(p) for p in params]
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9, fused=device.startswith("cuda"))
    n = sum(p.numel() for p in params)
    flat = {k: torch.randn(n, device=device) for k in ("theta", "grad", "buf", "anchor", "weight")}
    out = {"weights": n}
    for name, penalty, weighted in (("l2sp", "quadratic", False), ("ewc", "quadratic", True),
                                    ("imp-reg", "sign", True)):
        term = WeightPenalty(penalty, 0.1, params, anchors, fisher if weighted else None)

        def torch_path():
            term.add_gradient()
            optimizer.step()

        row = {"torch_ms": 1e3 * _timed(torch_path, device, repeats)}
        if compile_step:
            row["compiled_ms"] = 1e3 * _timed(torch.compile(torch_path), device, repeats, warmups=5)
        if kernels == "triton":
            def fused_path():
                fused.penalised_sgd_triton(flat["theta"], flat["grad"], flat["buf"], flat["anchor"],
                                           flat["weight"] if weighted else None, lr=1e-3, lam=0.1, momentum=0.9,
                                           penalty=penalty, first=False)

            seconds = _timed(fused_path, device, repeats)
            moved = 4 * n * (5 + (1 if weighted else 0))            # θ, g, θ0, buf (+w) read; θ, buf written
            row.update(fused_ms=1e3 * seconds, fused_gb_per_s=moved / seconds / 1e9)
        out[name] = row
    return out


class _ViTClassifier(Classifier):
    """The benchmark's ViT as a ribench classifier (features, head, backbone), so methods run on it."""

    def __init__(self, vit: torch.nn.Module):
        super().__init__()
        self.head = vit.head
        vit.head = torch.nn.Identity()
        self.vit = vit

    def features(self, x):
        return self.vit(x)


def _synthetic_split(samples: int, size: int) -> TrainSplit:
    images = np.random.default_rng(0).integers(0, 256, (samples, size, size, 3), dtype=np.uint8)
    return TrainSplit("synthetic", images, np.arange(samples) % 10, np.arange(10))


def _preprocess(x):
    return x.permute(0, 3, 1, 2).float().div(255)


# (method spec, optimizer): each method under its recipe's optimizer, against ft under the same one
METHOD_STEPS = (("ft", "sgd"), ("l2sp", "sgd"), ("ewc[fisher_samples=8]", "sgd"), ("ewc-rib", "sgd"),
                ("ft", "adamw"), ("imp-reg[samples=8]", "adamw"), ("digrap", "adamw"))


def method_steps(model, size: int, device: str, repeats: int, batch: int, kernels: str) -> dict:
    """Seconds of one training step of each method through ribench's loop, and its ratio to ft's."""
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    mask = torch.arange(10, device=device)
    split = _synthetic_split(8, size)
    rows = {}
    for spec, optimizer in METHOD_STEPS:
        for path in ("torch", kernels) if kernels == "triton" and spec != "ft" else ("torch",):
            classifier = _ViTClassifier(copy.deepcopy(model)).to(device)
            frozen = copy.deepcopy(classifier).requires_grad_(False)
            protocol = Protocol(optimizer=optimizer, lr=1e-5, warmup_steps=0, batch_size=batch,
                                fused=device.startswith("cuda") and path == "torch")
            ctx = FitContext(classifier, frozen, split, split, _preprocess, protocol, seed=0, device=device,
                             kernels=path, total_steps=10 ** 6)
            cls, config = resolve_method(spec)
            method = cls(config)
            opt = start_training(method, ctx)
            seconds = _timed(lambda: training_step(method, ctx, opt, x, y, mask), device, repeats)
            rows.setdefault(f"{spec.split('[')[0]} ({optimizer})", {})[f"{path}_ms"] = 1e3 * seconds
            del classifier, frozen, ctx, opt
    for label, row in rows.items():
        ft = rows[f"ft ({label.split('(')[1]}"]["torch_ms"]
        for key in [k for k in row if k.endswith("_ms")]:
            row[key.replace("_ms", "_over_ft")] = row[key] / ft
    return rows


def sample_statistics(model, size: int, device: str, samples: int, kernels: str) -> dict:
    images = np.random.default_rng(0).integers(0, 256, (samples, size, size, 3), dtype=np.uint8)
    split = TrainSplit("synthetic", images, np.arange(samples) % 10, np.arange(10))

    def preprocess(x):
        return x.permute(0, 3, 1, 2).float().div(255)

    params = dict(model.named_parameters())
    row = {"samples": samples}
    for path in ("torch", kernels) if kernels == "triton" else ("torch",):
        def run():
            per_sample_gradient_means(model, params, split, preprocess, ("sq",), device=device, kernels=path)

        row[f"{path}_s"] = _timed(run, device, 1)
    return row


def evaluation(model, size: int, device: str, repeats: int, batch: int) -> dict:
    x = torch.randn(batch, 3, size, size, device=device)
    model.eval()

    def forward():
        with torch.no_grad(), _autocast(device):
            model(x)

    seconds = _timed(forward, device, repeats)
    model.train()
    return {"batch": batch, "images_per_s": batch / seconds}


def photo_like_jpegs(folder: Path, count: int) -> list[str]:
    """ImageNet-sized (500x375, quality 90) JPEGs of smooth gradients with texture and noise, so they
    compress and decode like photographs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:375, 0:500]
    paths = []
    for k in range(count):
        base = np.stack([np.sin(x / (20 + k) + c) * np.cos(y / (30 + c * k % 17)) for c in range(3)], -1)
        pixels = np.clip(127 + 100 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"image{k:02d}.JPEG"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def decoding(tiny: bool, batch: int) -> dict:
    """Images/s of decoding files to 224-px batches as a split is read on CUDA (worker processes, one per
    core, 4 batches ahead), each file decoded 4 times; the pool's start is included, as each epoch pays it."""
    workers = 1 if tiny else max(1, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as folder:
        files = ImageFiles(photo_like_jpegs(Path(folder), 8 if tiny else 64), ImageGeometry(224, 0.875, "bicubic"))
        order = np.tile(np.arange(len(files)), 4)
        start = time.perf_counter()
        count = sum(len(idx) for idx, _ in files.prefetched(order, batch, Decoding("processes", workers, 4)))
        seconds = time.perf_counter() - start
    return {"workers": workers, "images": count, "images_per_s": count / seconds}


def kernel_against_reference(device: str, tiny: bool, repeats: int, kernels: str) -> dict:
    samples, tokens, n_in, n_out = (4, 17, 64, 96) if tiny else (32, 197, 768, 3072)
    x = torch.randn(samples, tokens, n_in, device=device)
    g = torch.randn(samples, tokens, n_out, device=device)
    row = {"shape": [samples, tokens, n_in, n_out]}
    ref = {"sq": torch.zeros(n_out, n_in, device=device, dtype=torch.float64)}
    row["torch_ms"] = 1e3 * _timed(lambda: linear_sample_stats_torch(x, g, ref), device, repeats)
    if kernels == "triton":
        out = {"sq": torch.zeros(n_out, n_in, device=device)}
        seconds = _timed(lambda: linear_sample_stats_triton(x, g, out), device, repeats)
        row.update(triton_ms=1e3 * seconds, triton_gb_per_s=4 * (x.numel() + g.numel()) / seconds / 1e9)
    return row


def markdown(result: dict) -> str:
    lines = [f"GPU benchmark on {result['device_name']} ({result['model']}); "
             f"{result['flops_per_training_image'] / 1e9:.3g} GFLOP per training image", "",
             "| ft step | images/s | MFU |", "|---|---:|---:|"]
    for row in result["ft"]:
        mfu = "n/a" if row.get("mfu") is None else f"{100 * row['mfu']:.1f}%"
        lines.append(f"| batch {row['batch']}{' compiled' if row['compile'] else ''} | "
                     f"{row['images_per_s']:.0f} | {mfu} |")
    lines += ["", "| penalty work after backward | torch ms | compiled ms | fused ms | fused GB/s |",
              "|---|---:|---:|---:|---:|"]
    for name in ("l2sp", "ewc", "imp-reg"):
        row = result["penalties"][name]
        lines.append(f"| {name} | {row['torch_ms']:.2f} | {row.get('compiled_ms', float('nan')):.2f} | "
                     f"{row.get('fused_ms', float('nan')):.2f} | {row.get('fused_gb_per_s', float('nan')):.0f} |")
    lines += ["", "| training step (ribench's loop) | torch ms | × ft | triton ms | × ft |", "|---|---:|---:|---:|---:|"]
    for label, row in result["methods"].items():
        cells = [f"{row.get(k, float('nan')):.2f}" for k in ("torch_ms", "torch_over_ft", "triton_ms", "triton_over_ft")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    stats = result["sample_statistics"]
    lines += ["", f"Per-sample statistics of {stats['samples']} images: "
              + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in stats.items() if k.endswith("_s")),
              f"Evaluation: {result['evaluation']['images_per_s']:.0f} images/s",
              f"Decoding (224 px from 500x375 JPEGs, {result['decoding']['workers']} worker processes): "
              f"{result['decoding']['images_per_s']:.0f} images/s, {result['decoding']['over_ft_training']:.2f}× "
              "ft's training images/s",
              f"Sample-statistics kernel at {result['kernel']['shape']}: torch {result['kernel']['torch_ms']:.2f} ms"
              + (f", triton {result['kernel']['triton_ms']:.2f} ms ({result['kernel']['triton_gb_per_s']:.0f} GB/s)"
                 if "triton_ms" in result["kernel"] else "")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a small ViT at 32 px: the CPU path the tests run")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: the GPU benchmark measured nothing (docs/performance.md says what is "
              "unmeasured); --tiny --device cpu runs its code on CPU")
        return 0
    device, size = args.device, 32 if args.tiny else 224
    kernels = resolve_kernels("auto" if not args.tiny else ("triton" if triton_importable() else "torch"), device,
                              check=False)
    if kernels == "triton" and not device.startswith("cuda") and os.environ.get("TRITON_INTERPRET") != "1":
        kernels = "torch"
    torch.manual_seed(0)
    model = _model(args.tiny, device)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    flops = training_flops(model, size, device)
    batches = (4, 8) if args.tiny else (64, 128)
    ft = []
    for compile_model in (False,) if args.no_compile or args.tiny else (False, True):
        for batch in batches:
            row = ft_step(model, batch, size, device, args.repeats, compile_model)
            row["mfu"] = None if peak is None else row["images_per_s"] * flops / peak
            ft.append(row)
    result = {
        "device_name": name, "model": "tiny ViT (32 px)" if args.tiny else "ViT-B/16 (224 px)", "kernels": kernels,
        "flops_per_training_image": flops, "peak_bf16_flops": peak, "ft": ft,
        "penalties": penalty_work(model, device, args.repeats, kernels, not (args.no_compile or args.tiny)),
        "methods": method_steps(model, size, device, args.repeats, batches[0], kernels),
        "sample_statistics": sample_statistics(model, size, device, 8 if args.tiny else 64, kernels),
        "evaluation": evaluation(model, size, device, args.repeats, 16 if args.tiny else 512),
        "kernel": kernel_against_reference(device, args.tiny, args.repeats, kernels),
        "decoding": decoding(args.tiny, batches[-1]),
    }
    ft_image_s = min(r["step_s"] / r["batch"] for r in ft)
    result["decoding"]["over_ft_training"] = result["decoding"]["images_per_s"] * ft_image_s
    for key in [k for k in result["sample_statistics"] if k.endswith("_s")]:
        per_image = result["sample_statistics"][key] / result["sample_statistics"]["samples"]
        result["sample_statistics"][key.replace("_s", "_in_ft_images")] = per_image / ft_image_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
