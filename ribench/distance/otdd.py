"""The OTDD maths: the distance between two labelled feature sets, and between every pair of a list.

OTDD (Alvarez-Melis & Fusi, NeurIPS 2020) compares two labelled datasets in a
pretrained model's penultimate feature space. A sample is a pair (x, y); the
ground cost between (x, y) in A and (x', y') in B is (OTDD.md, "Definition")

    c = λx·‖x − x'‖² + λy·W²(y, y')

with W² the squared 2-Wasserstein distance between the Gaussian approximations
of class y in A and class y' in B:

    W² = ‖μ − μ'‖² + tr Σ + tr Σ' − 2·tr((Σ^½ Σ' Σ^½)^½).

The reported quantity is OTDD², the optimal-transport cost under c between the
two (subsampled, uniformly weighted) empirical distributions: by default within a
certified 0.1% (`ribench.distance.auction`, on equal-size samples), exact (network
simplex, `ot.emd2`), or the debiased Sinkhorn divergence
S_ε(A, B) = OT_ε(A, B) − ½OT_ε(A, A) − ½OT_ε(B, B), OT_ε including its entropic
term. The reference implementation (microsoft/otdd) halves the ground cost; the
`half` convention reports that number (exactly half of ours). See docs/distance.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ribench.distance.auction import AuctionStalled, auction_ot
from ribench.distance.cost import GroundCost
from ribench.distance.matrix import DistanceMatrix
from ribench.distance.options import DistanceOptions, LabelledFeatures
from ribench.distance.solvers import DistanceError, entropic_ot, exact_ot
from ribench.errors import ConfigError

__all__ = ["class_gaussians", "distance_matrix", "label_distances", "otdd", "stratified_subsample"]

LABEL_TABLE_BUDGET = 1 << 24          # float64 elements per chunk of the class-pair table (128 MiB)


# -- subsampling -----------------------------------------------------------------------
def stratified_subsample(labels: np.ndarray, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `size` points, each class keeping its share (largest remainders)."""
    n = len(labels)
    if not size or size >= n:
        return np.arange(n)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = counts * (size / n)
    take = np.floor(quota).astype(int)
    extra = np.argsort(-(quota - take), kind="stable")[: size - int(take.sum())]
    take[extra] += 1
    chosen = [rng.permutation(np.flatnonzero(inverse == c))[:k] for c, k in enumerate(take) if k]
    return np.sort(np.concatenate(chosen))


# -- Gaussian label distances ------------------------------------------------------------
@dataclass
class ClassGaussians:
    """Per class: mean, trace of Σ and a factor F with FᵀF = Σ (float64)."""

    means: torch.Tensor      # (K, d)
    factors: torch.Tensor    # (K, k, d), rows zero-padded to a common k ≤ d
    traces: torch.Tensor     # (K,)
    rows: torch.Tensor | None = None   # (K,) rows of each factor that are not padding; None: all k

    def __post_init__(self):
        if self.rows is None:
            self.rows = torch.full((len(self.means),), self.factors.shape[1], dtype=torch.long)


def class_gaussians(features: torch.Tensor, codes: torch.Tensor, num_classes: int) -> ClassGaussians:
    """Class statistics in float64 (OTDD.md). Σ_c = Z_cᵀZ_c with Z_c the centred samples / √(n_c − 1).

    Z_c is kept as the factor when n_c ≤ d; otherwise its d×d R from a QR (RᵀR = ZᵀZ),
    so the pair table below costs at most d×d per class pair. A class of one sample
    has Σ = 0.
    """
    x = features.to(torch.float64)
    d = x.shape[1]
    counts = torch.bincount(codes, minlength=num_classes)
    rows = int(min(int(counts.max()), d))
    means = torch.zeros(num_classes, d, dtype=torch.float64, device=x.device)
    factors = torch.zeros(num_classes, rows, d, dtype=torch.float64, device=x.device)
    used = torch.zeros(num_classes, dtype=torch.long)
    for c in range(num_classes):
        members = x[codes == c]
        means[c] = members.mean(0)
        if len(members) < 2:
            continue
        z = (members - means[c]) / math.sqrt(len(members) - 1)
        if len(z) > d:
            z = torch.linalg.qr(z, mode="r").R
        factors[c, : len(z)] = z
        used[c] = len(z)
    return ClassGaussians(means, factors, factors.pow(2).sum((1, 2)), used)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return out.clamp_min_(0.0)


def _nuclear_norms(products: torch.Tensor) -> torch.Tensor:
    """Σ singular values of each matrix, as Σ √λ over the eigenvalues of its smaller Gram matrix:
    a symmetric eigensolver is 1.4–2× faster than an SVD and agrees with it to 1e-14 here."""
    if products.shape[-2] > products.shape[-1]:
        products = products.transpose(-2, -1)
    gram = products @ products.transpose(-2, -1)
    return torch.linalg.eigvalsh(gram).clamp_min_(0.0).sqrt_().sum(-1)


