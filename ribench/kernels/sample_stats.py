"""Per-sample gradient statistics of a linear map, from one ordinary batched backward.

For y_n = x_n Wᵀ (x_n: T tokens × I, y_n: T × O) sample n's weight gradient is
G_n = g_nᵀ x_n (O × I), g_n = ∂L_n/∂y_n. EWC's Fisher needs Σ_n G_n² and the importance
scores of imp-reg / imp-select need Σ_n |G_n|: both are non-linear in G_n, so a batched
gradient (Σ_n G_n) does not give them, and `vmap(grad)` writes every G_n to memory (N × O × I).
The kernel below computes each G_n one (O, I) tile at a time on chip and adds its square and
its magnitude to the running sums, so no per-sample gradient ever reaches memory: it reads
x and g once per tile row/column and writes the two sums once.
"""

from __future__ import annotations

import torch

from ribench.kernels import interpreting

try:
    import triton
    import triton.language as tl
except ImportError:        # optional: the torch path below serves without it
    triton = None

STATISTICS = ("sq", "abs")


def linear_sample_stats_torch(x: torch.Tensor, g: torch.Tensor, totals: dict[str, torch.Tensor]) -> None:
    """Reference: add Σ_n G_n² and/or Σ_n |G_n| to `totals` (x: N×T×I, g: N×T×O; totals O×I)."""
    per_sample = torch.einsum("nto,nti->noi", g.double(), x.double())
    if "sq" in totals:
        totals["sq"] += per_sample.pow(2).sum(0).to(totals["sq"].dtype)
    if "abs" in totals:
        totals["abs"] += per_sample.abs().sum(0).to(totals["abs"].dtype)


if triton is not None:
    @triton.jit
    def _linear_sample_stats(x_ptr, g_ptr, sq_ptr, abs_ptr, n_samples, tokens, n_in, n_out,
                             WANT_SQ: tl.constexpr, WANT_ABS: tl.constexpr, PRECISION: tl.constexpr,
                             BLOCK_T: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr):
        # one program owns one (BLOCK_O × BLOCK_I) tile of the O × I sums
        offs_o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
        offs_i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
        in_o = offs_o < n_out
        in_i = offs_i < n_in
        sq = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
        mag = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
        for n in range(0, n_samples):
            grad = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)      # this tile of G_n, never stored
            for t0 in range(0, tokens, BLOCK_T):
                offs_t = t0 + tl.arange(0, BLOCK_T)
                in_t = offs_t < tokens
                g = tl.load(g_ptr + (n * tokens + offs_t[:, None]) * n_out + offs_o[None, :],
                            mask=in_t[:, None] & in_o[None, :], other=0.0)
                x = tl.load(x_ptr + (n * tokens + offs_t[:, None]) * n_in + offs_i[None, :],
                            mask=in_t[:, None] & in_i[None, :], other=0.0)
                grad += tl.dot(tl.trans(g), x, input_precision=PRECISION)
            if WANT_SQ:
                sq += grad * grad
            if WANT_ABS:
                mag += tl.abs(grad)
        tile = offs_o[:, None] * n_in + offs_i[None, :]
        inside = in_o[:, None] & in_i[None, :]
        if WANT_SQ:
            tl.store(sq_ptr + tile, tl.load(sq_ptr + tile, mask=inside, other=0.0) + sq, mask=inside)
        if WANT_ABS:
            tl.store(abs_ptr + tile, tl.load(abs_ptr + tile, mask=inside, other=0.0) + mag, mask=inside)


def _blocks(tokens: int, n_in: int, n_out: int) -> tuple[int, int, int]:
    """Tile sizes: the interpreter pays per program instance, so it gets large tiles."""
    if interpreting():
        return 16, max(16, min(128, triton.next_power_of_2(n_out))), max(16, min(128, triton.next_power_of_2(n_in)))
    return 32, 64, 64


def linear_sample_stats_triton(x: torch.Tensor, g: torch.Tensor, totals: dict[str, torch.Tensor]) -> None:
    """`linear_sample_stats_torch` as one kernel launch; `totals` are float32, contiguous, O×I."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    n_samples, tokens, n_in = x.shape
    n_out = g.shape[-1]
    x = x.float().contiguous()
    g = g.float().contiguous()
    dummy = next(iter(totals.values()))
    sq = totals.get("sq", dummy)
    mag = totals.get("abs", dummy)
    for t in (sq, mag):
        if t.dtype != torch.float32 or not t.is_contiguous() or t.shape != (n_out, n_in):
            raise ValueError(f"totals must be contiguous float32 of shape {(n_out, n_in)}, got {t.dtype} {tuple(t.shape)}")
    block_t, block_o, block_i = _blocks(tokens, n_in, n_out)
    grid = (triton.cdiv(n_out, block_o), triton.cdiv(n_in, block_i))
    _linear_sample_stats[grid](x, g, sq, mag, n_samples, tokens, n_in, n_out,
                               WANT_SQ="sq" in totals, WANT_ABS="abs" in totals,
                               PRECISION="ieee" if interpreting() else "tf32",
                               BLOCK_T=block_t, BLOCK_O=block_o, BLOCK_I=block_i)
