"""Weight-space penalty helpers the regularizers share: anchored weights and closed-form gradients."""

from __future__ import annotations

import torch

from ribench.engine.context import FitContext


def anchored_parameters(ctx: FitContext, backbone_only: bool = True):
    """(names, trainable weights θ, their pretrained values θ0) for weight-space penalties.

    Pairs are matched by name, so weights with no pretrained counterpart (adapters,
    prompts) are not anchored.
    """
    model, frozen = ctx.model, dict(ctx.pretrained.named_parameters())
    allowed = {id(p) for p in model.backbone_parameters()} if backbone_only else None
    names, params, anchors = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or name not in frozen or (allowed is not None and id(p) not in allowed):
            continue
        names.append(name)
        params.append(p)
        anchors.append(frozen[name].detach())
    return names, params, anchors


@torch.no_grad()
def add_to_gradients(params: list, terms: list, alpha: float) -> None:
    """p.grad += alpha·term for each weight (a closed-form penalty gradient), one fused foreach op.

    A weight that got no gradient from the loss (e.g. untouched by this batch) starts at zero.
    """
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    torch._foreach_add_([p.grad for p in params], terms, alpha=alpha)
