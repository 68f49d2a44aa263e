"""A closed-form penalty on weights, described so that the loop may fold it into the optimizer step.

l2sp, ewc, ewc-rib and imp-reg add the gradient of a penalty on θ − θ0 after backward:

    quadratic: ∇ = λ·w⊙(θ − θ0)       (l2sp, ewc-rib: w ≡ 1; ewc: w = F)
    sign:      ∇ = λ·w⊙sign(θ − θ0)   (imp-reg: w = r̄)

Added apart, that is one more pass over θ, θ0, w and g after backward, before the optimizer reads
θ and g again. A method that describes its penalty as a `WeightPenalty` adds it itself with
`add_gradient` (the torch path), unless the loop has taken it into a fused step over flat buffers
(`--kernels triton`) and set `folded`: then the kernel adds the same terms in the step's pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PENALTY_KINDS = ("quadratic", "sign")


@dataclass
class WeightPenalty:
    kind: str                         # "quadratic" or "sign"
    lam: float
    params: list                      # the penalised weights θ (model parameters)
    anchors: list                     # θ0 per weight
    weights: list | None = None       # w per weight (F, r̄); None: w ≡ 1
    folded: bool = False              # True once the loop's fused step adds the gradient

    def __post_init__(self):
        if self.kind not in PENALTY_KINDS:
            raise ValueError(f"unknown penalty kind '{self.kind}' (one of {', '.join(PENALTY_KINDS)})")

    @torch.no_grad()
    def gradient_terms(self) -> list:
        """w⊙pull(θ − θ0) per weight, in fused foreach ops (times λ, the gradient)."""
        terms = torch._foreach_sub(self.params, self.anchors)
        if self.kind == "sign":
            torch._foreach_sign_(terms)
        if self.weights is not None:
            torch._foreach_mul_(terms, self.weights)
        return terms

    def value(self) -> torch.Tensor:
        """The penalty itself, differentiable, for tests and logs: quadratic ½λ·Σ w⊙(θ − θ0)²,
        sign λ·Σ w⊙|θ − θ0| (whose gradients are the terms above)."""
        weights = self.weights if self.weights is not None else [None] * len(self.params)
        total = torch.zeros(())
        for p, a, w in zip(self.params, self.anchors, weights):
            pull = (p - a).pow(2) if self.kind == "quadratic" else (p - a).abs()
            total = total + (pull if w is None else w * pull).sum()
        return (0.5 if self.kind == "quadratic" else 1.0) * self.lam * total

    @torch.no_grad()
    def add_gradient(self) -> None:
        """p.grad += λ·w⊙pull(θ − θ0), unless the fused step does it; a weight the loss did not reach
        starts from a zero gradient."""
        if self.folded or self.lam == 0 or not self.params:
            return
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        torch._foreach_add_([p.grad for p in self.params], self.gradient_terms(), alpha=self.lam)
