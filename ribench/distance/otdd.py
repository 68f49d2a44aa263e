"""Optimal-transport dataset distances (OTDD) between the datasets of a suite.

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

import argparse
import dataclasses
import hashlib
import io
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ribench.errors import ConfigError, RibenchError

__all__ = [
    "CONVENTIONS",
    "SOLVERS",
    "DistanceError",
    "DistanceMatrix",
    "DistanceOptions",
    "LabelledFeatures",
    "add_distance_parser",
    "distance_matrix",
    "label_distances",
    "otdd",
    "run_distance_command",
    "stratified_subsample",
    "suite_distances",
]

SOLVERS = ("exact", "sinkhorn")
CONVENTIONS = ("otdd2", "half")
FORMATS = ("table", "csv", "json", "markdown")
FEATURE_SPLIT = "train"               # distances describe the data a model is fine-tuned on, never test data
EXACT_MIN_ITERATIONS = 10_000_000     # POT's default (100 000) stops early at n≈5000 (OTDD.md)
SINKHORN_MAX_ITERATIONS = 10_000
SINKHORN_TOLERANCE = 1e-4             # marginal violation, relative to the marginal's norm
LOG_DOMAIN_ABOVE = 500.0              # max(C)/ε beyond which exp(−C/ε) risks underflowing whole rows
LABEL_TABLE_BUDGET = 1 << 24          # float64 elements per chunk of the class-pair table (128 MiB)


class DistanceError(RibenchError):
    """The optimal-transport solver failed; a distance is never silently replaced by 0."""


@dataclass(frozen=True)
class DistanceOptions:
    """What defines a distance; recorded with every result.

    epsilon is Sinkhorn's ε as a fraction of the median ground cost of the pair,
    so a distance does not depend on the features' units (OTDD.md: ε relative to
    the cost scale); the absolute value used is recorded per pair.
    """

    solver: str = "exact"
    samples: int | None = 2000          # points per dataset, stratified by class; None or 0: all
    epsilon: float = 0.01
    lambda_x: float = 1.0
    lambda_y: float = 1.0
    seed: int = 0
    convention: str = "otdd2"           # "half": the reference implementation's half-cost number
    max_iterations: int | None = None   # None: the solver's default below

    def validate(self) -> "DistanceOptions":
        if self.solver not in SOLVERS:
            raise ConfigError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")
        if self.convention not in CONVENTIONS:
            raise ConfigError(f"unknown convention {self.convention!r}; choose one of {', '.join(CONVENTIONS)}")
        if self.samples is not None and self.samples < 0:
            raise ConfigError(f"samples must be positive (0 means all points), got {self.samples}")
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ConfigError(f"epsilon must be a positive fraction of the median cost, got {self.epsilon}")
        for name in ("lambda_x", "lambda_y"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be non-negative, got {value}")
        if self.lambda_x == 0 and self.lambda_y == 0:
            raise ConfigError("lambda_x and lambda_y are both 0: the ground cost would be 0")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise ConfigError(f"max_iterations must be at least 1, got {self.max_iterations}")
        return self

    @property
    def quantity(self) -> str:
        kind = "exact OT" if self.solver == "exact" else "debiased Sinkhorn divergence"
        if self.convention == "half":
            return f"OTDD² / 2 ({kind}, half ground cost as in microsoft/otdd)"
        return f"OTDD² ({kind}, full ground cost)"

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "samples": self.samples or None, "quantity": self.quantity}


@dataclass(frozen=True, eq=False)
class LabelledFeatures:
    """A dataset as points in feature space with their labels."""

    name: str
    features: np.ndarray    # (n, d)
    labels: np.ndarray      # (n,) integer class ids, any values

    def digest(self) -> str:
        """Content hash: identical data subsamples identically, whatever its name or position."""
        h = hashlib.sha256(np.ascontiguousarray(self.features).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()


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
    import torch

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
    import torch

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
    import torch

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
    import torch

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


# -- solvers ------------------------------------------------------------------------------
def _exact(cost: torch.Tensor, max_iterations: int | None, what: str) -> float:
    """Network simplex with a cap raised to the problem's size (OTDD.md); any failure raises."""
    import ot

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