def _by_rows(g: ClassGaussians):
    for rows in torch.unique(g.rows).tolist():
        if rows > 0:                  # a class of one sample has Σ = 0: its nuclear norms are 0
            yield rows, torch.nonzero(g.rows == rows).flatten().to(g.means.device)


def _nuclear_block(factors_a: torch.Tensor, factors_b: torch.Tensor, budget: int) -> torch.Tensor:
    """‖F_a F_bᵀ‖_* for every class of the first set against every class of the second."""
    ka, rows_a, d = factors_a.shape
    kb, rows_b, _ = factors_b.shape
    stacked_b = factors_b.reshape(kb * rows_b, d)
    chunk = max(1, budget // max(3 * rows_a * kb * rows_b + rows_a * d, 1))
    out = torch.empty(ka, kb, dtype=torch.float64, device=factors_a.device)
    for start in range(0, ka, chunk):
        block = factors_a[start:start + chunk]
        products = (block.reshape(-1, d) @ stacked_b.T).view(len(block), rows_a, kb, rows_b)
        products = products.permute(0, 2, 1, 3).reshape(len(block) * kb, rows_a, rows_b)
        out[start:start + len(block)] = _nuclear_norms(products).view(len(block), kb)
    return out


def label_distances(a: ClassGaussians, b: ClassGaussians, same: bool = False,
                    budget: int = LABEL_TABLE_BUDGET) -> torch.Tensor:
    """W²(y, y') between every class of A and every class of B, in chunks of A's classes.

    tr((Σ^½Σ'Σ^½)^½) is the nuclear norm of F F'ᵀ (OTDD.md): the singular values of
    F F'ᵀ are the square roots of the eigenvalues of Σ'Σ, hence of Σ^½Σ'Σ^½. A small
    SVD, never NaN, even when a class has fewer samples than dimensions.
    `same`: A and B are one dataset; the table is then made exactly symmetric, 0 on the diagonal.
    """
    ka, kb = len(a.means), len(b.means)
    nuclear = torch.zeros(ka, kb, dtype=torch.float64, device=a.means.device)
    # classes grouped by factor size, so that no eigenproblem is padded (1000 classes of ~5 samples:
    # 5×5 problems, not 13×13); one matrix product per chunk of A's classes, no gathering of pairs
    for rows_a, classes_a in _by_rows(a):
        for rows_b, classes_b in _by_rows(b):
            nuclear[classes_a[:, None], classes_b[None, :]] = _nuclear_block(
                a.factors[classes_a, :rows_a], b.factors[classes_b, :rows_b], budget)
    table = (_squared_distances(a.means, b.means) + a.traces[:, None] + b.traces[None, :]
             - 2.0 * nuclear).clamp_min_(0.0)
    if same:
        table = 0.5 * (table + table.T)
        table.fill_diagonal_(0.0)
    return table


# -- one dataset, ready to be compared ---------------------------------------------------
@dataclass
class _Prepared:
    name: str
    digest: str                  # content hash of the full dataset
    points: torch.Tensor         # (n, d) float64, the subsample
    codes: torch.Tensor          # (n,) class index into `gaussians`
    gaussians: ClassGaussians | None
    self_table: torch.Tensor | None = None


def _check(data: LabelledFeatures) -> None:
    features, labels = np.asarray(data.features), np.asarray(data.labels)
    if features.ndim != 2 or len(features) != len(labels) or len(labels) == 0:
        raise ConfigError(f"dataset '{data.name}': expected (n, d) features and n labels, "
                          f"got {features.shape} and {labels.shape}")
    if not np.isfinite(features).all():
        raise DistanceError(f"dataset '{data.name}' has non-finite features; cannot compute a distance")


def _sample_size(datasets: list[LabelledFeatures], options: DistanceOptions) -> int | None:
    """Points per dataset. The fast solver compares equal-size samples (an assignment problem),
    so there every dataset is subsampled to the same size: `samples`, or the smallest dataset's."""
    if options.solver != "fast":
        return options.samples
    return min([len(d.labels) for d in datasets] + ([options.samples] if options.samples else []))


def _prepare(data: LabelledFeatures, options: DistanceOptions, device, size: int | None) -> _Prepared:
    _check(data)
    features = np.asarray(data.features)
    labels = np.asarray(data.labels)
    digest = data.digest()
    rng = np.random.default_rng([options.seed, int(digest[:16], 16)])
    keep = stratified_subsample(labels, size, rng)
    classes, codes = np.unique(labels[keep], return_inverse=True)
    points = torch.as_tensor(features[keep], device=device).to(torch.float64)
    codes_t = torch.as_tensor(codes, device=device, dtype=torch.long)
    gaussians = class_gaussians(points, codes_t, len(classes)) if options.lambda_y > 0 else None
    return _Prepared(data.name, digest, points, codes_t, gaussians)


def _self_table(p: _Prepared) -> torch.Tensor | None:
    if p.gaussians is not None and p.self_table is None:
        p.self_table = label_distances(p.gaussians, p.gaussians, same=True)
    return p.self_table


def _ground_cost(a: _Prepared, b: _Prepared, table: torch.Tensor | None, options: DistanceOptions) -> torch.Tensor:
    """The whole float64 cost matrix, for the exact and Sinkhorn solvers."""
    return GroundCost(a.points, b.points, a.codes, b.codes, table, options.lambda_x, options.lambda_y,
                      stored_bytes=math.inf, dtype=torch.float64).matrix


def _pair(a: _Prepared, b: _Prepared, options: DistanceOptions) -> tuple[float, float | None]:
    """(OTDD² in the options' convention, absolute ε (Sinkhorn) or certified relative error (fast)) for one pair."""
    what = f"OTDD({a.name}, {b.name})"
    if b.digest < a.digest:      # one order for both (A, B) and (B, A): the solvers' stopping points are then symmetric too
        a, b = b, a
    table = None
    if options.lambda_y > 0:
        table = label_distances(a.gaussians, b.gaussians)
    scale = 0.5 if options.convention == "half" else 1.0     # half cost: the value and ε both halve
    if options.solver == "fast":
        if a.digest == b.digest:      # the very same subsample: the identity plan costs 0
            return 0.0, 0.0
        try:
            result = auction_ot(GroundCost(a.points, b.points, a.codes, b.codes, table, options.lambda_x,
                                           options.lambda_y), options.tolerance, options.max_iterations)
            return scale * result.value, result.gap
        except AuctionStalled:    # a value too small for float32 prices to resolve: solve this pair exactly
            return scale * exact_ot(_ground_cost(a, b, table, options), None, what), 0.0
    cost = _ground_cost(a, b, table, options)
    if options.solver == "exact":
        return scale * exact_ot(cost, options.max_iterations, what), None
    epsilon = options.epsilon * float(cost.flatten().median())
    if not epsilon > 0:
        raise DistanceError(f"{what}: the median ground cost is 0, so ε = {options.epsilon} × median is 0; "
                            f"use the exact solver")
    cross = entropic_ot(cost, epsilon, options.max_iterations, what)
    del cost
    own = []
    for p in (a, b):
        own.append(entropic_ot(_ground_cost(p, p, _self_table(p), options), epsilon, options.max_iterations, what))
    # S_ε(A, B) = OT_ε(A, B) − ½OT_ε(A, A) − ½OT_ε(B, B)  (OTDD.md, "Definition")
    return scale * (cross - 0.5 * own[0] - 0.5 * own[1]), scale * epsilon


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _torch_owns_the_cores():
    """NumPy's and SciPy's OpenBLAS threads spin after a call and starve torch's OpenMP threads:
    on 2 cores an eigensolve took 4 s instead of 0.02 s. The distances do their algebra in torch."""
    return threadpool_limits(limits=1, user_api="blas")


def otdd(a: LabelledFeatures, b: LabelledFeatures, options: DistanceOptions | None = None, device=None) -> float:
    """OTDD² between two labelled feature sets (see the module docstring for the convention)."""
    options = (options or DistanceOptions()).validate()
    dev = _device(device)
    size = _sample_size([a, b], options)
    with _torch_owns_the_cores():
        return _pair(_prepare(a, options, dev, size), _prepare(b, options, dev, size), options)[0]


def _all_pairs(prepared: list[_Prepared], options: DistanceOptions, log):
    k = len(prepared)
    values = np.zeros((k, k))
    per_pair = np.full((k, k), np.nan) if options.solver != "exact" else None
    for i in range(k):
        for j in range(i + 1, k):
            tick = time.perf_counter()
            value, detail = _pair(prepared[i], prepared[j], options)
            values[i, j] = values[j, i] = value
            if per_pair is not None:
                per_pair[i, j] = per_pair[j, i] = detail
            if log:
                log(f"{prepared[i].name} – {prepared[j].name}: {value:.4g} ({time.perf_counter() - tick:.1f} s)")
    return values, per_pair


def distance_matrix(datasets: list[LabelledFeatures], options: DistanceOptions | None = None, device=None,
                    log=None) -> DistanceMatrix:
    """OTDD² between every pair of `datasets`: each is subsampled once, each pair solved once.

    The diagonal is 0 without solving: a dataset meets the very same subsample.
    """
    options = (options or DistanceOptions()).validate()
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"dataset names must be distinct, got {', '.join(names)}")
    dev = _device(device)
    start = time.perf_counter()
    for d in datasets:
        _check(d)
    size = _sample_size(datasets, options)
    with _torch_owns_the_cores():
        prepared = [_prepare(d, options, dev, size) for d in datasets]
        values, per_pair = _all_pairs(prepared, options, log)
    sinkhorn = options.solver == "sinkhorn"
    return DistanceMatrix(names, values, options, {p.name: len(p.points) for p in prepared},
                          epsilon=per_pair if sinkhorn else None,
                          error_bound=per_pair if options.solver == "fast" else None,
                          seconds={"distances": time.perf_counter() - start})
