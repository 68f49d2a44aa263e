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

The exact rule implemented (the paper's Algorithm 1, "Adam with Trainable
Directional Gradient Projection", with the authors' normalisation). At loop step
t (weights θ_t, per layer r_t = θ_t − θ0, mini-batch task gradient g_t = ∇L(θ_t),
lr η_t of the layer's group, k the number of hyper steps taken so far):

    1. hypergradient (t ≥ 1), the loss's derivative through the previous update,
       normalised to a cosine (Algorithm 1: "Normalization(α_{t−1}·g_{t,1}·g^proj_{t−1,1})"):
           d_t = ∂θ_t/∂ω_ℓ = η_{t−1}·c_{t−1}·r_{t−1}
           h_t = ⟨g_t, d_t⟩ / (‖g_t‖·‖d_t‖)      (0 when g_t = 0 or d_t = 0)
               = sign(η_{t−1}·c_{t−1})·cos(g_t, r_{t−1})   (how it is computed)
    2. Adam on ω (β1 0.9, β2 0.999, ε 1e-8, k ← k + 1), then clip to [0, 1]
       (Algorithm 1: "ω_t ← max(0, min(1, AdamUpdate(ω_{t−1}, ∇ω_t, μ, t)))"):
           m ← β1·m + (1 − β1)·h_t,   v ← β2·v + (1 − β2)·h_t²
           ω_ℓ ← clip(ω_ℓ − μ·(m/(1 − β1^k)) / (sqrt(v/(1 − β2^k)) + ε), 0, 1)
    3. c_t = ⟨g_t, r_t⟩/‖r_t‖² if ⟨g_t, r_t⟩ < 0, else 0
    4. g̃_t = g_t − ω_ℓ·c_t·r_t               → written to p.grad
    5. the protocol's optimizer steps with g̃_t. For SGD with momentum,
           b_t = β·b_{t−1} + g̃_t,   θ_{t+1} = θ_t − η_t·b_t,
       so ∂θ_{t+1}/∂ω_ℓ = η_t·c_t·r_t holding b_{t−1} fixed (the one-step,
       greedy hypergradient of FTP / hypergradient descent: the momentum
       carried from earlier steps is treated as independent of ω). For Adam
       (the paper's optimizer) the same expression is used and Adam's
       preconditioner is ignored, as Algorithm 1 does (its ∂θ/∂ω is α·g^proj).

Why the cosine. The raw hypergradient ⟨g_t, d_t⟩ carries the factor
η·‖g‖·‖r‖, which changes by orders of magnitude over a run (r starts at 0, the
schedule takes η to 0). Adam's second moment is then dominated by the largest
past values, and the steps where h is small barely move ω whatever their sign
(issue 15: on rib-mini the raw version left ω near its floor 0). The cosine
keeps every hypergradient in [−1, 1], so Adam averages directions, not
magnitudes, as the authors' code does (`F.normalize(grad) · F.normalize(correction)`;
FTP's hypergradient, taken through its ratio γ/‖c‖, is likewise divided by the
norm of the displacement it projects), and the standard ε is harmless.

Choices where the paper leaves room (ribench's papers folder holds its abstract;
Algorithm 1 is quoted from the arXiv version, 2502.15895):

- ω0 = 0 (Algorithm 1: "if t = 1 then ω_t ← 0") and μ = 1e-2 (FTP's μ for
  its Adam-updated constraints; the authors' development code used values from
  1e-3 to 10). `omega_init=1` starts fully projected, TPGM/FTP style (their
  constraints start at the tightest value and relax).
- The derivative is gated by the conflict: when the previous step did not
  project a layer (c_{t−1} = 0), ω had no effect on θ_t and h_t = 0. The
  authors' code normalises the projection term whether or not it was applied.
- Adam's bias correction counts hyper steps (the first one moves ω by
  μ·|h|/(|h| + ε) ≈ μ against the sign of h); ω and its moments are float64.
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

With `--kernels triton` the loop lays the trained weights out flat and steps 1, 3 and 4 run as two
launches over them (`ribench.kernels.projection`: one segmented reduction for the five sums of
every layer, one update pass), instead of a dot, a norm and a subtraction per tensor; step 2 is
the same torch code on a handful of scalars per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ribench.errors import ConfigError
from ribench.toolkit.layers import image_parameters
from ribench.engine.context import FitContext
from ribench.engine.method import Method
from ribench.engine.recipe import Recipe
from ribench.kernels import launch_block
from ribench.kernels.flat import FlatWeights
from ribench.kernels.projection import layer_blocks, layer_sums_triton, project_triton

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


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
        self.flat = None              # _FlatProjection, when the loop steps over flat weights
        self.c = None                 # c_t of the current step, until after_step knows η_t
        self.r = None


class _FlatProjection:
    """Where DiGraP's layers lie in the loop's flat weights, θ0 laid out alike, and r_t, r_{t−1}."""

    def __init__(self, st: _State, flat: FlatWeights):
        self.flat = flat
        self.slots = torch.tensor([flat.index(p) for p in st.params], dtype=torch.long)   # flat layer of each
        # weights DiGraP does not project get their own start as θ0 (and coefficient 0 below)
        self.anchor = flat.gather({id(p): a for p, a in zip(st.params, st.anchors)}, fill=flat.data)
        self.block = launch_block(flat.data)
        starts, self.owners = layer_blocks(flat.sizes, self.block)
        self.starts = starts.to(flat.data.device)
        self.r = torch.zeros_like(flat.data)
        self.prev_r = torch.zeros_like(flat.data)


def _dots(a, b) -> torch.Tensor:
    return torch.stack([torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(a, b)])


def _cosines(a, b) -> torch.Tensor:
    """⟨a, b⟩ / (‖a‖·‖b‖) per layer, in float64; 0 where either is 0."""
    dots = _dots(a, b).double()
    norms = (_dots(a, a).double() * _dots(b, b).double()).sqrt()
    return torch.where(norms > 0, dots / norms.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(dots))


def _adam_step(omega, m, v, h, k: int, mu: float):
    """One clipped Adam step on ω (step 2); returns (ω, m, v)."""
    m = BETA1 * m + (1 - BETA1) * h
    v = BETA2 * v + (1 - BETA2) * h * h
    m_hat, v_hat = m / (1 - BETA1 ** k), v / (1 - BETA2 ** k)
    return (omega - mu * m_hat / (v_hat.sqrt() + EPS)).clamp(0.0, 1.0), m, v


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
    recipe = Recipe(optimizer="adamw", lr=1e-4, weight_decay=0.0,
                    source="Huang et al. 2025, Algorithm 1 (Adam; no weight decay: the projection is the "
                           "regulariser); lr 1e-4: FTP's Adam recipe on DomainNet (Tian et al. 2023, code "
                           "README), the benchmark of DiGraP Sec. 4.1")

    @dataclass
    class Config:
        omega_init: float = 0.0      # ω0 (Algorithm 1: 0; 1 = start fully projected, TPGM/FTP style)
        mu: float = 1e-2             # Adam learning rate of ω (FTP: 1e-2)
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

    def works_on_flat_weights(self, ctx) -> bool:
        return not self._inactive()

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
            if ctx.flat is not None and params:
                self.projection.flat = _FlatProjection(self.projection, ctx.flat)
        return self.projection

    @torch.no_grad()
    def after_backward(self, ctx):
        if self._inactive():
            return                   # ω ≡ 0: exactly ft
        st = self._state(ctx)
        if not st.params:
            return
        if st.flat is not None:
            return self._project_flat(ctx, st)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in st.params]
        r = torch._foreach_sub(st.params, st.anchors)                              # r_t = θ_t − θ0
        if self.config.learn_omega and st.prev_r is not None:
            # step 1: h_t = cos(g_t, d_t), d_t = η_{t−1}c_{t−1}·r_{t−1}, i.e. sign(η_{t−1}c_{t−1})·cos(g_t, r_{t−1})
            h = torch.sign(st.prev_scale) * _cosines(grads, st.prev_r)
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
    def _project_flat(self, ctx, st: _State):
        """Steps 1–4 with the five per-layer sums from one reduction and step 4 as one update pass."""
        fp = st.flat
        fp.flat.collect_gradients()
        theta, grad = fp.flat.data, fp.flat.grad
        sums = layer_sums_triton(theta, fp.anchor, grad, fp.prev_r, fp.starts, fp.owners, fp.block)[fp.slots]
        g_r, r_r, g_prev, g_g, prev_prev = sums.unbind(1)
        if self.config.learn_omega and st.prev_scale is not None:
            # step 1: h_t = sign(η_{t−1}c_{t−1})·cos(g_t, r_{t−1})
            norms = (g_g * prev_prev).sqrt()
            cos = torch.where(norms > 0, g_prev / norms.clamp_min(torch.finfo(torch.float64).tiny),
                              torch.zeros_like(g_prev))
            st.k += 1
            st.omega, st.m, st.v = _adam_step(st.omega, st.m, st.v, torch.sign(st.prev_scale) * cos, st.k,
                                              self.config.mu)                       # step 2
        c = torch.where(g_r < 0, g_r / r_r.clamp_min(torch.finfo(torch.float32).tiny),
                        torch.zeros_like(g_r))                                       # step 3
        coef = torch.zeros(len(fp.flat.params), dtype=torch.float64, device=theta.device)
        coef[fp.slots] = st.omega * c
        project_triton(theta, fp.anchor, grad, fp.r, coef, fp.starts, fp.owners, fp.block)   # step 4; r_t
        if self.config.learn_omega:
            st.c = c

    @torch.no_grad()
    def after_step(self, ctx):
        st = self.projection
        if st is None or st.c is None:
            return
        lr_of = {id(p): group["lr"] for group in ctx.optimizer.param_groups for p in group["params"]}
        eta = torch.tensor([lr_of.get(id(p), 0.0) for p in st.params], dtype=torch.float64,
                           device=st.omega.device)
        st.prev_scale = eta * st.c.double()                    # ∂θ_{t+1}/∂ω = η_t·c_t·r_t
        if st.flat is not None:
            st.flat.prev_r, st.flat.r = st.flat.r, st.flat.prev_r
        else:
            st.prev_r = st.r
        st.r = st.c = None

    def learned(self, ctx):
        st = self._state(ctx)          # built even when ω ≡ 0 never needed it, to name the layers
        self.omega = dict(zip(st.names, st.omega.tolist()))
        return {"omega": dict(self.omega)}
