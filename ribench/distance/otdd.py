"""The OTDD maths: the distance between two labelled feature sets, and between every pair of a list.

OTDD (Alvarez-Melis & Fusi, NeurIPS 2020) compares two labelled datasets in a
pretrained model's penultimate feature space. A sample is a pair (x, y); the
ground cost between (x, y) in A and (x', y') in B is (OTDD.md, "Definition")

    c = λx·‖x − x'‖² + λy·W²(y, y')

with W² the squared 2-Wasserstein distance between the Gaussian approximations
of class y in A and class y' in B:

    W² = ‖μ − μ'‖² + tr Σ + tr Σ' − 2·tr((Σ^½ Σ' Σ^½)^½).

The reported quantity is OTDD², the optimal-transport cost under c between the
two (subsampled, uniformly weighted) empirical distributions: exact (network
simplex, `ot.emd2`) or the debiased Sinkhorn divergence
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
    for c in range(num_classes):
        members = x[codes == c]
        means[c] = members.mean(0)
        if len(members) < 2:
            continue
        z = (members - means[c]) / math.sqrt(len(members) - 1)
        if len(z) > d:
            z = torch.linalg.qr(z, mode="r").R
        factors[c, : len(z)] = z
    return ClassGaussians(means, factors, factors.pow(2).sum((1, 2)))


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return out.clamp_min_(0.0)


def label_distances(a: ClassGaussians, b: ClassGaussians, same: bool = False,
                    budget: int = LABEL_TABLE_BUDGET) -> torch.Tensor:
    """W²(y, y') between every class of A and every class of B, in chunks of class pairs.

    tr((Σ^½Σ'Σ^½)^½) is the nuclear norm of F F'ᵀ (OTDD.md): the singular values of
    F F'ᵀ are the square roots of the eigenvalues of Σ'Σ, hence of Σ^½Σ'Σ^½. A small
    SVD, never NaN, even when a class has fewer samples than dimensions.
    `same`: A and B are one dataset; the table is then made exactly symmetric, 0 on the diagonal.
    """
    ka, kb = len(a.means), len(b.means)
    rows_a, rows_b, d = a.factors.shape[1], b.factors.shape[1], a.factors.shape[2]
    per_pair = rows_a * rows_b + (rows_a + rows_b) * d
    chunk = max(1, budget // max(per_pair, 1))
    nuclear = torch.empty(ka * kb, dtype=torch.float64, device=a.means.device)
    for start in range(0, ka * kb, chunk):
        pairs = torch.arange(start, min(start + chunk, ka * kb), device=a.means.device)
        products = a.factors[pairs // kb] @ b.factors[pairs % kb].transpose(1, 2)
        nuclear[start:start + len(pairs)] = torch.linalg.svdvals(products).sum(-1)
    table = (_squared_distances(a.means, b.means) + a.traces[:, None] + b.traces[None, :]
             - 2.0 * nuclear.view(ka, kb)).clamp_min_(0.0)
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


def _prepare(data: LabelledFeatures, options: DistanceOptions, device) -> _Prepared:
    features = np.asarray(data.features)
    labels = np.asarray(data.labels)
    if features.ndim != 2 or len(features) != len(labels) or len(labels) == 0:
        raise ConfigError(f"dataset '{data.name}': expected (n, d) features and n labels, "
                          f"got {features.shape} and {labels.shape}")
    if not np.isfinite(features).all():
        raise DistanceError(f"dataset '{data.name}' has non-finite features; cannot compute a distance")
    digest = data.digest()
    rng = np.random.default_rng([options.seed, int(digest[:16], 16)])
    keep = stratified_subsample(labels, options.samples, rng)
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
    """c = λx·‖x − x'‖² + λy·W²(y, y') for every pair of points (OTDD.md, "Definition")."""
    cost = _squared_distances(a.points, b.points)
    if options.lambda_x != 1.0:
        cost.mul_(options.lambda_x)
    if table is not None:
        cost.add_(options.lambda_y * table[a.codes][:, b.codes])
    return cost


def _pair(a: _Prepared, b: _Prepared, options: DistanceOptions) -> tuple[float, float | None]:
    """(OTDD² in the options' convention, absolute ε or None) for one pair."""
    what = f"OTDD({a.name}, {b.name})"
    if b.digest < a.digest:      # one order for both (A, B) and (B, A): Sinkhorn's stopping point is then symmetric too
        a, b = b, a
    table = None
    if options.lambda_y > 0:
        table = label_distances(a.gaussians, b.gaussians)
    cost = _ground_cost(a, b, table, options)
    scale = 0.5 if options.convention == "half" else 1.0     # half cost: the value and ε both halve
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


def otdd(a: LabelledFeatures, b: LabelledFeatures, options: DistanceOptions | None = None, device=None) -> float:
    """OTDD² between two labelled feature sets (see the module docstring for the convention)."""
    options = (options or DistanceOptions()).validate()
    dev = _device(device)
    return _pair(_prepare(a, options, dev), _prepare(b, options, dev), options)[0]


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
    prepared = [_prepare(d, options, dev) for d in datasets]
    k = len(prepared)
    values = np.zeros((k, k))
    epsilon = np.full((k, k), np.nan) if options.solver == "sinkhorn" else None
    for i in range(k):
        for j in range(i + 1, k):
            tick = time.perf_counter()
            value, eps = _pair(prepared[i], prepared[j], options)
            values[i, j] = values[j, i] = value
            if epsilon is not None:
                epsilon[i, j] = epsilon[j, i] = eps
            if log:
                log(f"{names[i]} – {names[j]}: {value:.4g} ({time.perf_counter() - tick:.1f} s)")
    return DistanceMatrix(names, values, options, {p.name: len(p.points) for p in prepared}, epsilon,
                          seconds={"distances": time.perf_counter() - start})
