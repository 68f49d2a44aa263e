"""ewc: elastic weight consolidation (Kirkpatrick et al., PNAS 2017).

    L(θ) = L_CE(θ) + Σ_i (λ/2)·F_i·(θ_i − θ0_i)²           (paper Eq. 3)

F is the diagonal empirical Fisher at θ0: the mean over the downstream train
split of each sample's squared gradient of the log-likelihood of its label,
computed per sample with torch.func (not squared batch gradients, which
shrink F by roughly the batch size). As ImageNet-RIB does, F is estimated
on the downstream train split, the only data a method may see.

λ: the paper's is a free scale. With `normalize=mean` (default) F is divided
by its mean over all weights, so λ means the same as L2-SP's λ (an unweighted
penalty is F ≡ 1) and the two rows differ only in where the penalty falls;
λ = 1e-2 as L2-SP. `normalize=none` uses the raw Fisher. The gradient
λF(θ − θ0) is added in closed form after backward.
"""

from dataclasses import dataclass
from typing import Literal

import torch

from ribench.toolkit.gradients import per_sample_gradient_means
from ribench.engine.method import Regularizer
from ribench.toolkit.penalties import add_to_gradients, anchored_parameters


class EWC(Regularizer):
    name = "ewc"
    description = "EWC: cross-entropy + (λ/2)·Σ F_i(θ_i − θ0_i)², F the empirical Fisher at θ0"
    paper = "https://arxiv.org/abs/1612.00796"

    @dataclass
    class Config:
        lam: float = 1e-2
        normalize: Literal["mean", "none"] = "mean"
        fisher_samples: int = 0          # 0: the whole downstream train split

    def __init__(self, config=None):
        super().__init__(config)
        self.fisher: dict = {}        # F per backbone weight, set by prepare
        self._terms = None            # (θ, θ0, F) of the trained weights, once the loop chose them

    def prepare(self, ctx):
        backbone = {id(p) for p in ctx.model.backbone_parameters()}
        params = {n: p for n, p in ctx.model.named_parameters() if id(p) in backbone}
        fisher = per_sample_gradient_means(
            ctx.model, params, ctx.train, ctx.preprocess, ("sq",), device=ctx.device,
            max_samples=self.config.fisher_samples or None)["sq"]
        if self.config.normalize == "mean":
            total = sum(f.double().sum() for f in fisher.values())
            count = sum(f.numel() for f in fisher.values())
            scale = float(count / total) if total > 0 else 1.0
            fisher = {n: f * scale for n, f in fisher.items()}
        self.fisher, self._terms = fisher, None

    def _anchors(self, ctx):
        if self._terms is None:
            names, params, anchors = anchored_parameters(ctx)
            fisher = self.fisher
            keep = [i for i, n in enumerate(names) if n in fisher]
            self._terms = ([params[i] for i in keep], [anchors[i] for i in keep],
                           [fisher[names[i]] for i in keep])
        return self._terms

    def value(self, ctx) -> torch.Tensor:
        params, anchors, fisher = self._anchors(ctx)
        return 0.5 * self.config.lam * sum((f * (p - a).pow(2)).sum() for p, a, f in zip(params, anchors, fisher))

    @torch.no_grad()
    def after_backward(self, ctx):
        if self.config.lam == 0:
            return
        params, anchors, fisher = self._anchors(ctx)
        # ∇ = λ·F·(θ − θ0)
        diff = torch._foreach_sub(params, anchors)
        torch._foreach_mul_(diff, fisher)
        add_to_gradients(params, diff, self.config.lam)
