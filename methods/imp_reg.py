"""imp-reg: importance-guided regularization (Li et al., ECCV 2024, Algorithm 2).

    r_i = (1/n_t)·Σ_j |g_i(x_j)|                  (Eq. 4, once, before training)
    r̄_i = r_i / max_{j ∈ S_i} r_j                 (Eq. 7, S_i = i's transformer block)
    R(W, W0) = Σ_i r̄_i·|w_i − w0_i|               (Eq. 8)
    L_total = L_sup + λ·R,  λ = 0.01               (Eq. 1, Alg. 2 line 5; Sec. 4.4)

The most task-important weights are held near their starting values while the
rest move freely. A regularizer: `imp-reg` is `ft+imp-reg`; `flyp+imp-reg`
uses FLYP's contrastive loss as L_sup and `lpft+imp-reg` starts from the probe,
as the paper stacks it on FT and FLYP; `wiseft[base=imp-reg]` interpolates its
result with θ0 (the paper's "WiSE-FT + imp.-guided reg.").

Choices where the paper leaves room:
- Which weights: Algorithm 2 regularises every parameter W being fine-tuned
  ("importance-guided fine-tuning for *all* neurons in the network"), so the
  penalty covers every trained weight of the image classifier, backbone *and*
  head (ribench's heads have pretrained values: CLIP's zero-shot head, the
  supervised classifier restricted to the suite's classes). Unlike `l2sp`, the
  head is penalised. Under `flyp` the head is not trained (it is rebuilt from
  the text tower) and the text tower is not penalised: r is defined through
  the image classifier, and the paper does not say it regularises the text
  encoder.
- W0 (the anchor, and the point where r is measured) is the weights fine-tuning
  starts from — the paper's "W ← W0" initialisation: θ0 for `ft` and `flyp`, θ0
  with the probed head for `lpft`.
- r, r̄, cohorts and the label-free estimate: see `ribench.methods._importance`.
  λ = 0.01, the paper's fixed value (chosen in Fig. 5 on FLYP + ImageNet).
- Gradient: R is not differentiable at w = w0; ribench adds the subgradient
  λ·r̄·sign(θ − θ0) (0 at θ = θ0, as autograd of |·| gives) in closed form after
  backward with fused foreach ops (with `--kernels triton`, inside the fused
  optimizer step); `value` gives λR for tests and logs.

Ablations (paper Table 4): `cohort=layer|global`, `reverse=true` (1 − r̄, row #5),
`estimate=entropy` (r from the prediction entropy, no labels, row #6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ribench.toolkit.layers import image_parameters
from ribench.engine.recipe import Recipe
from ribench.engine.weight_penalty import WeightPenalty
from ribench.toolkit.penalties import WeightPenaltyRegularizer
from ribench.methods._importance import Cohort, Estimate, importance, normalise


class ImportanceReg(WeightPenaltyRegularizer):
    name = "imp-reg"
    description = "importance-guided regularization: + λ·Σ r̄|θ − θ0|, r̄ block-normalised importance (regularizer)"
    paper = "https://ecva.net/papers/eccv_2024/papers_ECCV/html/8486_ECCV_2024_paper.php"
    recipe = Recipe(optimizer="adamw", lr=1e-5, weight_decay=0.1, source="Li et al. 2024 (ECCV), Sec. 5: AdamW, lr 1e-5, wd 0.1, as FLYP")

    @dataclass
    class Config:
        lam: float = 0.01
        cohort: Cohort = "block"       # normalisation set S_i of Eq. 7
        reverse: bool = False          # penalise with 1 − r̄ (ablation)
        estimate: Estimate = "ce"      # r from cross-entropy, or label-free prediction entropy
        samples: int = 0               # 0: r over the whole downstream train split

    def __init__(self, config=None):
        super().__init__(config)
        self.rbar: dict = {}          # r̄ per image-classifier weight (Eq. 7), set by prepare
        self.start: dict = {}         # W0: the weights fine-tuning starts from

    def prepare(self, ctx):
        super().prepare(ctx)
        r = importance(ctx, self.config.estimate, self.config.samples or None)      # Eq. 4
        rbar = normalise(r, ctx.model, self.config.cohort)                          # Eq. 7
        if self.config.reverse:
            rbar = {n: 1.0 - v for n, v in rbar.items()}
        frozen = dict(ctx.pretrained.named_parameters())
        start = {}
        for name, p in image_parameters(ctx.model).items():
            same = name in frozen and torch.equal(frozen[name], p)
            start[name] = frozen[name].detach() if same else p.detach().clone()     # W0: where training starts
        self.rbar, self.start = rbar, start

    def _terms(self, ctx):
        """(trained weights θ, their W0, their r̄)."""
        rbar, start = self.rbar, self.start
        names = [n for n, p in image_parameters(ctx.model).items() if p.requires_grad and n in rbar]
        params = dict(ctx.model.named_parameters())
        return [params[n] for n in names], [start[n] for n in names], [rbar[n] for n in names]

    def build_penalty(self, ctx) -> WeightPenalty:
        return WeightPenalty("sign", self.config.lam, *self._terms(ctx))     # ∇(λR) = λ·r̄·sign(θ − θ0), Eq. 8
