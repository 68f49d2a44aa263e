"""The OTDD ground cost: c = λx·‖x − x'‖² + λy·W²(y, y') (OTDD.md, "Definition"), as float32 rows for
the fast solver, stored whole when it fits in memory and recomputed row block by row block otherwise,
or as the whole float64 matrix the exact and Sinkhorn solvers take.

Built as one matrix product plus a lookup in the class-pair table, never a Python loop over
pairs. The points are centred on their joint mean first, so that ‖x‖² + ‖x'‖² − 2x·x' does
not lose the small distances to cancellation in float32.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["BLOCK_ROWS", "STORED_COST_BYTES", "GroundCost", "stored_cost_budget"]

BLOCK_ROWS = 512                  # rows per block: a block of a 5,000-column cost (10 MB) stays in cache
STORED_COST_BYTES = 4 << 30       # on a CPU, keep the whole n×m float32 cost up to this (n = m ≈ 32,000)
GPU_MEMORY_SHARE = 0.5            # on a GPU, up to this share of its free memory (H200: n = m ≈ 180,000)


def stored_cost_budget(device: torch.device) -> int:
    if device.type == "cuda":
        return int(GPU_MEMORY_SHARE * torch.cuda.mem_get_info(device)[0])
    return STORED_COST_BYTES


class GroundCost:
    """Rows of the n×m ground cost between two labelled point sets."""

    def __init__(self, xa: torch.Tensor, xb: torch.Tensor, codes_a: torch.Tensor | None = None,
                 codes_b: torch.Tensor | None = None, table: torch.Tensor | None = None,
                 lambda_x: float = 1.0, lambda_y: float = 1.0, stored_bytes: float | None = None,
                 dtype: torch.dtype = torch.float32):
        centre = torch.cat([xa, xb]).to(torch.float64).mean(0)
        self.xa = (xa.to(torch.float64) - centre).to(dtype)
        self.xb = (xb.to(torch.float64) - centre).to(dtype)
        self.norms_a = self.xa.pow(2).sum(1)
        self.norms_b = self.xb.pow(2).sum(1)
        self.lambda_x = float(lambda_x)
        self.labels = None
        if table is not None and lambda_y > 0:
            # the label cost of row i is row codes_a[i] of this (K_a × m) table
            self.labels = (lambda_y * table.to(dtype))[:, codes_b].contiguous()
            self.codes_a = codes_a
        self.shape = (len(xa), len(xb))
        self.device = xa.device
        self.matrix = None
        budget = stored_cost_budget(self.device) if stored_bytes is None else stored_bytes
        if self.shape[0] * self.shape[1] * self.xa.element_size() <= budget:
            self.matrix = torch.empty(self.shape, dtype=dtype, device=self.device)
            for start in range(0, self.shape[0], BLOCK_ROWS):
                rows = torch.arange(start, min(start + BLOCK_ROWS, self.shape[0]), device=self.device)
                self._compute(rows, out=self.matrix[start:start + len(rows)])

    @property
    def stored(self) -> bool:
        return self.matrix is not None

    def _compute(self, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        squared = torch.addmm(self.norms_a[rows, None] + self.norms_b[None, :], self.xa[rows], self.xb.T,
                              beta=1.0, alpha=-2.0, out=out)
        squared.clamp_min_(0.0)
        if self.lambda_x != 1.0:
            squared.mul_(self.lambda_x)
        if self.labels is not None:
            squared.add_(self.labels.index_select(0, self.codes_a[rows]))
        return squared

    def rows(self, rows: torch.Tensor) -> torch.Tensor:
        """A fresh (len(rows), m) tensor of cost rows, free to be modified."""
        if self.matrix is not None:
            return self.matrix.index_select(0, rows)
        return self._compute(rows)

    def blocks(self):
        """(first row, block) over all rows, in order; a block may be a view of the stored cost."""
        for start in range(0, self.shape[0], BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, self.shape[0])
            if self.matrix is not None:
                yield start, self.matrix[start:stop]
            else:
                yield start, self._compute(torch.arange(start, stop, device=self.device))

    def host_matrix(self) -> np.ndarray | None:
        """The stored cost as a NumPy view, for the auction's small bidding rounds on a CPU."""
        if self.matrix is not None and self.device.type == "cpu":
            return self.matrix.numpy()
        return None

    def entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """c[rows[k], cols[k]] in float64."""
        r = torch.as_tensor(rows, device=self.device)
        c = torch.as_tensor(cols, device=self.device)
        if self.matrix is not None:
            return self.matrix[r, c].double().cpu().numpy()
        values = (self.xa[r] - self.xb[c]).double().pow(2).sum(1) * self.lambda_x
        if self.labels is not None:
            values += self.labels[self.codes_a[r], c].double()
        return values.cpu().numpy()

    def span(self) -> float:
        """max c − min c, the scale the auction's first ε is taken from."""
        low, high = float("inf"), float("-inf")
        for _, block in self.blocks():
            low, high = min(low, float(block.min())), max(high, float(block.max()))
        return high - low
