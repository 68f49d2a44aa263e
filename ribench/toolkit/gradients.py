"""Gradient statistics over a train split: per-sample (torch.func) and per-batch.

EWC's Fisher (mean of squared per-sample gradients) and importance scores
(mean of absolute per-sample gradients) need each sample's own gradient, not
the gradient of a batch mean. `torch.func.vmap(grad(...))` computes them in
chunks sized to a memory budget (a quarter of the free memory on CUDA). With
`kernels="triton"`, the weights of linear layers and of a patch embedding get
theirs from one batched backward instead: their inputs and output gradients
are captured by hooks and `ribench.kernels.sample_stats` reduces G_n = g_nᵀ x_n
on chip; the rest (norms, tokens, attention's fused in-projection) keep vmap.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from ribench.data.splits import TrainSplit
from ribench.engine.trainer import position_labels
from ribench.kernels.sample_stats import linear_sample_stats_triton

CPU_MEMORY_BUDGET = 512e6          # bytes of per-sample gradients per vmap call on CPU
CUDA_MEMORY_FRACTION = 0.25        # of the device's free memory

STATISTICS = ("sq", "abs", "sum")   # Σ g², Σ |g|, Σ g over samples


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets)


def per_sample_gradient_means(
    model: torch.nn.Module,
    params: dict[str, torch.Tensor],
    split: TrainSplit,
    preprocess: Callable,
    statistics: Sequence[str] = ("sq",),
    loss_fn: Callable = classification_loss,
    device: str = "cpu",
    memory_budget: float | None = None,
    max_samples: int | None = None,
    kernels: str = "torch",
) -> dict[str, dict[str, torch.Tensor]]:
    """{statistic: {param name: mean over samples}} of each sample's gradient of `loss_fn`.

    `params` are the (named) parameters to differentiate; every other weight and
    buffer is held fixed. The model is evaluated in eval mode. `loss_fn` must be a
    mean of per-sample terms (cross-entropy and the entropy estimate are).
    """
    unknown = set(statistics) - set(STATISTICS)
    if unknown:
        raise ValueError(f"unknown gradient statistic(s) {sorted(unknown)}")
    was_training = model.training
    model.eval()
    fixed = {n: t.detach() for n, t in list(model.named_parameters()) + list(model.named_buffers())
             if n not in params}
    trainable = {n: p.detach() for n, p in params.items()}
    mask = torch.as_tensor(split.class_mask, device=device)
    targets = torch.from_numpy(position_labels(split.labels, split.class_mask))

    budget = memory_budget if memory_budget is not None else sample_memory_budget(device)
    totals = {s: {n: torch.zeros_like(p, dtype=torch.float64) for n, p in trainable.items()} for s in statistics}
    n = len(split) if max_samples is None else min(len(split), max_samples)
    order = torch.arange(n).numpy()
    layers = {}
    if kernels == "triton" and set(statistics) <= {"sq", "abs"}:
        layers = _hookable_layers(model, trainable, split, preprocess, device)
        _linear_statistics(model, layers, split, preprocess, device, targets, mask, loss_fn, totals, order, budget)
    on_layers = {name for names, _ in layers.values() for name in names if name is not None}
    rest = {name: p for name, p in trainable.items() if name not in on_layers}
    if rest:
        held = {**fixed, **{name: trainable[name] for name in on_layers}}

        def sample_loss(weights, x, y):
            logits = functional_call(model, {**held, **weights}, (x.unsqueeze(0),))[:, mask].float()
            return loss_fn(logits, y.unsqueeze(0))

        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
        size = sum(p.numel() for p in rest.values())
        chunk = max(1, int(budget // (4 * size * (1 + len(statistics)))))
        _vmap_statistics(per_sample, rest, split, preprocess, device, targets, totals, order, chunk)
    model.train(was_training)
    return {s: {name: (t / n).to(trainable[name].dtype) for name, t in per.items()} for s, per in totals.items()}


def sample_memory_budget(device: str) -> float:
    """Bytes a chunk of per-sample gradients may take: a fixed 512 MB on CPU, a quarter of what is
    free on a CUDA device (512 MB was one ViT-B/16 sample per call on an H200)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return max(CPU_MEMORY_BUDGET, CUDA_MEMORY_FRACTION * free)
    return CPU_MEMORY_BUDGET


def _vmap_statistics(per_sample, trainable, split, preprocess, device, targets, totals, order, chunk) -> None:
    for x, _, idx in split.model_inputs(chunk, preprocess, device, order):
        y = targets[idx].to(device)
        grads = per_sample(trainable, x, y)
        for name, g in grads.items():
            _add_sample_statistics(totals, name, g)


