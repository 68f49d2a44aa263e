"""auto-rgn and its extensions from seed 002 ("Automatic fine-tuning", Sec. 4.2, Algorithm 1).

Layer ℓ is one parameter tensor of the image classifier; its learning rate is
the base rate times a weight in [0, 1]:

    Auto-RGN_ℓ        = ‖g_ℓ‖₂ / ‖θ_ℓ‖₂                     (Lee et al. 2022; seed 002 Sec. 4.2)
    +Hessian          = ‖H_ℓ⁻¹ g_ℓ‖₂ / ‖θ_ℓ‖₂               (Newton step, L-BFGS H⁻¹)
    +Hessian+Change   = ‖H_tgt,ℓ⁻¹ g_tgt,ℓ − H_src,ℓ⁻¹ g_src,ℓ‖₂ / ‖θ_ℓ‖₂    (Algorithm 1)
    +Change           = ‖g_tgt,ℓ − g_src,ℓ‖₂ / ‖θ_ℓ‖₂
    lr_ℓ = base lr × score_ℓ / max_ℓ' score_ℓ'

g = ∇ mean cross-entropy at θ0. "tgt" is a seeded sample of the downstream
train split, "src" a seeded sample of the pretraining-domain split (`ctx.source`,
labels restricted to its class mask, as ribench.toolkit.gradients does).

When the weights are computed. Seed 002 describes the Auto-RGN baseline of
Lee et al. as "at each fine-tuning step" (Sec. 4.1): `auto-rgn` recomputes the
weights from the current mini-batch gradient before every optimizer step
(`every=step`, default; the trainer sets each group's lr from `lr_scale` after
`after_backward`). `every=once` computes them once at θ0 on a sample of the train
split, as seed 002's Algorithm 1 does for its extensions. The Hessian and Change
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

Weights of 0 (a layer with ‖θ_ℓ‖ = 0 scores 0, as does one with a zero
gradient) mean the layer is frozen (left out of the optimizer); if every score
is 0 there is no preference and every layer trains at the full rate. Algorithm 1
multiplies lr by the raw score; we normalise by the maximum as Lee et al. and
the ribench spec, so the most-changed layer trains at the suite's lr.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ribench.toolkit.layers import image_parameters
from ribench.engine.method import Method, ParamGroup
from ribench.engine.trainer import position_labels

# ---- shared by the seed-002 methods (surprise, criticality import these) ---------------------


def sample_indices(n_total: int, n: int, seed: int, stream: int) -> np.ndarray:
    """A seeded sample of `n` rows (sorted); n <= 0 or n >= n_total: every row."""
    if n <= 0 or n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng([seed, stream]).choice(n_total, n, replace=False))


def labelled_batches(split, indices, batch_size: int, preprocess: Callable, device: str):
    """(preprocessed images, label positions within the split's class mask, class mask) per batch."""
    targets = position_labels(split.labels, split.class_mask)
    mask = torch.as_tensor(split.class_mask, device=device)
    for images, _, idx in split.batches(batch_size, np.asarray(indices)):
        x = preprocess(torch.from_numpy(images).to(device))
        yield x, torch.from_numpy(targets[idx]).to(device), mask


def trainable_layers(model) -> "OrderedDict[str, torch.nn.Parameter]":
    """The image classifier's trainable tensors (ft's set), by name."""
    return OrderedDict((n, p) for n, p in image_parameters(model).items() if p.requires_grad)


def relative(scores: dict) -> dict:
    """score / max score; all zero (or empty): no preference, every weight 1."""
    top = max(scores.values(), default=0.0)
    if not top > 0:
        return {k: 1.0 for k in scores}
    return {k: float(v) / top for k, v in scores.items()}


def weighted_groups(members: dict, weights: dict) -> list[ParamGroup]:
    """One ParamGroup per member with its lr multiplier; weight 0 leaves it frozen."""
    return [ParamGroup(list(params), float(weights[name]), name)
            for name, params in members.items() if weights[name] > 0]


@contextlib.contextmanager
def eval_mode(model):
    """Statistics of the pretrained network as it predicts (no dropout); the mode is restored."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# ---- L-BFGS ------------------------------------------------------------------------------------


def two_loop(g: torch.Tensor, S: list, Y: list, gamma: float | None = None) -> torch.Tensor:
    """H⁻¹g by the L-BFGS two-loop recursion (Nocedal & Wright, Alg. 7.4), H0⁻¹ = γI.

    S, Y: curvature pairs s_i = x_{i+1} − x_i, y_i = g_{i+1} − g_i, oldest first.
    γ defaults to s_kᵀy_k / y_kᵀy_k of the newest pair (1 without pairs).
    """
    if gamma is None:
        gamma = float(torch.dot(S[-1], Y[-1]) / torch.dot(Y[-1], Y[-1])) if S else 1.0
    rho = [1.0 / torch.dot(y, s) for s, y in zip(S, Y)]
    q = g.clone()
    alpha = [None] * len(S)
    for i in reversed(range(len(S))):
        alpha[i] = rho[i] * torch.dot(S[i], q)
        q -= alpha[i] * Y[i]
    r = q * gamma
    for i in range(len(S)):
        beta = rho[i] * torch.dot(Y[i], r)
        r += (alpha[i] - beta) * S[i]
    return r


def lbfgs_pairs(objective: Callable, x0: torch.Tensor, iterations: int, history: int):
    """(g at x0, S, Y): the curvature memory of `iterations` L-BFGS steps from x0.

    `objective(x) -> (loss, gradient)`. Armijo backtracking (c1 = 1e-4, halving);
    the first step is -g·min(1, 1/‖g‖₁), as torch.optim.LBFGS. Pairs without
    positive curvature (sᵀy ≤ 1e-10) are skipped, as torch.optim.LBFGS does.
    """
    x = x0.clone()
    f, g = objective(x)
    g0, S, Y = g, [], []
    for _ in range(iterations):
        if not torch.isfinite(g).all() or float(g.abs().max()) <= 1e-12:
            break
        d = -two_loop(g, S, Y)
        slope = float(torch.dot(g, d))
        if not slope < 0:                           # not a descent direction: steepest descent
            d, slope = -g, -float(torch.dot(g, g))
        t = min(1.0, 1.0 / float(g.abs().sum())) if not S else 1.0
        for _ in range(30):
            f_new, g_new = objective(x + t * d)
            if f_new <= f + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            break
        s, y = t * d, g_new - g
        if float(torch.dot(s, y)) > 1e-10:
            S.append(s)
            Y.append(y)
            excess = max(len(S) - history, 0)
            del S[:excess], Y[:excess]
        x, f, g = x + s, f_new, g_new
    return g0, S, Y


class Objective:
    """Mean cross-entropy of a fixed labelled sample as a function of some weights, flattened.

    Evaluated through torch.func.functional_call on the given tensors, so the
    model's own weights never change; the sample's images are held as uint8.
    """

    def __init__(self, model, names: list[str], split, indices, preprocess, device: str, batch_size: int):
        params = dict(model.named_parameters())
        self.model, self.names = model, list(names)
        self.shapes = [params[n].shape for n in self.names]
        self.sizes = [params[n].numel() for n in self.names]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).tolist()
        self.x0 = torch.cat([params[n].detach().float().flatten() for n in self.names])
        self.preprocess, self.device, self.batch_size = preprocess, device, batch_size
        self.split, self.indices = split, np.asarray(indices)
        # a sample of the default size is decoded once; a whole large split is read per evaluation
        self.images = split.images[self.indices] if len(self.indices) <= 4096 else None
        self.targets = torch.from_numpy(position_labels(split.labels, split.class_mask)[np.asarray(indices)])
        self.mask = torch.as_tensor(split.class_mask, device=device)

    def slice(self, name: str) -> slice:
        i = self.names.index(name)
        return slice(self.offsets[i], self.offsets[i + 1])

    def __call__(self, flat: torch.Tensor):
        from torch.func import functional_call

        leaf = flat.detach().requires_grad_(True)
        weights = {n: leaf[a:b].view(shape) for n, a, b, shape
                   in zip(self.names, self.offsets[:-1], self.offsets[1:], self.shapes)}
        n = len(self.targets)
        total, grad = 0.0, torch.zeros_like(flat)
        for start in range(0, n, self.batch_size):
            rows = slice(start, start + self.batch_size)
            images = self.images[rows] if self.images is not None else self.split.images[self.indices[rows]]
            x = self.preprocess(torch.from_numpy(np.asarray(images)).to(self.device))
            y = self.targets[start:start + self.batch_size].to(self.device)
            logits = functional_call(self.model, weights, (x,))[:, self.mask].float()
            loss = F.cross_entropy(logits, y, reduction="sum") / n
            (g,) = torch.autograd.grad(loss, leaf)
            grad += g
            total += float(loss.detach())
        return total, grad


def newton_directions(model, names, split, indices, preprocess, device, batch_size,
                      hessian: bool, iterations: int, history: int, pairs: str) -> dict:
    """{layer: g_ℓ, or H_ℓ⁻¹ g_ℓ (L-BFGS)} at θ0 on a labelled sample (flattened fp32)."""
    if not hessian or pairs == "joint":
        objective = Objective(model, names, split, indices, preprocess, device, batch_size)
        if not hessian:
            _, g = objective(objective.x0)
            return {n: g[objective.slice(n)] for n in names}
        g, S, Y = lbfgs_pairs(objective, objective.x0, iterations, history)
        fallback = float(torch.dot(S[-1], Y[-1]) / torch.dot(Y[-1], Y[-1])) if S else 1.0
        out = {}
        for name in names:
            sl = objective.slice(name)
            kept = [(s[sl], y[sl]) for s, y in zip(S, Y)
                    if float(torch.dot(s[sl], y[sl])) > 1e-8 * float(s[sl].norm() * y[sl].norm())]
            out[name] = two_loop(g[sl], [s for s, _ in kept], [y for _, y in kept],
                                 None if kept else fallback)
        return out
    out = {}
    for name in names:                      # pairs=layer: NewtonStep(f, ℓ, D), one run per layer
        objective = Objective(model, [name], split, indices, preprocess, device, batch_size)
        g, S, Y = lbfgs_pairs(objective, objective.x0, iterations, history)
        out[name] = two_loop(g, S, Y)
    return out


# ---- the methods -------------------------------------------------------------------------------


class LayerwiseRates(Method):
    """A method whose definition is one lr multiplier per group: the cell records them
    (details["method"]["layer_weights"]; for per-step Auto-RGN, the last step's)."""

    def fit(self, ctx):
        result = super().fit(ctx)
        result["layer_weights"] = {k: float(v) for k, v in ctx.state.get("layer_weights", {}).items()}
        return result


class _LayerwiseRGN(LayerwiseRates):
    """Shared: one ParamGroup per tensor, weights from `scores` computed once at θ0."""

    def weights_from_scores(self, scores: dict) -> dict:
        return relative(scores)

    def scores(self, ctx) -> dict:
        raise NotImplementedError

    def prepare(self, ctx):
        if not self.per_step():
            ctx.state["layer_scores"] = self.scores(ctx)
            ctx.state["layer_weights"] = self.weights_from_scores(ctx.state["layer_scores"])

    def per_step(self) -> bool:
        return False

    def param_groups(self, ctx):
        members = {n: [p] for n, p in trainable_layers(ctx.model).items()}
        if self.per_step():
            return [ParamGroup(params, 1.0, n) for n, params in members.items()]   # set before every step
        return weighted_groups(members, ctx.state["layer_weights"])

    def _directions(self, ctx, split, stream, hessian):
        cfg = self.config
        names = list(trainable_layers(ctx.model))
        idx = sample_indices(len(split), cfg.samples, ctx.seed, stream)
        with eval_mode(ctx.model):
            return newton_directions(ctx.model, names, split, idx, ctx.preprocess, ctx.device,
                                     ctx.protocol.batch_size, hessian, getattr(cfg, "iterations", 0),
                                     getattr(cfg, "history", 0), getattr(cfg, "pairs", "joint"))

    @staticmethod
    def _relative_norms(ctx, vectors: dict) -> dict:
        layers = trainable_layers(ctx.model)
        out = {}
        for name, v in vectors.items():
            theta = float(layers[name].detach().float().norm())
            out[name] = float(v.norm()) / theta if theta > 0 else 0.0    # RGN_ℓ = ‖v_ℓ‖/‖θ_ℓ‖
        return out


class AutoRGN(_LayerwiseRGN):
    name = "auto-rgn"
    description = "Auto-RGN: layer lr ∝ ‖g_ℓ‖/‖θ_ℓ‖ (relative gradient norm)"
    paper = "https://arxiv.org/abs/2210.11466"

    @dataclass
    class Config:
        every: Literal["step", "once"] = "step"   # Lee et al. / seed 002 Sec. 4.1: every step
        samples: int = 512                        # every=once: target images (0: the whole split)

    def per_step(self) -> bool:
        return self.config.every == "step"

    def scores(self, ctx):
        return self._relative_norms(ctx, self._directions(ctx, ctx.train, 20, hessian=False))

    @torch.no_grad()
    def after_backward(self, ctx):
        if not self.per_step():
            return
        groups = ctx.optimizer.param_groups
        params = [g["params"][0] for g in groups]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        g_norm = torch.stack(torch._foreach_norm(grads)).float()
        t_norm = torch.stack(torch._foreach_norm(params)).float()
        rgn = torch.where(t_norm > 0, g_norm / t_norm, torch.zeros_like(g_norm)).tolist()  # ‖g_ℓ‖/‖θ_ℓ‖
        scores = {g["name"]: r for g, r in zip(groups, rgn)}
        weights = self.weights_from_scores(scores)
        for group in groups:
            group["lr_scale"] = weights[group["name"]]
        ctx.state["layer_scores"], ctx.state["layer_weights"] = scores, weights


class AutoRGNHessian(_LayerwiseRGN):
    name = "auto-rgn-hessian"
    description = "Auto-RGN with the gradient preconditioned by an L-BFGS inverse Hessian"
    paper = ""      # seed 002 (Agarwala et al., "Automatic fine-tuning"), Sec. 4.2; no URL

    @dataclass
    class Config:
        samples: int = 512        # target images for g and the L-BFGS run (0: the whole split)
        iterations: int = 10      # L-BFGS steps that gather the curvature pairs
        history: int = 10         # pairs kept (scipy L-BFGS-B's maxcor)
        pairs: Literal["joint", "layer"] = "joint"

    def scores(self, ctx):
        # ‖H_ℓ⁻¹ g_ℓ‖ / ‖θ_ℓ‖ (Newton step, Sec. 4.2)
        return self._relative_norms(ctx, self._directions(ctx, ctx.train, 20, hessian=True))


class AutoRGNChange(_LayerwiseRGN):
    name = "auto-rgn-change"
    description = "Auto-RGN on the change of gradient from source (pretraining domain) to target"
    paper = ""      # seed 002 (Agarwala et al., "Automatic fine-tuning"), Sec. 4.2, Algorithm 1; no URL

    @dataclass
    class Config:
        hessian: bool = True      # Auto-RGN+Hessian+Change (Algorithm 1); False: Auto-RGN+Change
        samples: int = 512        # images of each domain (0: the whole split)
        iterations: int = 10
        history: int = 10
        pairs: Literal["joint", "layer"] = "joint"

    def scores(self, ctx):
        hessian = self.config.hessian
        target = self._directions(ctx, ctx.train, 20, hessian)        # Y = NewtonStep(f, ℓ, D_tgt)
        source = self._directions(ctx, ctx.source, 21, hessian)       # X = NewtonStep(f, ℓ, D_src)
        # w_ℓ = ‖X − Y‖₂ / ‖θ_ℓ‖₂ (Algorithm 1)
        return self._relative_norms(ctx, {n: target[n] - source[n] for n in target})
