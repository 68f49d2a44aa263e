"""The loop's optimizer with `--kernels triton`: one fused pass per parameter group over flat weights.

SGD-momentum or AdamW (the protocol's), with a method's closed-form `WeightPenalty` (l2sp, ewc,
ewc-rib, imp-reg) folded into the same pass: `ribench.kernels.penalised_step` holds the kernels and
their torch references. A torch.optim.Optimizer, so the loop's lr schedule (per-group "lr") and the
hooks that read `param_groups` work unchanged. Groups lie next to each other in the flat buffer
(the loop lays them out in group order), so each is one launch over its slice.
"""

from __future__ import annotations

import torch

from ribench.engine.weight_penalty import WeightPenalty
from ribench.kernels import launch_block
from ribench.kernels.flat import FlatWeights
from ribench.kernels.penalised_step import (
    penalised_adamw_torch, penalised_adamw_triton, penalised_sgd_torch, penalised_sgd_triton)

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8       # torch.optim.AdamW's defaults, as the torch path uses


def _flat_penalty(flat: FlatWeights, penalty: WeightPenalty | None):
    """(kind, λ, anchor, weight) as flat buffers. Weights the penalty does not cover get weight 0 (and
    their own value as anchor), so the kernel leaves their gradient alone."""
    if penalty is None or penalty.lam == 0 or not penalty.params:
        return "none", 0.0, None, None
    covered = {id(p) for p in penalty.params}
    anchor = flat.gather({id(p): a for p, a in zip(penalty.params, penalty.anchors)}, fill=flat.data)
    if penalty.weights is not None:
        weight = flat.gather({id(p): w for p, w in zip(penalty.params, penalty.weights)}, fill=0.0)
    elif covered != {id(p) for p in flat.params}:
        weight = flat.gather({id(p): torch.ones_like(p) for p in penalty.params}, fill=0.0)
    else:
        weight = None
    return penalty.kind, float(penalty.lam), anchor, weight


class FusedPenalisedOptimizer(torch.optim.Optimizer):
    def __init__(self, flat: FlatWeights, groups: list[dict], protocol, penalty: WeightPenalty | None = None,
                 use_triton: bool = True):
        super().__init__(groups, {"lr": protocol.lr})
        self.flat, self.use_triton = flat, use_triton
        self.kind = protocol.optimizer
        self.momentum, self.weight_decay = protocol.momentum, protocol.weight_decay
        self.spans = [flat.span(group["params"]) for group in self.param_groups]
        self.penalty_kind, self.lam, self.anchor, self.weight = _flat_penalty(flat, penalty)
        if penalty is not None and self.penalty_kind != "none":
            penalty.folded = True                  # the method's after_backward no longer adds it
        moments = 1 if self.kind == "sgd" else 2
        self.buffers = [torch.zeros_like(flat.data) for _ in range(moments)]
        self.steps = 0
        self.block = launch_block(flat.data)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.flat.attach_gradients()               # gradients stay views of the flat buffer

    @torch.no_grad()
    def step(self, closure=None):
        self.flat.collect_gradients()
        self.steps += 1
        flat = self.flat
        for group, (lo, hi) in zip(self.param_groups, self.spans):
            part = slice(lo, hi)
            anchor = None if self.anchor is None else self.anchor[part]
            weight = None if self.weight is None else self.weight[part]
            common = dict(lr=group["lr"], lam=self.lam, penalty=self.penalty_kind,
                          **({"block": self.block} if self.use_triton else {}))
            if self.kind == "sgd":
                fn = penalised_sgd_triton if self.use_triton else penalised_sgd_torch
                fn(flat.data[part], flat.grad[part], self.buffers[0][part], anchor, weight, **common,
                   momentum=self.momentum, first=self.steps == 1, weight_decay=self.weight_decay)
            else:
                fn = penalised_adamw_triton if self.use_triton else penalised_adamw_torch
                fn(flat.data[part], flat.grad[part], self.buffers[0][part], self.buffers[1][part], anchor,
                   weight, **common, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=self.weight_decay,
                   step=self.steps)
        return None
