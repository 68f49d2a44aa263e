"""The trained weights laid out as one flat buffer, their gradients as another, for the kernels.

A fused optimizer step or DiGraP's segmented projection covers every trained weight in one launch
only if the weights sit in one contiguous buffer (Triton's interpreter has no pointer tables, and a
launch per tensor is what the kernels exist to avoid). `FlatWeights` copies the weights into
`data` and makes each parameter a view of its slice, so the model trains in place; each
parameter's `.grad` is a view of `grad`, into which autograd accumulates. `release` gives every
parameter its own storage back (a saved state dict then holds only its own tensors).
"""

from __future__ import annotations

import torch


class FlatWeights:
    def __init__(self, params: list[torch.nn.Parameter]):
        if not params:
            raise ValueError("no weights to lay out")
        first = params[0]
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a weight appears twice")
        if any(p.dtype != torch.float32 or p.device != first.device for p in params):
            raise ValueError("flat weights must all be float32 on one device")
        self.params = list(params)
        self.sizes = [p.numel() for p in params]
        self.offsets = [0]
        for n in self.sizes:
            self.offsets.append(self.offsets[-1] + n)
        self.data = torch.empty(self.offsets[-1], dtype=torch.float32, device=first.device)
        self.grad = torch.zeros_like(self.data)
        with torch.no_grad():
            for p, lo, hi in zip(self.params, self.offsets, self.offsets[1:]):
                self.data[lo:hi].copy_(p.detach().reshape(-1))
                p.data = self.data[lo:hi].view_as(p)
        self.attach_gradients()

    def __len__(self) -> int:
        return self.offsets[-1]

    def index(self, param) -> int:
        return next(i for i, p in enumerate(self.params) if p is param)

    def span(self, params: list) -> tuple[int, int]:
        """(start, end) of a run of weights that lie next to each other in the buffer, in this order."""
        first = self.index(params[0])
        if [id(p) for p in self.params[first:first + len(params)]] != [id(p) for p in params]:
            raise ValueError("these weights are not consecutive in the flat buffer")
        return self.offsets[first], self.offsets[first + len(params)]

    def attach_gradients(self) -> None:
        """Zero the gradient buffer and point every `.grad` at its slice (autograd adds into it)."""
        self.grad.zero_()
        for p, lo, hi in zip(self.params, self.offsets, self.offsets[1:]):
            p.grad = self.grad[lo:hi].view_as(p)

    def collect_gradients(self) -> None:
        """Copy back a gradient a hook replaced by a new tensor (or dropped), so `grad` is whole."""
        with torch.no_grad():
            for p, lo, hi in zip(self.params, self.offsets, self.offsets[1:]):
                g = p.grad
                if g is None:
                    self.grad[lo:hi].zero_()
                elif g.data_ptr() != self.grad[lo:hi].data_ptr():
                    self.grad[lo:hi].copy_(g.reshape(-1))
                p.grad = self.grad[lo:hi].view_as(p)

    @torch.no_grad()
    def gather(self, tensors: dict, fill: torch.Tensor | float | None = None) -> torch.Tensor:
        """One flat tensor laid out like `data` from {parameter id: tensor}; slices of weights missing
        from `tensors` take `fill` (a flat tensor of the same layout, or a number)."""
        if isinstance(fill, torch.Tensor):
            out = fill.detach().clone()
        else:
            out = torch.full_like(self.data, 0.0 if fill is None else float(fill))
        for p, lo, hi in zip(self.params, self.offsets, self.offsets[1:]):
            t = tensors.get(id(p))
            if t is not None:
                out[lo:hi].copy_(t.detach().reshape(-1))
        return out

    def release(self) -> None:
        """Every weight back in storage of its own (its current value), gradients dropped."""
        with torch.no_grad():
            for p in self.params:
                p.data = p.data.clone()
                p.grad = None
