"""ewc-rib: the "EWC" row of ImageNet-RIB's reference code, an unweighted anchor on every weight.

    L(θ) = L_CE(θ) + (λ/2)·Σ_all ‖θ − θ0‖²,   λ = 2                 (reference code)

The reference code (lib/regularization.py, `ewc_penalty`) adds
Σ (θ − θ0)² over every named parameter of the model to the cross-entropy,
unscaled: no Fisher, and the head included. That is (λ/2)·Σ‖θ − θ0‖² with
λ = 2 over every trained weight with a pretrained counterpart — L2-SP with the
head penalised, not EWC (`ewc` is Kirkpatrick et al.'s, with the Fisher of the
pretraining domain). Kept so the published "EWC" numbers can be reproduced.
The gradient λ(θ − θ0) is added in closed form after backward; `value` is the
same penalty for tests and logs.

Recipe: the reference code's own, SGD at `ft`'s chosen lr, selection tuning λ
around the reference code's λ = 2.
"""

from dataclasses import dataclass

import torch

from ribench.engine.method import Regularizer
from ribench.engine.recipe import Recipe
from ribench.toolkit.penalties import add_to_gradients, anchored_parameters


class EWCRib(Regularizer):
    name = "ewc-rib"
    description = "ImageNet-RIB's 'EWC': cross-entropy + (λ/2)·Σ‖θ − θ0‖² over every weight, head included, no Fisher"
    paper = ('J. Hwang, "ImageNet-RIB Benchmark: Large Pre-Training Datasets Don\'t Guarantee Robustness '
             'after Fine-Tuning" (MIT talk, 2025): its "EWC" row, as its reference code computes it')
    recipe = Recipe(optimizer="sgd", lr=1e-3, tune="lam", centre=2.0, lr_from="ft",
                    source="ImageNet-RIB reference code: SGD; Σ(θ − θ0)² added unscaled, i.e. λ = 2")

    @dataclass
    class Config:
        lam: float = 2.0

    def __init__(self, config=None):
        super().__init__(config)
        self._terms = None            # (θ, θ0) of every trained weight, once the loop chose them

    def prepare(self, ctx):
        self._terms = None

    def _anchors(self, ctx):
        if self._terms is None:
            _, params, anchors = anchored_parameters(ctx, backbone_only=False)     # the head too
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
