"""The fast OTDD² solver: an ε-scaling auction with a primal–dual certificate.

Two equal-size uniform samples make OTDD² an assignment problem (Birkhoff: the optimal
plan is a permutation). Bertsekas' auction algorithm solves it by letting every unassigned
point i of A bid for the point j of B that minimises c_ij + p_j, raising the price p_j by
the gap to its second choice plus ε ("The auction algorithm: a distributed relaxation method
for the assignment problem", Ann. Oper. Res. 1988). Here the bids of one round are placed
together (the Jacobi variant) and ε shrinks by a constant factor between phases
(ε-scaling, Bertsekas & Eckstein 1988); points still within the new ε of their best choice
keep their assignment between phases.

Every phase ends in a certificate, not an estimate: the assignment σ is a feasible plan, so
U = mean_i c_iσ(i) ≥ OT, and the prices give the dual lower bound
L = mean_i min_j (c_ij + p_j) − mean_j p_j ≤ OT (weak duality). The solver stops when
U − L ≤ 2·tolerance·L and reports (U + L)/2, whose error is then at most tolerance·OT.
ε-complementary slackness bounds U − L by ε, so each phase's ε is chosen from that target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ribench.distance.cost import BLOCK_ROWS, GroundCost
from ribench.distance.solvers import DistanceError

__all__ = ["AuctionResult", "auction_ot"]

EPSILON_FACTOR = 5.0          # ε shrinks by this factor between phases
FIRST_EPSILON = 0.1           # × (max c − min c)
HOST_ROUND_ROWS = 256         # rounds with at most this many bidders run in NumPy on a CPU (less overhead)
MAX_PHASES = 40


@dataclass
class AuctionResult:
    value: float              # (U + L)/2
    lower: float              # dual bound L ≤ OT
    upper: float              # primal U ≥ OT, the cost of the assignment found
    phases: int
    rounds: int

    @property
    def gap(self) -> float:
        """Certified relative error bound of `value`: |value − OT| ≤ gap·OT."""
        return (self.upper - self.lower) / (2 * self.lower) if self.lower > 0 else math.inf


class AuctionStalled(RuntimeError):
    """float32 prices cannot resolve the ε the target needs: the caller solves the pair exactly."""


def _best_two(cost: GroundCost, host: np.ndarray | None, bidders: np.ndarray, prices: np.ndarray,
              prices_t: torch.Tensor):
    """For each bidder i: j1 = argmin_j c_ij + p_j, and the smallest and second-smallest values."""
    if host is not None and len(bidders) <= HOST_ROUND_ROWS:
        values = host[bidders] + prices[None, :]
        best = values.argmin(1)
        rows = np.arange(len(bidders))
        first = values[rows, best]
        values[rows, best] = np.inf
        return best, first, values.min(1)
    index = torch.as_tensor(bidders, device=cost.device)
    picks, firsts, seconds = [], [], []
    for start in range(0, len(bidders), BLOCK_ROWS):
        values = cost.rows(index[start:start + BLOCK_ROWS]).add_(prices_t[None, :])
        first, best = values.min(1)
        values.scatter_(1, best[:, None], math.inf)
        picks.append(best)
        firsts.append(first)
        seconds.append(values.amin(1))
    return (torch.cat(picks).cpu().numpy(), torch.cat(firsts).cpu().numpy().astype(np.float64),
            torch.cat(seconds).cpu().numpy().astype(np.float64))


def _phase(cost: GroundCost, host, prices: np.ndarray, prices_t: torch.Tensor, epsilon: float,
           owner: np.ndarray, assigned: np.ndarray, max_bids: int) -> int:
    """Jacobi auction rounds until every point of A is assigned; returns the number of rounds."""
    bidders = np.flatnonzero(assigned < 0)
    rounds = bids = 0
    single = np.zeros(1, dtype=np.int64)
    while len(bidders):
        rounds += 1
        bids += len(bidders)
        if bids > max_bids:
            raise DistanceError(f"the auction did not finish within {max_bids // len(owner)} bids per point "
                                f"in a phase (ε = {epsilon:.3g}); raise --max-iterations")
        best, first, second = _best_two(cost, host, bidders, prices, prices_t)
        second = np.where(np.isfinite(second), second, first)     # a single column: bid ε
        bid = prices[best] + (second - first) + epsilon
        if len(bidders) == 1:
            winners = single
        else:   # the highest bid for each object wins: sort by (object, bid), take each group's last
            order = np.lexsort((bid, best))
            objects = best[order]
            last = np.empty(len(order), dtype=bool)
            last[:-1] = objects[1:] != objects[:-1]
            last[-1] = True
            winners = order[last]
        won = best[winners]
        people = bidders[winners]
        outbid = owner[won]
        outbid = outbid[outbid >= 0]
        assigned[outbid] = -1
        owner[won] = people
        assigned[people] = won
        prices[won] = bid[winners]
        if host is None:
            prices_t[torch.as_tensor(won, device=prices_t.device)] = torch.as_tensor(
                bid[winners], dtype=prices_t.dtype, device=prices_t.device)
        losing = np.ones(len(bidders), dtype=bool)
        losing[winners] = False
        bidders = np.concatenate([bidders[losing], outbid])
    return rounds


def _row_minima(cost: GroundCost, prices_t: torch.Tensor) -> np.ndarray:
    """π_i = min_j c_ij + p_j: one pass over the cost."""
    out = torch.empty(cost.shape[0], dtype=torch.float32, device=cost.device)
    for start, block in cost.blocks():
        torch.amin(block + prices_t[None, :], dim=1, out=out[start:start + len(block)])
    return out.cpu().numpy().astype(np.float64)


def auction_ot(cost: GroundCost, tolerance: float = 1e-3, max_bids_per_point: int | None = None) -> AuctionResult:
    """OT between two uniform samples of equal size n under `cost`, within `tolerance`·OT.

    Raises AuctionStalled when float32 prices cannot resolve the ε the target needs (the
    caller then solves the pair exactly), DistanceError when a phase exceeds its bid cap
    (`max_bids_per_point`, default 400 per point: a price war, never seen in practice).
    """
    n, m = cost.shape
    if n != m:
        raise ValueError(f"the auction needs two samples of equal size, got {n} and {m}")
    host = cost.host_matrix()
    prices = np.zeros(m, dtype=np.float32)
    # on a CPU the tensor shares the array's memory: updating one updates the other
    prices_t = torch.from_numpy(prices) if host is not None else torch.zeros(m, device=cost.device)
    span = cost.span()
    if span == 0:
        value = float(cost.entries(np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64))[0])
        return AuctionResult(value, value, value, 0, 0)
    resolution = 4 * np.finfo(np.float32).eps * span      # below this, float32 prices stop moving
    epsilon = FIRST_EPSILON * span
    max_bids = (max_bids_per_point or 400) * n
    owner = np.full(m, -1, dtype=np.int64)
    assigned = np.full(n, -1, dtype=np.int64)
    everyone = np.arange(n)
    rounds = 0
    for phase in range(1, MAX_PHASES + 1):
        rounds += _phase(cost, host, prices, prices_t, np.float32(epsilon), owner, assigned, max_bids)
        own = cost.entries(everyone, assigned)
        best = _row_minima(cost, prices_t)
        upper = float(own.mean())
        lower = float(best.mean() - prices.astype(np.float64).mean())
        result = AuctionResult(0.5 * (upper + lower), lower, upper, phase, rounds)
        if upper - lower <= 2 * tolerance * max(lower, 0.0):
            return result
        target = tolerance * max(lower, 0.0)
        if target < resolution and epsilon <= resolution:
            raise AuctionStalled(f"OT ≈ {upper:.3g} is too small against the cost's range {span:.3g} "
                                 f"for float32 prices")
        epsilon = max(epsilon / EPSILON_FACTOR, target, resolution)
        # ε-complementary slackness for the new ε: only the points that violate it bid again
        slack = own + prices[assigned].astype(np.float64) - best
        rebid = np.flatnonzero(slack > epsilon)
        owner[assigned[rebid]] = -1
        assigned[rebid] = -1
    raise AuctionStalled(f"no certificate within {MAX_PHASES} phases (gap {result.gap:.2e})")
