"""Neuron importance of Li et al. 2024 ("Robustness preserving fine-tuning using neuron importance", ECCV).

    r_i = (1/n_t)·Σ_j |g_i(x_j)|,   g_i(x_j) = ∂L(x_j, y_j)/∂w_i           (Eq. 4)
    r̄_i = r_i / max_{j ∈ S_i} r_j,  S_i the cohort of i                      (Eq. 7)

Shared by `imp-select` (Algorithm 1) and `imp-reg` (Algorithm 2).

- r is computed once, before training, at the weights fine-tuning starts from
  (θ0; for `lpft+imp-reg` the probed head), over the whole downstream train
  split, one sample at a time (`torch.func` vmap(grad), in eval mode, float32
  gradients summed in float64). "Neuron" in the paper is one scalar weight
  (Eqs. 5-8 index weights w_i), so r has the shape of the weights.
- Scored weights: the image classifier, backbone and head
  (`ribench.toolkit.layers.image_parameters`); a CLIP text tower is not scored.
- L is cross-entropy on the split's classes (`estimate=ce`), or the entropy of
  the model's own softmax prediction, which needs no labels (`estimate=entropy`,
  the paper's "unsupervised estimation of r", Table 4 row #6).
- Eq. 7 as printed ("r̄_i = ‖r_i‖_∞, w_i ∈ S_i") lost its numerator; its text and
  Table 4 ("block-wise / layer-wise / global norm") make it r_i divided by the
  largest r in the cohort, so the most important weight of every cohort has
  r̄ = 1. Cohorts (`ribench.toolkit.layers.cohorts`): "block" (a transformer block; the
  stem, the final norm/projection and the head are blocks of their own; the
  paper's default), "layer" (one tensor), "global". A cohort whose importance
  is all zero gets r̄ = 0.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F

from ribench.toolkit.gradients import classification_loss, per_sample_gradient_means
from ribench.toolkit.layers import cohorts, image_parameters

Estimate = Literal["ce", "entropy"]
Cohort = Literal["block", "layer", "global"]


def prediction_entropy(logits: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy of softmax(logits); the labels are ignored (unsupervised importance)."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


LOSSES = {"ce": classification_loss, "entropy": prediction_entropy}


def importance(ctx, estimate: Estimate = "ce", max_samples: int | None = None) -> "OrderedDict[str, torch.Tensor]":
    """r of Eq. 4 for every weight of the image classifier at ctx.model's current weights."""
    if estimate not in LOSSES:
        raise ValueError(f"unknown importance estimate '{estimate}' (choose ce or entropy)")
    params = image_parameters(ctx.model)
    r = per_sample_gradient_means(ctx.model, dict(params), ctx.train, ctx.preprocess, ("abs",),
                                  loss_fn=LOSSES[estimate], device=ctx.device, max_samples=max_samples,
                                  kernels=ctx.kernels)["abs"]
    return OrderedDict((n, r[n]) for n in params)


@torch.no_grad()
def normalise(r: dict, model: torch.nn.Module, cohort: Cohort = "block") -> "OrderedDict[str, torch.Tensor]":
    """r̄ of Eq. 7: each weight's r over the largest r of its cohort."""
    out = OrderedDict()
    for members in cohorts(model, cohort).values():
        members = [n for n in members if n in r]
        if not members:
            continue
        peak = torch.stack([r[n].max() for n in members]).max()
        for n in members:
            out[n] = r[n] / peak if peak > 0 else torch.zeros_like(r[n])
    return OrderedDict((n, out[n]) for n in r if n in out)
