"""The two optimal-transport solvers behind OTDD², each checking its own result: a solver
that stops short raises `DistanceError` instead of returning a wrong number (OTDD.md)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import torch

from ribench.errors import RibenchError

__all__ = ["DistanceError", "entropic_ot", "exact_ot"]

EXACT_MIN_ITERATIONS = 10_000_000     # POT's default (100 000) stops early at n≈5000 (OTDD.md)
SINKHORN_MAX_ITERATIONS = 10_000
SINKHORN_TOLERANCE = 1e-4             # marginal violation, relative to the marginal's norm
LOG_DOMAIN_ABOVE = 500.0              # max(C)/ε beyond which exp(−C/ε) risks underflowing whole rows


class DistanceError(RibenchError):
    """The optimal-transport solver failed; a distance is never silently replaced by 0."""


def exact_ot(cost: torch.Tensor, max_iterations: int | None, what: str) -> float:
    """Network simplex with a cap raised to the problem's size (OTDD.md); any failure raises."""
    n, m = cost.shape
    cap = max_iterations or max(EXACT_MIN_ITERATIONS, 10 * n * m)
    matrix = cost.detach().cpu().numpy()
    if not np.isfinite(matrix).all():
        raise DistanceError(f"{what}: the ground cost has non-finite entries")
    try:
        with warnings.catch_warnings():    # POT warns and returns a value; we check its result code instead
            warnings.simplefilter("ignore", UserWarning)
            value, log = ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), matrix, numItermax=cap, log=True)
    except Exception as error:   # the reference code returns 0 here; a wrong number is worse than none
        raise DistanceError(f"{what}: exact OT solver failed: {type(error).__name__}: {error}") from error
    if log.get("result_code") != 1 or not math.isfinite(float(value)):
        raise DistanceError(f"{what}: exact OT solver did not reach the optimum "
                            f"({log.get('warning') or 'non-finite cost'}; iteration cap {cap})")
    return float(value)


def entropic_ot(cost: torch.Tensor, epsilon: float, max_iterations: int | None, what: str) -> float:
    """OT_ε = min_P ⟨P, C⟩ + ε·KL(P ‖ a⊗b), the entropic term included (OTDD.md).

    With P_ij = a_i b_j exp((f_i + g_j − C_ij)/ε) that value is Σ f_i P_i· + Σ g_j P_·j,
    computed from potentials so that 0·log 0 never appears. Scaling iterations when
    exp(−C/ε) is safe in float64, log-domain otherwise or when they break down.
    """
    n, m = cost.shape
    a = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device)
    b = torch.full((m,), 1.0 / m, dtype=cost.dtype, device=cost.device)
    iterations = max_iterations or SINKHORN_MAX_ITERATIONS
    tolerance = SINKHORN_TOLERANCE * float(torch.linalg.vector_norm(b))
    methods = ["sinkhorn", "sinkhorn_log"] if float(cost.max()) / epsilon < LOG_DOMAIN_ABOVE else ["sinkhorn_log"]
    last = "no iteration"
    for method in methods:
        try:
            plan, log = ot.sinkhorn(a, b, cost, epsilon, method=method, numItermax=iterations,
                                    stopThr=tolerance, log=True, warn=False)
        except Exception as error:
            raise DistanceError(f"{what}: Sinkhorn solver failed: {type(error).__name__}: {error}") from error
        if method == "sinkhorn":
            log_u, log_v = torch.log(log["u"]), torch.log(log["v"])
        else:
            log_u, log_v = log["log_u"], log["log_v"]
        f = epsilon * (log_u - torch.log(a))
        g = epsilon * (log_v - torch.log(b))
        rows, cols = plan.sum(1), plan.sum(0)
        violation = float(torch.linalg.vector_norm(rows - a) + torch.linalg.vector_norm(cols - b))
        value = float((f * rows).sum() + (g * cols).sum())
        if math.isfinite(value) and violation <= 2 * tolerance:
            return value
        if math.isfinite(value):   # finite but not converged: the log domain would only be slower
            raise DistanceError(f"{what}: Sinkhorn did not converge in {iterations} iterations (marginal "
                                f"violation {violation:.2e}, ε = {epsilon:.3g}); raise --epsilon or --max-iterations")
        last = f"non-finite values ({method})"
    raise DistanceError(f"{what}: Sinkhorn failed with {last}; raise --epsilon")
