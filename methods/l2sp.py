"""l2sp: explicit inductive bias towards the starting point (Li, Grandvalet & Davoine, ICML 2018).

    L(θ) = L_CE(θ) + (λ/2)·Σ_backbone ‖θ − θ0‖²          (paper Eq. 3, Ω = L2-SP)

Over the image backbone only; the (new) head is left unpenalised, as in the
paper, whose β‖θ_head‖² term is plain weight decay and comes from the
protocol. λ = 1e-2 is the paper-style default; λ = 2 reproduces the
ImageNet-RIB reference code's "EWC" row, which is this penalty unweighted.
The gradient λ(θ − θ0) is added in closed form after backward (one fused
foreach op instead of a graph; with `--kernels triton`, inside the fused optimizer step); `value` is the same penalty for tests and logs.
Combines with any base method: `flyp+l2sp`, `lpft+l2sp`.
"""

from dataclasses import dataclass

from ribench.engine.recipe import Recipe

from ribench.toolkit.penalties import AnchoredL2


class L2SP(AnchoredL2):
    name = "l2sp"
    description = "L2-SP: cross-entropy + (λ/2)·‖θ − θ0‖² over the backbone"
    paper = "https://arxiv.org/abs/1802.01483"
    recipe = Recipe(optimizer="sgd", lr=1e-3, tune="lam", centre=0.1, lr_from="ft",
                    source="Li et al. 2018, Sec. 4: SGD momentum 0.9, α = 0.1 on the pretrained weights")

    @dataclass
    class Config:
        lam: float = 1e-2
