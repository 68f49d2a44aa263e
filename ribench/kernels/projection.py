"""DiGraP's per-layer projection (Algorithm 1, steps 1, 3, 4) as two launches over flat buffers.

Per layer l, with r = θ − θ0 and the previous step's displacement r⁻:
    step 1 needs ⟨g, r⁻⟩, ‖g‖², ‖r⁻‖² (the hypergradient's cosine),
    step 3 needs ⟨g, r⟩ and ‖r‖²        (c_l = ⟨g, r⟩/‖r‖² where ⟨g, r⟩ < 0),
    step 4 is g ← g − ω_l·c_l·r.
The torch code issues a dot, a norm and a subtraction per tensor, ≈ 750 small launches a step on
ViT-B/16. Here one segmented reduction computes the five sums of every layer at once (each
program owns a block of one layer, `block_layer` says which, and adds its partial sums to its
layer's slot), and one update pass applies step 4 and writes r for the next step. The per-layer
ω update between them (step 2) is a handful of scalars per layer and stays in torch.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:        # optional: the torch path serves without it
    triton = None

BLOCK = 1024
SUMS = ("g_r", "r_r", "g_prev", "g_g", "prev_prev")


def layer_blocks(sizes: list[int], block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(start offset of each layer in the flat buffer, the layer of each program's block): blocks never
    straddle two layers, so a program adds to one layer's sums."""
    starts, owners, offset = [], [], 0
    for layer, size in enumerate(sizes):
        starts.append(offset)
        owners += [layer] * -(-size // block)
        offset += size
    return torch.tensor(starts + [offset], dtype=torch.int64), torch.tensor(owners, dtype=torch.int32)


def layer_sums_torch(theta, anchor, grad, prev_r, starts: torch.Tensor) -> torch.Tensor:
    """Reference: (layers × 5) float64 sums ⟨g,r⟩, ‖r‖², ⟨g,r⁻⟩, ‖g‖², ‖r⁻‖² per layer."""
    r = (theta - anchor).double()
    g, prev = grad.double(), prev_r.double()
    bounds = starts.tolist()
    rows = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        gs, rs, ps = g[lo:hi], r[lo:hi], prev[lo:hi]
        rows.append(torch.stack([gs @ rs, rs @ rs, gs @ ps, gs @ gs, ps @ ps]))
    return torch.stack(rows)


def project_torch(theta, anchor, grad, r_out, coef: torch.Tensor, starts: torch.Tensor) -> None:
    """Reference of step 4: g ← g − coef_l·r per layer, in place; r written to `r_out`."""
    torch.sub(theta, anchor, out=r_out)
    bounds = starts.tolist()
    for layer, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        grad[lo:hi] -= float(coef[layer]) * r_out[lo:hi]


if triton is not None:
    @triton.jit
    def _this_block(theta_ptr, anchor_ptr, grad_ptr, starts_ptr, owner_ptr, first_block_ptr, BLOCK: tl.constexpr):
        """This program's layer, its offsets in the flat buffers, their mask, r = θ − θ0 and g there."""
        block = tl.program_id(0)
        layer = tl.load(owner_ptr + block)
        lo = tl.load(starts_ptr + layer)
        hi = tl.load(starts_ptr + layer + 1)
        offs = lo + (block - tl.load(first_block_ptr + layer)) * BLOCK + tl.arange(0, BLOCK)
        inside = offs < hi
        r = tl.load(theta_ptr + offs, mask=inside, other=0.0) - tl.load(anchor_ptr + offs, mask=inside, other=0.0)
        g = tl.load(grad_ptr + offs, mask=inside, other=0.0)
        return layer, offs, inside, r, g

    @triton.jit
    def _layer_sums(theta_ptr, anchor_ptr, grad_ptr, prev_ptr, starts_ptr, owner_ptr, first_block_ptr, sums_ptr,
                    BLOCK: tl.constexpr):
        layer, offs, inside, r, g = _this_block(theta_ptr, anchor_ptr, grad_ptr, starts_ptr, owner_ptr,
                                                first_block_ptr, BLOCK)
        prev = tl.load(prev_ptr + offs, mask=inside, other=0.0)
        row = sums_ptr + layer * 5
        tl.atomic_add(row + 0, tl.sum(g * r, axis=0))
        tl.atomic_add(row + 1, tl.sum(r * r, axis=0))
        tl.atomic_add(row + 2, tl.sum(g * prev, axis=0))
        tl.atomic_add(row + 3, tl.sum(g * g, axis=0))
        tl.atomic_add(row + 4, tl.sum(prev * prev, axis=0))

    @triton.jit
    def _project(theta_ptr, anchor_ptr, grad_ptr, r_ptr, coef_ptr, starts_ptr, owner_ptr, first_block_ptr,
                 BLOCK: tl.constexpr):
        layer, offs, inside, r, g = _this_block(theta_ptr, anchor_ptr, grad_ptr, starts_ptr, owner_ptr,
                                                first_block_ptr, BLOCK)
        tl.store(r_ptr + offs, r, mask=inside)
        tl.store(grad_ptr + offs, g - tl.load(coef_ptr + layer) * r, mask=inside)


def _first_blocks(owners: torch.Tensor, layers: int) -> torch.Tensor:
    counts = torch.bincount(owners.long(), minlength=layers)
    return (torch.cumsum(counts, 0) - counts).to(torch.int32)


def layer_sums_triton(theta, anchor, grad, prev_r, starts: torch.Tensor, owners: torch.Tensor,
                      block: int = BLOCK) -> torch.Tensor:
    """`layer_sums_torch` in one launch (float32 sums, returned as float64); `owners` from
    `layer_blocks(sizes, block)`."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    layers = len(starts) - 1
    sums = torch.zeros(layers, 5, dtype=torch.float32, device=theta.device)
    starts, owners = starts.to(theta.device), owners.to(theta.device)
    _layer_sums[(len(owners),)](theta, anchor, grad, prev_r, starts, owners, _first_blocks(owners, layers), sums,
                                BLOCK=block)
    return sums.double()


def project_triton(theta, anchor, grad, r_out, coef: torch.Tensor, starts: torch.Tensor,
                   owners: torch.Tensor, block: int = BLOCK) -> None:
    """`project_torch` in one launch."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    layers = len(starts) - 1
    starts, owners = starts.to(theta.device), owners.to(theta.device)
    _project[(len(owners),)](theta, anchor, grad, r_out, coef.to(device=theta.device, dtype=torch.float32),
                             starts, owners, _first_blocks(owners, layers), BLOCK=block)
