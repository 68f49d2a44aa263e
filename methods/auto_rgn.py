"""auto-rgn and its extensions from the Automatic fine-tuning paper (Agarwala et al.; Sec. 4.2, Algorithm 1).

Layer ℓ is a part f_ℓ of the image classifier f = f_L ∘ … ∘ f_1 with its
parameters θ_ℓ (Sec. 4.1); its learning rate is the base rate times a weight in
[0, 1]:

    Auto-RGN_ℓ        = ‖g_ℓ‖₂ / ‖θ_ℓ‖₂                     (Lee et al. 2022; Agarwala et al. Sec. 4.2)
    +Hessian          = ‖H_ℓ⁻¹ g_ℓ‖₂ / ‖θ_ℓ‖₂               (Newton step, L-BFGS H⁻¹)
    +Hessian+Change   = ‖H_tgt,ℓ⁻¹ g_tgt,ℓ − H_src,ℓ⁻¹ g_src,ℓ‖₂ / ‖θ_ℓ‖₂    (Algorithm 1)
    +Change           = ‖g_tgt,ℓ − g_src,ℓ‖₂ / ‖θ_ℓ‖₂
    lr_ℓ = base lr × score_ℓ / max_ℓ' score_ℓ'

g = ∇ mean cross-entropy at θ0. "tgt" is a seeded sample of the downstream
train split, "src" a seeded sample of the pretraining-domain split (`ctx.source`,
labels restricted to its class mask, as ribench.toolkit.gradients does).

When the weights are computed. Agarwala et al. describe the Auto-RGN baseline of
Lee et al. as "at each fine-tuning step" (Sec. 4.1): `auto-rgn` recomputes the
weights from the current mini-batch gradient before every optimizer step
(`every=step`, default; the trainer sets each group's lr from `lr_scale` after
`after_backward`). `every=once` computes them once at θ0 on a sample of the train
split, as Agarwala et al.'s Algorithm 1 does for their extensions. The Hessian and Change
variants are once-only, as Algorithm 1: a per-step version would need an L-BFGS
memory built from noisy mini-batch gradients along the training path and, for
Change, a source gradient every step — a different algorithm.

How the curvature pairs are gathered. The paper says only that it uses "the
LBFGS inverse hessian approximation [Byr+95]" inside a per-layer
`NewtonStep(f, ℓ, D)`; it does not say where the pairs come from. [Byr+95] is
L-BFGS(-B), whose memory is the (s, y) pairs of its own iterations, so we run a
short L-BFGS minimisation of the sample's mean loss from θ0 (own implementation:
two-loop direction, Armijo backtracking, the first step scaled by 1/‖g‖₁ as
torch.optim.LBFGS; `iterations`=10 steps, `history`=10 pairs, scipy's maxcor)
and precondition the gradient at θ0 by the two-loop recursion
(Nocedal & Wright, Alg. 7.4) over those pairs.
`pairs=joint` (default): one run over all weights; layer ℓ uses the pairs'
ℓ-slices (a block-diagonal H⁻¹, the paper's ∇²_{θ_ℓ}), keeping only slices with
positive curvature sᵀy > 1e-8‖s‖‖y‖; a layer left with no pair uses the
global scaling sᵀy/yᵀy of the newest pair. Cost: about `iterations`+1 gradient
evaluations of the sample. `pairs=layer`: one L-BFGS run per layer over that
layer's weights alone (exactly the layer's Hessian block, as NewtonStep(f, ℓ, D)
reads), at #layers times the cost. All of it in fp32, eval mode, on copies
(torch.func.functional_call): the model is not touched.

What a layer is (`layers`). Agarwala et al. define f_ℓ as a function of the
composition with all of its parameters θ_ℓ, on ResNets (Sec. 5). `layers=module`
(default of the Hessian and Change variants) takes the modules of
ribench.toolkit.layers: a Linear's weight and bias, a LayerNorm's scale and
shift, the ViT embedding (patch embedding, class token, position embedding) as
one. `layers=tensor` scores every parameter tensor on
its own (the default of `auto-rgn`, whose per-step weights were measured stable
that way). Measured, rib-mini tuned (the 2026-12 rows): scored per tensor, the
once-only variants gave the full rate to one small-norm bias or norm tensor, a
different one per seed (20 of 21 cells on mini-clip, 18–19 of 20–21 on
mini-sup), most other tensors 1e-2 to 1e-5 of it; selection then climbed to lr 1
on mini-sup and one cell diverged. A bias's θ_ℓ is close to 0, so ‖step‖/‖θ_ℓ‖
measures the bias's initial size, not the information in the target data.

Weights of 0 (a layer with ‖θ_ℓ‖ = 0 scores 0, as does one with a zero
gradient) mean the layer is frozen (left out of the optimizer); if every score
is 0 there is no preference and every layer trains at the full rate. Algorithm 1
multiplies lr by the raw score; we normalise by the maximum as Lee et al. and
the ribench spec, so the most-changed layer trains at the suite's lr.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch

from ribench.engine.method import ParamGroup
from ribench.methods._layerwise import (PAPER, LayerwiseRates, eval_mode, relative, sample_indices,
                                        trainable_layers, weighted_groups)
from ribench.methods._lbfgs import newton_directions
from ribench.toolkit.layers import cohorts

# What a layer ℓ is: "module" (f_ℓ with all its θ_ℓ, Agarwala et al. Sec. 4.1) or "tensor".
Layers = Literal["module", "tensor"]


class _LayerwiseRGN(LayerwiseRates):
    """Shared: one ParamGroup per layer ℓ (config `layers`), weights from `scores` computed once at θ0."""

    def weights_from_scores(self, scores: dict) -> dict:
        return relative(scores)

    def scores(self, ctx) -> dict:
        raise NotImplementedError

    def prepare(self, ctx):
        if not self.per_step():
            self.layer_scores = self.scores(ctx)
            self.layer_weights = self.weights_from_scores(self.layer_scores)

    def per_step(self) -> bool:
        return False

    def layers(self, ctx) -> "OrderedDict[str, list[str]]":
        """{layer ℓ: the names of its trainable tensors θ_ℓ}."""
        trainable = trainable_layers(ctx.model)
        grouped = cohorts(ctx.model, "module" if self.config.layers == "module" else "layer")
        kept = ((layer, [n for n in names if n in trainable]) for layer, names in grouped.items())
        return OrderedDict((layer, names) for layer, names in kept if names)

    def param_groups(self, ctx):
        tensors = trainable_layers(ctx.model)
        members = {layer: [tensors[n] for n in names] for layer, names in self.layers(ctx).items()}
        if self.per_step():
            return [ParamGroup(params, 1.0, n) for n, params in members.items()]   # set before every step
        return weighted_groups(members, self.layer_weights)

    def _directions(self, ctx, split, stream, hessian):
        cfg = self.config
        idx = sample_indices(len(split), cfg.samples, ctx.seed, stream)
        with eval_mode(ctx.model):
            return newton_directions(ctx.model, self.layers(ctx), split, idx, ctx.preprocess, ctx.device,
                                     ctx.protocol.batch_size, hessian, getattr(cfg, "iterations", 0),
                                     getattr(cfg, "history", 0), getattr(cfg, "pairs", "joint"))

    def _relative_norms(self, ctx, vectors: dict) -> dict:
        tensors, layers = trainable_layers(ctx.model), self.layers(ctx)
        out = {}
        for layer, v in vectors.items():
            theta = math.sqrt(sum(float(tensors[n].detach().float().pow(2).sum()) for n in layers[layer]))
            out[layer] = float(v.norm()) / theta if theta > 0 else 0.0    # RGN_ℓ = ‖v_ℓ‖/‖θ_ℓ‖
        return out


class AutoRGN(_LayerwiseRGN):
    name = "auto-rgn"
    description = "Auto-RGN: layer lr ∝ ‖g_ℓ‖/‖θ_ℓ‖ (relative gradient norm)"
    paper = "https://arxiv.org/abs/2210.11466"

    @dataclass
    class Config:
        every: Literal["step", "once"] = "step"   # Lee et al. / Agarwala et al. Sec. 4.1: every step
        samples: int = 512                        # every=once: target images (0: the whole split)
        layers: Layers = "tensor"                 # each parameter tensor its own rate (the published rows)

    def per_step(self) -> bool:
        return self.config.every == "step"

    def scores(self, ctx):
        return self._relative_norms(ctx, self._directions(ctx, ctx.train, 20, hessian=False))

    @torch.no_grad()
    def after_backward(self, ctx):
        if not self.per_step():
            return
        groups = ctx.optimizer.param_groups
        params = [p for g in groups for p in g["params"]]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        owner = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor([len(g["params"]) for g in groups]))

        def layer_norms(tensors):                   # ‖v_ℓ‖ over the tensors of each layer
            squares = torch.stack(torch._foreach_norm(tensors)).double().pow(2)
            return torch.zeros(len(groups), dtype=torch.float64).index_add_(0, owner, squares.cpu()).sqrt()

        g_norm, t_norm = layer_norms(grads), layer_norms(params)
        rgn = torch.where(t_norm > 0, g_norm / t_norm, torch.zeros_like(g_norm)).tolist()  # ‖g_ℓ‖/‖θ_ℓ‖
        scores = {g["name"]: r for g, r in zip(groups, rgn)}
        weights = self.weights_from_scores(scores)
        for group in groups:
            group["lr_scale"] = weights[group["name"]]
        self.layer_scores, self.layer_weights = scores, weights


class AutoRGNHessian(_LayerwiseRGN):
    name = "auto-rgn-hessian"
    description = "Auto-RGN with the gradient preconditioned by an L-BFGS inverse Hessian"
    paper = f"{PAPER}, Sec. 4.2"

    @dataclass
    class Config:
        samples: int = 512        # target images for g and the L-BFGS run (0: the whole split)
        iterations: int = 10      # L-BFGS steps that gather the curvature pairs
        history: int = 10         # pairs kept (scipy L-BFGS-B's maxcor)
        pairs: Literal["joint", "layer"] = "joint"
        layers: Layers = "module"  # f_ℓ with all its θ_ℓ (Sec. 4.1)

    def scores(self, ctx):
        # ‖H_ℓ⁻¹ g_ℓ‖ / ‖θ_ℓ‖ (Newton step, Sec. 4.2)
        return self._relative_norms(ctx, self._directions(ctx, ctx.train, 20, hessian=True))


class AutoRGNChange(_LayerwiseRGN):
    name = "auto-rgn-change"
    description = "Auto-RGN on the change of gradient from source (pretraining domain) to target"
    paper = f"{PAPER}, Sec. 4.2, Algorithm 1"

    @dataclass
    class Config:
        hessian: bool = True      # Auto-RGN+Hessian+Change (Algorithm 1); False: Auto-RGN+Change
        samples: int = 512        # images of each domain (0: the whole split)
        iterations: int = 10
        history: int = 10
        pairs: Literal["joint", "layer"] = "joint"
        layers: Layers = "module"  # f_ℓ with all its θ_ℓ (Sec. 4.1)

    def scores(self, ctx):
        hessian = self.config.hessian
        target = self._directions(ctx, ctx.train, 20, hessian)        # Y = NewtonStep(f, ℓ, D_tgt)
        source = self._directions(ctx, ctx.source, 21, hessian)       # X = NewtonStep(f, ℓ, D_src)
        # w_ℓ = ‖X − Y‖₂ / ‖θ_ℓ‖₂ (Algorithm 1)
        return self._relative_norms(ctx, {n: target[n] - source[n] for n in target})
