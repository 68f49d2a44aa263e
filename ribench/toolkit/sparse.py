"""Masked fine-tuning with optimizer state only for the masked weights.

SAFT and importance-guided selective fine-tuning train a fixed subset of the
image classifier's scalar weights and keep every other one at θ0. Training the
whole tensors and resetting the unmasked entries after each step (SAFT,
Algorithm 1) would hold optimizer state (momentum, Adam moments) for every
weight; `SparseParameters` holds it only for the masked ones:

- a tensor whose entries are all masked is optimized as itself (so a full mask
  is exactly `ft`, bit for bit);
- a partially masked tensor is optimized through a 1-D stand-in Parameter with
  its masked values, gathered at the flat indices `idx`: before each optimizer
  step the stand-in takes `p.grad.view(-1)[idx]` (and `p.view(-1)[idx]`, the
  current values), after the step its values are scattered back into
  `p.view(-1)[idx]`;
- a tensor with no masked entry gets no gradient and no state.

Unmasked entries are never written, so they stay bit-identical to θ0 whatever
the optimizer does (weight decay and momentum only ever see the stand-ins).
The optimizer is elementwise (SGD, AdamW), so the masked entries follow exactly
the trajectory they would follow in a dense run with the unmasked entries reset
after every step.

The gather runs in an optimizer step pre-hook, after every `after_backward`
(a regularizer joining the method adds its gradient before it is read).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from fractions import Fraction
from typing import Mapping

import torch

from ribench.errors import ConfigError, RibenchError
from ribench.engine.method import Method, ParamGroup
from ribench.toolkit.layers import image_parameters


def mask_size(fraction: float, total: int) -> int:
    """⌊fraction·total⌋, with the fraction read as the decimal it was written as (0.001 is 1/1000)."""
    return math.floor(Fraction(repr(float(fraction))) * total)


@torch.no_grad()
def top_entries(scores: Mapping[str, torch.Tensor], count: int, largest: bool = True) -> "OrderedDict[str, torch.Tensor]":
    """{name: sorted flat indices} of the `count` entries with the largest (or smallest) score, over all tensors at once.

    Ties are broken by position: the scores are laid end to end in the mapping's
    order (row-major within a tensor) and the order is a stable sort by
    (−score, flat position) — among equal scores the earlier entry wins. The
    selection is a threshold (k-th value) plus the first tied entries, O(D).
    """
    names = list(scores)
    flat = torch.cat([scores[n].detach().reshape(-1).float() for n in names]) if names else torch.zeros(0)
    total = flat.numel()
    if not 0 <= count <= total:
        raise ValueError(f"cannot select {count} of {total} entries")
    if not largest:
        flat = -flat
    if count == 0:
        chosen = flat.new_zeros(total, dtype=torch.bool)
    elif count == total:
        chosen = flat.new_ones(total, dtype=torch.bool)
    else:
        threshold = torch.kthvalue(-flat, count).values.neg()    # the count-th largest score
        chosen = flat > threshold
        ties = torch.nonzero(flat == threshold).flatten()        # in flat order
        chosen[ties[: count - int(chosen.sum())]] = True
    out, start = OrderedDict(), 0
    for n in names:
        size = scores[n].numel()
        out[n] = torch.nonzero(chosen[start:start + size]).flatten()
        start += size
    return out


class SparseParameters:
    """Optimizer stand-ins for the masked entries of model weights (see the module docstring)."""

    def __init__(self, params: Mapping[str, torch.nn.Parameter], indices: Mapping[str, torch.Tensor]):
        self.names: list[str] = []
        self.dense: dict[str, torch.nn.Parameter] = {}
        self.sparse: dict[str, tuple[torch.nn.Parameter, torch.Tensor, torch.nn.Parameter]] = {}
        self._optimized: list[torch.nn.Parameter] = []
        for name, p in params.items():
            idx = indices.get(name)
            if idx is None or idx.numel() == 0:
                continue
            self.names.append(name)
            if idx.numel() == p.numel():
                self.dense[name] = p
                self._optimized.append(p)
            else:
                if not p.is_contiguous():
                    raise RibenchError(f"masked weight {name} is not contiguous")
                idx = idx.to(device=p.device, dtype=torch.long)
                standin = torch.nn.Parameter(p.detach().reshape(-1).index_select(0, idx).clone())
                self.sparse[name] = (p, idx, standin)
                self._optimized.append(standin)
        self._hooked = None

    # ---- what the loop needs ---------------------------------------------------------
    def optimized(self) -> list[torch.nn.Parameter]:
        """What the optimizer holds: whole tensors and stand-ins, in model order."""
        return list(self._optimized)

    def gradient_parameters(self) -> list[torch.nn.Parameter]:
        """Model weights with at least one masked entry (the ones that need gradients), in model order."""
        return [self.dense[n] if n in self.dense else self.sparse[n][0] for n in self.names]

    def check(self) -> None:
        """Refuse to train when the loop did not give the masked weights gradients."""
        for name, p in zip(self.names, self.gradient_parameters()):
            if not p.requires_grad:
                raise RibenchError(
                    f"masked weight {name} gets no gradient: the loop did not honour the method's "
                    "gradient_parameters")

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Gather gradients into the stand-ins at the start of every optimizer step (once per optimizer)."""
        if self._hooked is optimizer:
            return
        optimizer.register_step_pre_hook(lambda *_: self.gather())
        self._hooked = optimizer

    @torch.no_grad()
    def gather(self) -> None:
        for p, idx, standin in self.sparse.values():
            standin.copy_(p.reshape(-1).index_select(0, idx))
            standin.grad = None if p.grad is None else p.grad.reshape(-1).index_select(0, idx)
            p.grad = None                        # the dense gradient is not needed any more

    @torch.no_grad()
    def scatter(self) -> None:
        for p, idx, standin in self.sparse.values():
            p.view(-1).index_copy_(0, idx, standin)

    # ---- inspection ----------------------------------------------------------------
    def indices(self) -> "OrderedDict[str, torch.Tensor]":
        out = OrderedDict()
        for name in self.names:
            if name in self.dense:
                p = self.dense[name]
                out[name] = torch.arange(p.numel(), device=p.device)
            else:
                out[name] = self.sparse[name][1]
        return out

    def mask(self, name: str, param: torch.Tensor) -> torch.Tensor:
        """The boolean mask of one weight (all False if it has no masked entry)."""
        m = torch.zeros(param.numel(), dtype=torch.bool, device=param.device)
        if name in self.dense:
            m[:] = True
        elif name in self.sparse:
            m[self.sparse[name][1]] = True
        return m.view(param.shape)

    def count(self) -> int:
        """Number of masked scalar weights."""
        return sum(p.numel() for p in self.dense.values()) + sum(i.numel() for _, i, _ in self.sparse.values())

    def overhead_bytes(self) -> int:
        """Bytes of the stand-ins and their index vectors (the price of sparse state)."""
        return sum(s.numel() * s.element_size() + i.numel() * i.element_size() for _, i, s in self.sparse.values())


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps in its state (momentum buffers, Adam moments, steps)."""
    return sum(t.numel() * t.element_size()
               for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))


class MaskedFineTune(Method):
    """Train a fixed mask of the image classifier's weights; the rest stay at θ0.

    Subclasses give `scores(ctx)` ({name: score} over `ribench.toolkit.layers.image_parameters`,
    higher is selected) and `mask_count(total)`. The mask is chosen once, in
    `prepare`, at the starting weights.
    """

    select_largest = True

    def scores(self, ctx) -> Mapping[str, torch.Tensor]:
        raise NotImplementedError

    def mask_count(self, total: int) -> int:
        raise NotImplementedError

    def ranked_parameters(self, ctx) -> "OrderedDict[str, torch.nn.Parameter]":
        """The weights the mask is chosen among (default: the image classifier's)."""
        return image_parameters(ctx.model)

    def prepare(self, ctx):
        params = self.ranked_parameters(ctx)
        scores = self.scores(ctx)
        total = sum(p.numel() for p in params.values())
        count = self.mask_count(total)
        if count == 0:
            raise ConfigError(f"{self.name}: the mask is empty (0 of {total} weights); nothing would train")
        chosen = top_entries({n: scores[n] for n in params}, count, largest=self.select_largest)
        ctx.state["sparse"] = SparseParameters(params, chosen)
        ctx.state["sparse_total"] = total

    def param_groups(self, ctx):
        return [ParamGroup(ctx.state["sparse"].optimized(), 1.0, "masked")]

    def gradient_parameters(self, ctx, groups):
        return ctx.state["sparse"].gradient_parameters()

    def compute_loss(self, ctx, batch):
        if ctx.step == 0:
            ctx.state["sparse"].check()
        return super().compute_loss(ctx, batch)

    def after_backward(self, ctx):
        ctx.state["sparse"].attach(ctx.optimizer)

    def after_step(self, ctx):
        ctx.state["sparse"].scatter()