def _entropic(cost: torch.Tensor, epsilon: float, max_iterations: int | None, what: str) -> float:
    """OT_ε = min_P ⟨P, C⟩ + ε·KL(P ‖ a⊗b), the entropic term included (OTDD.md).

    With P_ij = a_i b_j exp((f_i + g_j − C_ij)/ε) that value is Σ f_i P_i· + Σ g_j P_·j,
    computed from potentials so that 0·log 0 never appears. Scaling iterations when
    exp(−C/ε) is safe in float64, log-domain otherwise or when they break down.
    """
    import torch

    import ot

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
        return scale * _exact(cost, options.max_iterations, what), None
    epsilon = options.epsilon * float(cost.flatten().median())
    if not epsilon > 0:
        raise DistanceError(f"{what}: the median ground cost is 0, so ε = {options.epsilon} × median is 0; "
                            f"use the exact solver")
    cross = _entropic(cost, epsilon, options.max_iterations, what)
    del cost
    own = []
    for p in (a, b):
        own.append(_entropic(_ground_cost(p, p, _self_table(p), options), epsilon, options.max_iterations, what))
    # S_ε(A, B) = OT_ε(A, B) − ½OT_ε(A, A) − ½OT_ε(B, B)  (OTDD.md, "Definition")
    return scale * (cross - 0.5 * own[0] - 0.5 * own[1]), scale * epsilon


def _device(device) -> torch.device:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def otdd(a: LabelledFeatures, b: LabelledFeatures, options: DistanceOptions | None = None, device=None) -> float:
    """OTDD² between two labelled feature sets (see the module docstring for the convention)."""
    options = (options or DistanceOptions()).validate()
    dev = _device(device)
    return _pair(_prepare(a, options, dev), _prepare(b, options, dev), options)[0]


# -- a whole suite -------------------------------------------------------------------------
@dataclass
class DistanceMatrix:
    """OTDD² between every pair of datasets, with what is needed to trust and re-run it."""

    names: list[str]
    values: np.ndarray                     # (k, k), symmetric, 0 on the diagonal
    options: DistanceOptions
    samples: dict[str, int]                # points used per dataset
    epsilon: np.ndarray | None = None      # absolute ε per pair (Sinkhorn only)
    context: dict = field(default_factory=dict)    # suite, pretrain, weights, feature split
    seconds: dict = field(default_factory=dict)

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.values, index=self.names, columns=self.names)

    def get(self, a: str, b: str) -> float:
        return float(self.values[self.names.index(a), self.names.index(b)])

    def as_dict(self) -> dict:
        return {
            **self.context,
            "quantity": self.options.quantity,
            "options": self.options.as_dict(),
            "datasets": self.names,
            "samples": self.samples,
            "matrix": {a: {b: float(self.values[i, j]) for j, b in enumerate(self.names)}
                       for i, a in enumerate(self.names)},
            "epsilon_absolute": None if self.epsilon is None else
            {a: {b: _finite_or_none(self.epsilon[i, j]) for j, b in enumerate(self.names)}
             for i, a in enumerate(self.names)},
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }

    def format(self, fmt: str = "table") -> str:
        if fmt == "json":
            return json.dumps(self.as_dict(), indent=2, allow_nan=False)
        if fmt == "csv":
            buffer = io.StringIO()
            self.frame().to_csv(buffer, index_label="dataset", float_format="%.10g")
            return buffer.getvalue()
        if fmt not in ("table", "markdown"):
            raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        cells = [["", *self.names]] + [[a, *(f"{v:.4g}" for v in self.values[i])] for i, a in enumerate(self.names)]
        what = self.context.get("pretrain", "")
        header = (f"{self.options.quantity} between {self.context.get('feature_split', '')} splits in "
                  f"{what}'s feature space; {_options_text(self)}")
        return header + "\n\n" + (_markdown(cells) if fmt == "markdown" else _aligned(cells)) + "\n"


