"""Trained weights as what changed from θ0, and the weight-space arithmetic of derived methods.

A stored cell keeps only the tensors that differ from the pretrained model (all of
them after `ft`, just the head after `lp`), so storing the cells that `wiseft`,
`soup` and `lpft` need costs no more than the change itself.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ribench.errors import StoreError


def changed_tensors(model: torch.nn.Module, reference: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Entries of model's state dict that are not bit-identical to reference's."""
    ref = reference.state_dict()
    out = {}
    for name, value in model.state_dict().items():
        before = ref.get(name)
        if before is None or before.shape != value.shape or not torch.equal(before.to(value.device), value):
            out[name] = value.detach()
    return out


def full_state(reference: torch.nn.Module, changed: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """θ0's state dict with `changed` laid over it."""
    state = {k: v.detach() for k, v in reference.state_dict().items()}
    unknown = sorted(set(changed) - set(state))
    if unknown:
        raise StoreError(f"stored weights do not fit this model (e.g. '{unknown[0]}')")
    state.update({k: v.to(state[k].device) for k, v in changed.items()})
    return state


def load_changed(model: torch.nn.Module, changed: Mapping[str, torch.Tensor]) -> None:
    full_names = set(model.state_dict())
    unknown = sorted(set(changed) - full_names)
    if unknown:
        raise StoreError(f"stored weights do not fit this model (e.g. '{unknown[0]}')")
    model.load_state_dict(dict(changed), strict=False)


@torch.no_grad()
def weighted_average(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict:
    """Σ_k w_k·θ_k per floating-point tensor; other entries (int buffers) from the first state.

    Written as a plain sum so that a weight of exactly 1 (and 0 for the rest)
    returns that state bit for bit.
    """
    out = {}
    for name, first in states[0].items():
        if not first.is_floating_point():
            out[name] = first
            continue
        total = None
        for state, w in zip(states, weights):
            if w == 0:
                continue
            term = state[name] if w == 1 else state[name] * w
            total = term.clone() if total is None else total + term
        out[name] = total if total is not None else torch.zeros_like(first)
    return out
