"""Weight-space penalty helpers the regularizers share: anchored weights and closed-form gradients."""

from __future__ import annotations

import torch

from ribench.engine.context import FitContext
from ribench.engine.method import Regularizer
from ribench.engine.weight_penalty import WeightPenalty


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


class WeightPenaltyRegularizer(Regularizer):
    """A regularizer whose gradient is a closed-form `WeightPenalty`, added after backward (or folded
    into the loop's fused optimizer step). Subclasses build it once the loop has chosen what trains
    (`build_penalty`); `value` is the same penalty, for tests and logs."""

    def __init__(self, config=None):
        super().__init__(config)
        self._penalty: WeightPenalty | None = None

    def prepare(self, ctx):
        self._penalty = None

    def build_penalty(self, ctx) -> WeightPenalty:
        raise NotImplementedError

    def value(self, ctx) -> torch.Tensor:
        return self.build_penalty(ctx).value()

    def weight_penalty(self, ctx) -> WeightPenalty | None:
        if self.config.lam == 0:
            return None
        if self._penalty is None:
            self._penalty = self.build_penalty(ctx)
        return self._penalty

    def after_backward(self, ctx):
        penalty = self.weight_penalty(ctx)
        if penalty is not None:
            penalty.add_gradient()


class AnchoredL2(WeightPenaltyRegularizer):
    """(λ/2)·Σ‖θ − θ0‖² over the trained weights with a pretrained counterpart (the backbone's, or every
    weight's with `backbone_only = False`); its gradient is λ(θ − θ0). Subclasses give the Config with `lam`."""

    backbone_only = True

    def build_penalty(self, ctx) -> WeightPenalty:
        _, params, anchors = anchored_parameters(ctx, backbone_only=self.backbone_only)
        return WeightPenalty("quadratic", self.config.lam, params, anchors)      # ∇ = λ(θ − θ0)
