"""Weight-space penalty helpers the regularizers share: anchored weights and closed-form gradients."""

from __future__ import annotations

import torch

from ribench.engine.context import FitContext
from ribench.engine.method import Regularizer


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


class AnchoredL2(Regularizer):
    """(λ/2)·Σ‖θ − θ0‖² over the trained weights with a pretrained counterpart (the backbone's, or every
    weight's with `backbone_only = False`), its gradient λ(θ − θ0) added in closed form after backward.
    Subclasses give the Config with `lam`; `value` is the same penalty for tests and logs."""

    backbone_only = True

    def __init__(self, config=None):
        super().__init__(config)
        self._terms = None            # (θ, θ0) of the trained weights, once the loop chose them

    def prepare(self, ctx):
        self._terms = None

    def _anchors(self, ctx):
        if self._terms is None:
            _, params, anchors = anchored_parameters(ctx, backbone_only=self.backbone_only)
            self._terms = (params, anchors)
        return self._terms

    def value(self, ctx) -> torch.Tensor:
        params, anchors = self._anchors(ctx)
        return 0.5 * self.config.lam * sum((p - a).pow(2).sum() for p, a in zip(params, anchors))

    @torch.no_grad()
    def after_backward(self, ctx):
        if self.config.lam == 0:
            return
        params, anchors = self._anchors(ctx)
        # ∇ = λ(θ − θ0)
        add_to_gradients(params, torch._foreach_sub(params, anchors), self.config.lam)
