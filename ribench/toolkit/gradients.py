"""Gradient statistics over a train split: per-sample (torch.func) and per-batch.

EWC's Fisher (mean of squared per-sample gradients) and, later, importance
scores (mean of absolute per-sample gradients) need each sample's own
gradient, not the gradient of a batch mean; `torch.func.vmap(grad(...))`
computes them in chunks sized to a memory budget.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ribench.data.splits import TrainSplit
from ribench.engine.trainer import position_labels

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
    memory_budget: float = 512e6,
    max_samples: int | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """{statistic: {param name: mean over samples}} of each sample's gradient of `loss_fn`.

    `params` are the (named) parameters to differentiate; every other weight and
    buffer is held fixed. The model is evaluated in eval mode.
    """
    from torch.func import functional_call, grad, vmap

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

    def sample_loss(weights, x, y):
        logits = functional_call(model, {**fixed, **weights}, (x.unsqueeze(0),))[:, mask].float()
        return loss_fn(logits, y.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    size = sum(p.numel() for p in trainable.values())
    chunk = max(1, int(memory_budget // (4 * size * (1 + len(statistics)))))
    totals = {s: {n: torch.zeros_like(p, dtype=torch.float64) for n, p in trainable.items()} for s in statistics}
    n = len(split) if max_samples is None else min(len(split), max_samples)
    for x, _, idx in split.model_inputs(chunk, preprocess, device, torch.arange(n).numpy()):
        y = targets[idx].to(device)
        grads = per_sample(trainable, x, y)
        for name, g in grads.items():
            g = g.double()
            if "sq" in totals:
                totals["sq"][name] += g.pow(2).sum(0)
            if "abs" in totals:
                totals["abs"][name] += g.abs().sum(0)
            if "sum" in totals:
                totals["sum"][name] += g.sum(0)
    model.train(was_training)
    return {s: {name: (t / n).to(trainable[name].dtype) for name, t in per.items()} for s, per in totals.items()}
