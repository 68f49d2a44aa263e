"""ewc-rib: the "EWC" row of ImageNet-RIB's reference code, an unweighted anchor on every weight.

    L(θ) = L_CE(θ) + (λ/2)·Σ_all ‖θ − θ0‖²,   λ = 2                 (reference code)

The reference code (lib/regularization.py, `ewc_penalty`) adds
Σ (θ − θ0)² over every named parameter of the model to the cross-entropy,
unscaled: no Fisher, and the head included. That is (λ/2)·Σ‖θ − θ0‖² with
λ = 2 over every trained weight with a pretrained counterpart — L2-SP with the
head penalised, not EWC (`ewc` is Kirkpatrick et al.'s, with the Fisher of the
pretraining domain). Kept so the published "EWC" numbers can be reproduced.
The gradient λ(θ − θ0) is added in closed form after backward (or in the fused
step with `--kernels triton`); `value` is the
same penalty for tests and logs.

Recipe: the reference code's own, SGD at `ft`'s chosen lr, selection tuning λ
around the reference code's λ = 2.
"""

from dataclasses import dataclass

from ribench.engine.recipe import Recipe
from ribench.toolkit.penalties import AnchoredL2


class EWCRib(AnchoredL2):
    name = "ewc-rib"
    description = "ImageNet-RIB's 'EWC': cross-entropy + (λ/2)·Σ‖θ − θ0‖² over every weight, head included, no Fisher"
    paper = ('J. Hwang, "ImageNet-RIB Benchmark: Large Pre-Training Datasets Don\'t Guarantee Robustness '
             'after Fine-Tuning" (MIT talk, 2025): its "EWC" row, as its reference code computes it')
    recipe = Recipe(optimizer="sgd", lr=1e-3, tune="lam", centre=2.0, lr_from="ft",
                    source="ImageNet-RIB reference code: SGD; Σ(θ − θ0)² added unscaled, i.e. λ = 2")

    @dataclass
    class Config:
        lam: float = 2.0

    backbone_only = False         # the reference code penalises every weight, the head too
