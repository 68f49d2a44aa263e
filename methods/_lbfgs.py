"""L-BFGS curvature pairs and H⁻¹g, for auto-rgn-hessian and auto-rgn-change.

A short L-BFGS run from θ0 gathers (s, y) pairs; the two-loop recursion then
preconditions the gradient at θ0 (why and how: the `ribench.methods.auto_rgn`
docstring). Evaluated through torch.func.functional_call on flattened copies,
so the model's own weights never change. Not a method (the underscore keeps it
out of the registry).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ribench.engine.trainer import position_labels


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


def newton_directions(model, layers: dict, split, indices, preprocess, device, batch_size,
                      hessian: bool, iterations: int, history: int, pairs: str) -> dict:
    """{layer: g_ℓ, or H_ℓ⁻¹ g_ℓ (L-BFGS)} at θ0 on a labelled sample (flattened fp32).

    `layers` maps each layer ℓ to its tensors' names; θ_ℓ is their concatenation.
    """
    if not hessian or pairs == "joint":
        names = [n for members in layers.values() for n in members]
        objective = Objective(model, names, split, indices, preprocess, device, batch_size)

        def block(v: torch.Tensor, layer: str) -> torch.Tensor:     # v's θ_ℓ coordinates
            return torch.cat([v[objective.slice(n)] for n in layers[layer]])

        if not hessian:
            _, g = objective(objective.x0)
            return {layer: block(g, layer) for layer in layers}
        g, S, Y = lbfgs_pairs(objective, objective.x0, iterations, history)
        fallback = float(torch.dot(S[-1], Y[-1]) / torch.dot(Y[-1], Y[-1])) if S else 1.0
        out = {}
        for layer in layers:
            sliced = [(block(s, layer), block(y, layer)) for s, y in zip(S, Y)]
            kept = [(s, y) for s, y in sliced if float(torch.dot(s, y)) > 1e-8 * float(s.norm() * y.norm())]
            out[layer] = two_loop(block(g, layer), [s for s, _ in kept], [y for _, y in kept],
                                  None if kept else fallback)
        return out
    out = {}
    for layer, members in layers.items():     # pairs=layer: NewtonStep(f, ℓ, D), one run per layer
        objective = Objective(model, members, split, indices, preprocess, device, batch_size)
        g, S, Y = lbfgs_pairs(objective, objective.x0, iterations, history)
        out[layer] = two_loop(g, S, Y)
    return out