def _finite_or_none(value) -> float | None:
    return float(value) if np.isfinite(value) else None


def _options_text(result: DistanceMatrix) -> str:
    o = result.options
    sizes = sorted(set(result.samples.values()))
    points = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    text = f"{points} points per dataset, seed {o.seed}, λx={o.lambda_x:g}, λy={o.lambda_y:g}"
    if o.solver == "sinkhorn":
        text += f", ε={o.epsilon:g}×median cost"
    return text


def _aligned(cells: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]).rstrip()
             for row in cells]
    return "\n".join(lines)


def _markdown(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cells[0]) + " |", "|---" + "|---:" * (len(cells[0]) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


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


def suite_distances(suite, pretrained, options: DistanceOptions | None = None, device="cpu",
                    batch_size: int = 500, log=None) -> DistanceMatrix:
    """OTDD² between all of a suite's datasets (downstream and pretraining-domain) in
    `pretrained`'s penultimate feature space, on their train splits.

    Train splits because the distance is meant to describe what a model is
    fine-tuned on; test splits stay for evaluation. Features come from the shared
    on-disk cache (`ribench.data.features`), so a second call computes no features.
    """
    from ribench.data.features import cached_features

    start = time.perf_counter()
    datasets = []
    for name in [*suite.downstream, suite.pretrain_eval]:
        split = suite.train_split(name)
        features = cached_features(pretrained, split, FEATURE_SPLIT, batch_size, device)
        datasets.append(LabelledFeatures(name, features, np.asarray(split.labels)))
    feature_seconds = time.perf_counter() - start
    result = distance_matrix(datasets, options, device, log)
    result.context = {"suite": suite.name, "pretrain": pretrained.name,
                      "weights_sha256": pretrained.weights_sha256, "feature_split": FEATURE_SPLIT,
                      "pretrain_eval": suite.pretrain_eval, "feature_dim": int(datasets[0].features.shape[1])}
    result.seconds = {"features": feature_seconds, **result.seconds}
    return result


# -- relation to the stored fine-tuning results ---------------------------------------------
def forgetting_relation(result: DistanceMatrix, summary, label: str):
    """Per downstream dataset: distance to the pretraining-domain set, forgetting and RI of `label`.

    forgetting_i = A_pre^(P) − A_i^(P) from the seed-mean accuracy matrix (ribench.report.metrics).
    """
    import pandas as pd

    pretrain_eval = summary.pretrain_eval
    matrix = summary.matrix_for(label)
    a_pre = float(matrix.loc["pretrained", pretrain_eval])
    ri = summary.ri[summary.ri["label"] == label].set_index("dataset")
    rows = []
    for dataset in summary.downstream:
        if dataset not in result.names or dataset not in matrix.index:
            continue
        rows.append({"dataset": dataset, "distance": result.get(dataset, pretrain_eval),
                     "forgetting": a_pre - float(matrix.loc[dataset, pretrain_eval]),
                     "RI": float(ri.loc[dataset, "mean"]) if dataset in ri.index else math.nan,
                     "n_seeds": int(ri.loc[dataset, "n_seeds"]) if dataset in ri.index else 0})
    return pd.DataFrame(rows, columns=["dataset", "distance", "forgetting", "RI", "n_seeds"])


def spearman(x, y) -> float:
    """Rank correlation over the pairs where both values are present; NaN below 3 pairs."""
    import pandas as pd

    pairs = pd.DataFrame({"x": x, "y": y}).dropna()
    if len(pairs) < 3:
        return math.nan
    return float(pairs["x"].rank().corr(pairs["y"].rank()))


# -- plots -------------------------------------------------------------------------------
def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)     # no pyplot: no global state, no display needed
    return figure


