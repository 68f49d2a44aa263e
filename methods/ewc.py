"""ewc: elastic weight consolidation (Kirkpatrick et al., PNAS 2017).

    L(θ) = L_CE(θ) + Σ_i (λ/2)·F_i·(θ_i − θ0_i)²           (paper Eq. 3)

EWC protects the task the network already solves: in the paper, task A while
task B is learned, with F "the diagonal of the Fisher information matrix" of
task A at its solution θ*_A ("we approximate the posterior as a Gaussian
distribution with mean given by the parameters θ*_A and a diagonal precision
given by the diagonal of the Fisher information matrix F"). In fine-tuning the
protected task is the pretraining domain, so by default F is estimated on
`ctx.source`, the pretraining-domain train sample, at θ0. `fisher_data=target`
estimates it on the downstream train split instead (an ablation: it then
measures what the new task needs, not what the old one would lose).
ImageNet-RIB's reference code has no Fisher at all: its "EWC" row is the
unweighted Σ(θ − θ0)² over every weight, head included; that is `ewc-rib`.

F is the diagonal empirical Fisher: the mean over the split's samples of each
sample's squared gradient of the log-likelihood of its own label, computed per
sample with torch.func (not squared batch gradients, which shrink F by roughly
the batch size), over the image backbone (the head is not penalised, as L2-SP).
`fisher_samples` caps the number of samples (0: the whole split).

λ: the paper's is a free scale. With `normalize=mean` (default) F is divided
by its mean over all weights, so λ means the same as L2-SP's λ (an unweighted
penalty is F ≡ 1) and the two rows differ only in where the penalty falls;
λ = 1e-2 as L2-SP. `normalize=none` uses the raw Fisher. The gradient
λF(θ − θ0) is added in closed form after backward (with `--kernels triton`, inside
the fused optimizer step: ribench.engine.weight_penalty).

Recipe: EWC changes the loss, not the optimizer: it trains as `ft` does, with SGD
at `ft`'s chosen lr, and selection tunes λ (no published λ transfers: Eq. 3's λ
"sets how important the old task is compared to the new one"). The grid is
centred on the default λ = 1e-2. Because F is heavy-tailed (on mini-clip and
mini-sup max F / mean F ≈ 400–900), λ = 1e-2 already pulls the weights the
source task depends on back towards θ0 (Σ_t η·λ·F_i over rib-mini's 320 steps at
η = 1e-3: ≈ 3 for the stiffest weights, ≈ 0.003 for the average one); a larger
centre would break SGD's stability bound η·λ·F_i < 2(1 + β) on the stiffest
weights at the top of the grid.
"""

from dataclasses import dataclass
from typing import Literal

from ribench.engine.recipe import Recipe
from ribench.engine.weight_penalty import WeightPenalty
from ribench.toolkit.gradients import per_sample_gradient_means
from ribench.toolkit.penalties import WeightPenaltyRegularizer, anchored_parameters


class EWC(WeightPenaltyRegularizer):
    name = "ewc"
    description = ("EWC: cross-entropy + (λ/2)·Σ F_i(θ_i − θ0_i)², F the empirical Fisher at θ0 "
                   "of the pretraining domain")
    paper = "https://arxiv.org/abs/1612.00796"
    recipe = Recipe(optimizer="sgd", lr=1e-3, tune="lam", centre=1e-2, lr_from="ft",
                    source="Kirkpatrick et al. 2017, Eq. 3: a penalty on ft's loss, trained as ft; "
                           "λ a free scale, tuned around the default 1e-2")

    @dataclass
    class Config:
        lam: float = 1e-2
        normalize: Literal["mean", "none"] = "mean"
        fisher_samples: int = 0          # 0: the whole split F is estimated on
        fisher_data: Literal["source", "target"] = "source"   # the pretraining domain (the protected task)

    def __init__(self, config=None):
        super().__init__(config)
        self.fisher: dict = {}        # F per backbone weight, set by prepare

    def prepare(self, ctx):
        super().prepare(ctx)
        split = ctx.source if self.config.fisher_data == "source" else ctx.train
        backbone = {id(p) for p in ctx.model.backbone_parameters()}
        params = {n: p for n, p in ctx.model.named_parameters() if id(p) in backbone}
        # F_i = E_x[(∂ log p(y|x; θ0)/∂θ_i)²] over the split's samples and their labels
        fisher = per_sample_gradient_means(
            ctx.model, params, split, ctx.preprocess, ("sq",), device=ctx.device, kernels=ctx.kernels,
            max_samples=self.config.fisher_samples or None)["sq"]
        if self.config.normalize == "mean":
            total = sum(f.double().sum() for f in fisher.values())
            count = sum(f.numel() for f in fisher.values())
            scale = float(count / total) if total > 0 else 1.0
            fisher = {n: f * scale for n, f in fisher.items()}
        self.fisher = fisher

    def _terms(self, ctx):
        """(θ, θ0, F) of the trained backbone weights."""
        names, params, anchors = anchored_parameters(ctx)
        keep = [i for i, n in enumerate(names) if n in self.fisher]
        return ([params[i] for i in keep], [anchors[i] for i in keep], [self.fisher[names[i]] for i in keep])

    def build_penalty(self, ctx) -> WeightPenalty:
        return WeightPenalty("quadratic", self.config.lam, *self._terms(ctx))     # ∇ = λ·F·(θ − θ0)