def _add_sample_statistics(totals: dict, name: str, per_sample_grads: torch.Tensor) -> None:
    """Σ_n g_n², Σ_n |g_n|, Σ_n g_n (those `totals` asks for) of one weight's per-sample gradients, in float64."""
    g = per_sample_grads.double()
    if "sq" in totals:
        totals["sq"][name] += g.pow(2).sum(0)
    if "abs" in totals:
        totals["abs"][name] += g.abs().sum(0)
    if "sum" in totals:
        totals["sum"][name] += g.sum(0)


def _patchify(module: torch.nn.Module) -> bool:
    """A convolution that is a linear map of non-overlapping patches (a ViT's patch embedding)."""
    return (isinstance(module, torch.nn.Conv2d) and module.stride == module.kernel_size and module.groups == 1
            and module.dilation == (1, 1) and module.padding in ((0, 0), "valid"))


def _hookable_layers(model, trainable, split, preprocess, device) -> dict:
    """{module: ((weight name, bias name or None), activation floats per sample)} of the linear layers (and patch embeddings) whose
    weights are differentiated, that run once per forward on batch-first inputs: checked by two probe
    forwards of 2 and 3 samples (a layer called through its weight alone, as attention's output
    projection is, never fires and stays with vmap)."""
    names = {id(p): n for n, p in model.named_parameters()}
    candidates = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) or _patchify(module):
            weight = names.get(id(module.weight))
            if weight in trainable:
                bias = names.get(id(module.bias)) if module.bias is not None else None
                candidates[module] = (weight, bias if bias in trainable else None)
    shapes = {m: [] for m in candidates}
    handles = [m.register_forward_hook(lambda m, inputs, out: shapes[m].append((tuple(inputs[0].shape),
                                                                                 tuple(out.shape))))
               for m in candidates]
    try:
        with torch.no_grad():
            for size in (2, 3):
                for x, _, _ in split.model_inputs(size, preprocess, device, torch.arange(size).numpy()):
                    model(x)
    finally:
        for handle in handles:
            handle.remove()
    layers = {}
    for m, pair in candidates.items():
        if len(shapes[m]) == 2:
            (in2, out2), (in3, out3) = shapes[m]
            if in2[0] == 2 and in3[0] == 3 and in2[1:] == in3[1:] and out2[1:] == out3[1:]:
                layers[m] = (pair, math.prod(in2[1:]) + math.prod(out2[1:]))
    return layers


def _linear_statistics(model, layers, split, preprocess, device, targets, mask, loss_fn, totals, order,
                       budget) -> None:
    """Σ_n G_n² / Σ_n |G_n| of the hooked layers' weights (and of their biases, Σ_t g_n), from one
    batched backward of Σ_n L_n per chunk; per-sample gradients are never stored."""
    if not layers:
        return
    captured: dict = {}

    def keep(module, inputs, out):
        x = inputs[0].detach()
        if isinstance(module, torch.nn.Conv2d):      # patches as tokens: N × L × (C·kh·kw)
            x = F.unfold(x, module.kernel_size, stride=module.stride).transpose(1, 2)
        out.register_hook(lambda g: captured.__setitem__(module, (x, g.detach())))

    # memory per sample: each layer's input and output, captured, as gradient, and as autograd keeps it
    chunk = max(1, int(budget // (4 * 3 * sum(floats for _, floats in layers.values()))))
    handles = [m.register_forward_hook(keep) for m in layers]
    try:
        for images, _, idx in split.model_inputs(chunk, preprocess, device, order):
            y = targets[idx].to(device)
            images = images.detach().requires_grad_(True)
            captured.clear()
            with torch.enable_grad():
                logits = model(images)[:, mask].float()
                loss = loss_fn(logits, y) * len(y)        # Σ_n L_n: each g_n is sample n's own
                torch.autograd.grad(loss, images)
            for module, ((weight, bias), _) in layers.items():
                x, g = captured[module]
                if isinstance(module, torch.nn.Conv2d):
                    g = g.flatten(2).transpose(1, 2)
                x = x.reshape(x.shape[0], -1, x.shape[-1])
                g = g.reshape(g.shape[0], -1, g.shape[-1])
                sums = {s: torch.zeros(g.shape[-1], x.shape[-1], device=x.device) for s in totals}
                linear_sample_stats_triton(x, g, sums)
                for s, t in sums.items():
                    totals[s][weight] += t.double().view_as(totals[s][weight])
                if bias is not None:                       # a bias's per-sample gradient is Σ_t g_n,t
                    _add_sample_statistics(totals, bias, g.double().sum(1))
    finally:
        for handle in handles:
            handle.remove()
