"""digrap: Directional Gradient Projection (Huang, Tian et al., ICLR 2025).

Fine-tuning has two objectives, the task loss L and the regularizer ½‖θ − θ0‖²,
whose gradient is r = θ − θ0. Per layer ℓ (one parameter tensor) the two
*gradients* conflict when ⟨g, r⟩ < 0: the task's descent step −g then has a
positive component along r, i.e. it moves the layer further from θ0. Only then
is g projected, by a trainable strength ω_ℓ ∈ [0, 1]:

    g̃ = g − ω_ℓ·⟨g, r⟩/‖r‖²·r        if ⟨g, r⟩ < 0,   else g̃ = g

ω = 0 is plain fine-tuning; ω = 1 removes the component along r entirely
(⟨g̃, r⟩ = 0). As in the trainable projection methods TPGM and FTP, ω is a
hyperparameter learned from one step to the next with its own optimizer.

The exact rule implemented. At loop step t (weights θ_t, per layer
r_t = θ_t − θ0, mini-batch task gradient g_t = ∇L(θ_t), lr η_t of the layer's
group, k = t the number of hyper steps so far):

    1. hypergradient (t ≥ 1; the loss's derivative through the previous update)
           h_t = ∂L(θ_t)/∂ω_ℓ ≈ ⟨g_t, ∂θ_t/∂ω_ℓ⟩ = η_{t−1}·c_{t−1}·⟨g_t, r_{t−1}⟩
    2. Adam on ω (β1 0.9, β2 0.999, no ε: see below), then clip:
           m ← β1·m + (1 − β1)·h_t,   v ← β2·v + (1 − β2)·h_t²
           ω_ℓ ← clip(ω_ℓ − μ·(m/(1 − β1^k)) / sqrt(v/(1 − β2^k)), 0, 1)
    3. c_t = ⟨g_t, r_t⟩/‖r_t‖² if ⟨g_t, r_t⟩ < 0, else 0
    4. g̃_t = g_t − ω_ℓ·c_t·r_t               → written to p.grad
    5. the protocol's optimizer steps with g̃_t. For SGD with momentum,
           b_t = β·b_{t−1} + g̃_t,   θ_{t+1} = θ_t − η_t·b_t,
       so ∂θ_{t+1}/∂ω_ℓ = η_t·c_t·r_t holding b_{t−1} fixed (the one-step,
       greedy hypergradient of FTP / hypergradient descent: the momentum
       carried from earlier steps is treated as independent of ω). For AdamW
       the same expression is used and Adam's preconditioner is ignored.

Choices where the paper (ribench was written from its abstract alone) leaves room:

- ω0 = 0 and μ = 5e-2 with Adam as the hyper-optimizer: the values in the
  DiGraP authors' development code (its "TPCGrad" strength starts at 0 and
  is Adam-updated with μ = 5e-2). TPGM and FTP instead start their projection
  radius at the tightest value (TPGM: half the smallest norm; FTP: γ = 1e-8)
  and relax it with Adam (FTP: μ = 1e-2); `omega_init=1` gives that style
  here (start fully projected, let the hypergradient relax it).
- Adam without ε: the hypergradient carries the factor η·‖g‖², so its scale
  differs by orders of magnitude between layers and over the schedule; a fixed
  ε (1e-8) would swamp small layers. Without ε the step is scale-free (the
  first step moves ω by exactly μ against the sign of h); a layer whose
  hypergradients have all been 0 does not move. The ω state is float64.
- The hypergradient uses the raw task gradient g_t (the loss being minimized),
  as FTP does; weight decay (from the protocol) is added by the optimizer after
  the projection and is not projected.
- Which weights: every trainable image-classifier tensor with a pretrained
  counterpart, the head included (`project_head=False` leaves the head as in
  `ft`). TPGM/FTP exclude a *new* head; ribench's head is the pretrained
  (zero-shot) head, its θ0 is meaningful and the shifted test sets are scored
  through it.
- `learn_omega=False` keeps ω at `omega_init` (ω = 0 fixed is `ft` bit for bit).
- The final ω per layer is returned by `learned` under "omega" (the runner stores
  it in the cell's details, under "method") and kept on the instance as `self.omega`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ribench.errors import ConfigError
from ribench.toolkit.layers import image_parameters
from ribench.engine.context import FitContext
from ribench.engine.method import Method

BETA1, BETA2 = 0.9, 0.999


class _State:
    """Per-layer ω with its Adam moments, and what the next hypergradient needs."""

    def __init__(self, names, params, anchors, omega0: float):
        self.names, self.params, self.anchors = names, params, anchors
        device = params[0].device if params else torch.device("cpu")
        n = len(params)
        self.omega = torch.full((n,), float(omega0), dtype=torch.float64, device=device)
        self.m = torch.zeros(n, dtype=torch.float64, device=device)
        self.v = torch.zeros(n, dtype=torch.float64, device=device)
        self.k = 0                    # hyper steps taken
        self.prev_r = None            # r_{t−1} per layer
        self.prev_scale = None        # η_{t−1}·c_{t−1} per layer
        self.c = None                 # c_t of the current step, until after_step knows η_t
        self.r = None


def _dots(a, b) -> torch.Tensor:
    return torch.stack([torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(a, b)])


def _adam_step(omega, m, v, h, k: int, mu: float):
    """One clipped Adam step on ω (no ε); returns (ω, m, v)."""
    m = BETA1 * m + (1 - BETA1) * h
    v = BETA2 * v + (1 - BETA2) * h * h
    m_hat, v_hat = m / (1 - BETA1 ** k), v / (1 - BETA2 ** k)
    step = torch.where(v_hat > 0, m_hat / v_hat.sqrt().clamp_min(1e-300), torch.zeros_like(m_hat))
    return (omega - mu * step).clamp(0.0, 1.0), m, v


def _check(config):
    if not 0.0 <= config.omega_init <= 1.0:
        raise ConfigError(f"bad value for omega_init: {config.omega_init} (must be in [0, 1])")
    if config.mu < 0:
        raise ConfigError(f"bad value for mu: {config.mu} (must be ≥ 0)")
    return config


class DiGraP(Method):
    name = "digrap"
    description = "DiGraP: project conflicting gradients off θ − θ0 per layer, trainable strength ω"
    paper = "https://arxiv.org/abs/2502.15895"

    @dataclass
    class Config:
        omega_init: float = 0.0      # ω0 (authors' code: 0; 1 = start fully projected, TPGM/FTP style)
        mu: float = 5e-2             # Adam learning rate of ω (authors' code: 5e-2; FTP: 1e-2)
        learn_omega: bool = True     # False: ω stays at omega_init
        project_head: bool = True    # the head is pretrained here, so θ0 means something

    def __init__(self, config=None):
        super().__init__(config)
        _check(self.config)
        self.omega: dict[str, float] = {}      # final ω per layer, filled by learned()
        self.projection: _State | None = None  # per-layer tensors and ω's optimizer, built on first use

    @classmethod
    def configure(cls, overrides):
        return _check(super().configure(overrides))     # refuse bad values before any work

    def prepare(self, ctx):
        self.projection = None        # built from this cell's model on first use

    def _inactive(self) -> bool:
        return not self.config.learn_omega and self.config.omega_init == 0.0

    def _state(self, ctx: FitContext) -> _State:
        if self.projection is None:
            frozen = dict(ctx.pretrained.named_parameters())
            head = {id(p) for p in ctx.model.head.parameters()}
            names, params, anchors = [], [], []
            for name, p in image_parameters(ctx.model).items():
                if not p.requires_grad or name not in frozen:
                    continue
                if id(p) in head and not self.config.project_head:
                    continue
                names.append(name)
                params.append(p)
                anchors.append(frozen[name].detach())
            self.projection = _State(names, params, anchors, self.config.omega_init)
        return self.projection

    @torch.no_grad()
    def after_backward(self, ctx):
        if self._inactive():
            return                   # ω ≡ 0: exactly ft
        st = self._state(ctx)
        if not st.params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in st.params]
        r = torch._foreach_sub(st.params, st.anchors)                              # r_t = θ_t − θ0
        if self.config.learn_omega and st.prev_r is not None:
            h = _dots(grads, st.prev_r).double() * st.prev_scale                   # step 1
            st.k += 1
            st.omega, st.m, st.v = _adam_step(st.omega, st.m, st.v, h, st.k, self.config.mu)   # step 2
        dots = _dots(grads, r)
        norm2 = _dots(r, r)
        c = torch.where(dots < 0, dots / norm2.clamp_min(torch.finfo(norm2.dtype).tiny),
                        torch.zeros_like(dots))                                   # step 3
        coef = (st.omega.to(c.dtype) * c).unbind()
        for p, ri, a in zip(st.params, r, coef):
            if p.grad is not None:
                p.grad.sub_(ri * a)                                                # step 4
        if self.config.learn_omega:
            st.r, st.c = r, c

    @torch.no_grad()
    def after_step(self, ctx):
        st = self.projection
        if st is None or st.c is None:
            return
        lr_of = {id(p): group["lr"] for group in ctx.optimizer.param_groups for p in group["params"]}
        eta = torch.tensor([lr_of.get(id(p), 0.0) for p in st.params], dtype=torch.float64,
                           device=st.omega.device)
        st.prev_r, st.prev_scale = st.r, eta * st.c.double()   # ∂θ_{t+1}/∂ω = η_t·c_t·r_t
        st.r = st.c = None

    def learned(self, ctx):
        st = self._state(ctx)          # built even when ω ≡ 0 never needed it, to name the layers
        self.omega = dict(zip(st.names, st.omega.tolist()))
        return {"omega": dict(self.omega)}