def save_heatmap(result: DistanceMatrix, path: Path) -> Path:
    k = len(result.names)
    figure = _figure(1.2 + 0.75 * k, 0.8 + 0.7 * k)
    axes = figure.add_subplot()
    image = axes.imshow(result.values, cmap="viridis")
    axes.set_xticks(range(k), result.names, rotation=45, ha="right")
    axes.set_yticks(range(k), result.names)
    threshold = result.values.max() / 2 if k else 0
    for i in range(k):
        for j in range(k):
            value = result.values[i, j]
            axes.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7,
                      color="black" if value > threshold else "white")
    figure.colorbar(image, ax=axes, label=result.options.quantity.split(" (")[0])
    axes.set_title(f"{result.context.get('suite', '')} / {result.context.get('pretrain', '')}: "
                   f"{result.options.solver} OTDD²", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    return path


def save_relation_plot(relation, correlations: dict, label: str, pretrain_eval: str, path: Path) -> Path:
    figure = _figure(9, 3.8)
    for number, metric in enumerate(("forgetting", "RI")):
        axes = figure.add_subplot(1, 2, number + 1)
        axes.scatter(relation["distance"], relation[metric] * 100)
        for _, row in relation.iterrows():
            axes.annotate(row["dataset"], (row["distance"], row[metric] * 100), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
        axes.set_xlabel(f"OTDD² to {pretrain_eval} (train splits)")
        axes.set_ylabel(f"{metric} of {label} (percentage points)")
        axes.set_title(f"Spearman ρ = {_rho(correlations[metric])}", fontsize=9)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path


def _rho(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


# -- the `ribench distance` command ------------------------------------------------------------
def add_distance_parser(subparsers) -> argparse.ArgumentParser:
    """Register `ribench distance` on the CLI's subparsers."""
    defaults = DistanceOptions()
    p = subparsers.add_parser("distance", help="OTDD between every pair of a suite's datasets in a pretrain's "
                                               "feature space; relation to forgetting")
    p.add_argument("--suite", default="rib-mini", help="suite name (default: rib-mini)")
    p.add_argument("--pretrain", default="mini-clip", help="pretrain preset (default: mini-clip)")
    p.add_argument("--solver", default=defaults.solver, choices=SOLVERS,
                   help="exact (network simplex) or sinkhorn (debiased Sinkhorn divergence)")
    p.add_argument("--samples", type=int, default=defaults.samples,
                   help=f"points per dataset, stratified by class; 0 for all (default: {defaults.samples})")
    p.add_argument("--epsilon", type=float, default=defaults.epsilon,
                   help=f"Sinkhorn ε as a fraction of the median ground cost (default: {defaults.epsilon})")
    p.add_argument("--lambda-x", type=float, default=defaults.lambda_x, help="weight of the feature cost")
    p.add_argument("--lambda-y", type=float, default=defaults.lambda_y, help="weight of the label cost")
    p.add_argument("--seed", type=int, default=defaults.seed, help="subsampling seed (default: 0)")
    p.add_argument("--convention", default=defaults.convention, choices=CONVENTIONS,
                   help="otdd2: full cost (default); half: microsoft/otdd's half-cost number")
    p.add_argument("--max-iterations", type=int, default=None, help="solver iteration cap")
    p.add_argument("--format", default="table", choices=list(FORMATS))
    p.add_argument("--out", default=".", help="folder for the heatmap, scatter and JSON (default: .)")
    p.add_argument("--store", default=None, help="results database with ft results (default: $RIBENCH_STORE or "
                                                 "~/.local/share/ribench/results.sqlite, if it exists)")
    p.add_argument("--method", default="ft", help="stored method to relate distances to (default: ft)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--include", action="append", default=[], metavar="FILE.py",
                   help="import a Python file that registers extra suites or pretrains")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    return p


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_distance_command(args) -> int:
    """Print the matrix, write the heatmap and JSON; with ft results, the scatter and Spearman ρ."""
    import torch

    from ribench.catalog import PRETRAINS, SUITES
    from ribench.registry import include
    from ribench.store import default_store_path

    if args.threads:
        torch.set_num_threads(args.threads)
    for path in args.include:
        include(path)
    options = DistanceOptions(args.solver, args.samples or None, args.epsilon, args.lambda_x, args.lambda_y,
                              args.seed, args.convention, args.max_iterations).validate()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device} asked for, but no CUDA device is available here")
    store_path = Path(args.store).expanduser() if args.store else default_store_path()
    if args.store and not store_path.is_file():
        raise ConfigError(f"no results store at {store_path}")
    out = Path(args.out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create output folder {out}: {error.strerror}") from None
    suite = SUITES.get(args.suite)()
    pretrained = PRETRAINS.get(args.pretrain).load(suite)
    pretrained.model.to(args.device).eval()
    result = suite_distances(suite, pretrained, options, args.device, suite.protocol.eval_batch_size)

    stem = f"distance-{suite.name}-{pretrained.name}-{options.solver}"
    document = result.as_dict()
    relation_text = None
    if store_path.is_file():
        relation_text, document["relation"] = _relation(result, suite, pretrained, store_path, args.method, out, stem)
    elif args.store is None:
        _stderr(f"note: no results store at {store_path}; pass --store to relate distances to forgetting")
    heatmap = save_heatmap(result, out / f"{stem}.png")
    (out / f"{stem}.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")

    if args.format == "json":
        print(json.dumps(document, indent=2, allow_nan=False))
    else:
        print(result.format(args.format), end="")
        if relation_text:
            print("\n" + relation_text, file=sys.stdout if args.format != "csv" else sys.stderr)
    _stderr(f"features {result.seconds['features']:.1f} s, distances {result.seconds['distances']:.1f} s; "
            f"wrote {heatmap} and {out / (stem + '.json')}")
    return 0


def _relation(result: DistanceMatrix, suite, pretrained, store_path: Path, method: str, out: Path, stem: str):
    """(text to print, JSON record) relating distance-to-pretraining-data to forgetting and RI."""
    from ribench.api import results

    try:
        summary = results(suite.name, pretrained.name, methods=[method], store=store_path)
    except RibenchError as error:
        _stderr(f"note: {error}; no distance/forgetting plot")
        return None, None
    label = method if method in summary.labels else summary.labels[0]
    relation = forgetting_relation(result, summary, label)
    correlations = {metric: spearman(relation["distance"], relation[metric]) for metric in ("forgetting", "RI")}
    plot = save_relation_plot(relation, correlations, label, suite.pretrain_eval,
                              out / f"{stem}-vs-{label.replace('/', '_')}.png")
    seeds = sorted(set(relation["n_seeds"]))
    lines = [f"Distance to {suite.pretrain_eval} vs {label} ({'/'.join(map(str, seeds))} seed(s), store {store_path})",
             _aligned([["dataset", "OTDD²", "forgetting", "RI"]] +
                      [[r.dataset, f"{r.distance:.4g}", f"{r.forgetting * 100:+.1f}", f"{r.RI * 100:+.1f}"]
                       for r in relation.itertuples()]),
             f"Spearman ρ(distance, forgetting) = {_rho(correlations['forgetting'])}, "
             f"ρ(distance, RI) = {_rho(correlations['RI'])} over {len(relation)} downstream datasets; "
             f"plot: {plot}"]
    record = {"label": label, "store": str(store_path), "units": "fraction",
              "per_dataset": json.loads(relation.to_json(orient="records")),
              "spearman": {k: None if math.isnan(v) else v for k, v in correlations.items()}}
    return "\n".join(lines), record
