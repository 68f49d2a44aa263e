"""OTDD² solvers side by side on the same features (issue 18): ribench fast, ribench exact, POT's
emd2 on the full cost, and the reference method, at n ∈ {1,000, 2,000, 5,000} (and 10,000 for the
fast solver), d = 512, 10 and 1000 classes; then the rib-mini matrix with the exact and the fast solver.

- Shared preparation (subsample, class Gaussians, the label tables) is timed once per case and
  reported apart: every solver gets the same tables.
- ribench fast: the float32 ground cost (one matrix product + table lookup) and the certified auction.
- ribench exact: the float64 ground cost and network simplex (`ot.emd2`, iteration cap raised).
- POT emd2: `ot.emd2` alone on the precomputed float64 cost.
- reference: what microsoft/otdd runs: geomloss `SamplesLoss("sinkhorn", p=2, blur=√0.1, debias=True,
  backend="tensorized")` with a custom cost c/2 (their half convention; the value is doubled here)
  over the union label table (A–A, A–B, B–B), ε-scaling at geomloss' default 0.5.

The last test prints the table with the ratios (reference / fast, exact / fast) and the errors
against the exact value, and writes it to benchmarks/results/otdd_solvers.json.
Run: python -m pytest benchmarks/test_otdd_solvers.py --benchmark-only -s
"""

import json
import time
from pathlib import Path

import numpy as np
import ot
import pytest
import torch

from ribench.distance import otdd as dist
from ribench.distance.auction import auction_ot
from ribench.distance.cost import GroundCost
from ribench.distance.options import DistanceOptions, LabelledFeatures
from ribench.distance.solvers import exact_ot

geomloss = pytest.importorskip("geomloss", reason="the reference method needs geomloss (pip install geomloss)")

DIM = 512
SIZES = [1000, 2000, 5000]
FAST_ONLY = [10000]
CLASS_COUNTS = [10, 1000]
RESULTS = Path(__file__).parent / "results" / "otdd_solvers.json"
_rows: dict[tuple, dict] = {}
_cases: dict[tuple, dict] = {}


def labelled(name, n, classes, seed, shift=0.0, spread=1.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(classes, DIM))
    labels = np.arange(n) % classes
    features = centres[labels] + spread * rng.normal(size=(n, DIM)) * 0.5 + shift
    return LabelledFeatures(name, features.astype(np.float32), labels)


def case(n, classes):
    """The prepared pair and its label tables, built once and timed."""
    key = (n, classes)
    if key not in _cases:
        options = DistanceOptions(samples=n).validate()
        a, b = labelled("a", n, classes, 1), labelled("b", n, classes, 2, shift=0.05, spread=1.2)
        start = time.perf_counter()
        with dist._torch_owns_the_cores():
            pa = dist._prepare(a, options, torch.device("cpu"), n)
            pb = dist._prepare(b, options, torch.device("cpu"), n)
            table = dist.label_distances(pa.gaussians, pb.gaussians)
        prep = time.perf_counter() - start
        _cases[key] = {"a": pa, "b": pb, "table": table, "prep_seconds": prep, "options": options}
    return _cases[key]


def record(benchmark, n, classes, method, seconds, value, **extra):
    _rows[(n, classes, method)] = {"seconds": seconds, "value": value, **extra}
    benchmark.extra_info.update(n=n, classes=classes, method=method, value=value, **extra)


@pytest.fixture(scope="module", autouse=True)
def _warm_up():
    small = case(200, 10)
    with dist._torch_owns_the_cores():
        auction_ot(GroundCost(small["a"].points, small["b"].points, small["a"].codes, small["b"].codes, small["table"]))
    yield


@pytest.mark.parametrize("classes", CLASS_COUNTS)
@pytest.mark.parametrize("n", SIZES + FAST_ONLY)
def test_ribench_fast(benchmark, n, classes):
    c = case(n, classes)

    def solve():
        with dist._torch_owns_the_cores():
            cost = GroundCost(c["a"].points, c["b"].points, c["a"].codes, c["b"].codes, c["table"])
            return auction_ot(cost, c["options"].tolerance)

    start = time.perf_counter()
    result = benchmark.pedantic(solve, rounds=1, iterations=1)
    record(benchmark, n, classes, "ribench fast", time.perf_counter() - start, result.value,
           bound=result.gap, phases=result.phases, rounds=result.rounds, prep_seconds=c["prep_seconds"])


@pytest.mark.parametrize("classes", CLASS_COUNTS)
@pytest.mark.parametrize("n", SIZES)
def test_ribench_exact(benchmark, n, classes):
    c = case(n, classes)

    def solve():
        with dist._torch_owns_the_cores():
            return exact_ot(dist._ground_cost(c["a"], c["b"], c["table"], c["options"]), None, "benchmark")

    start = time.perf_counter()
    value = benchmark.pedantic(solve, rounds=1, iterations=1)
    record(benchmark, n, classes, "ribench exact", time.perf_counter() - start, value)


@pytest.mark.parametrize("classes", CLASS_COUNTS)
@pytest.mark.parametrize("n", SIZES)
def test_pot_emd2_on_the_full_cost(benchmark, n, classes):
    c = case(n, classes)
    cost = dist._ground_cost(c["a"], c["b"], c["table"], c["options"]).numpy()
    weights = np.full(n, 1.0 / n)
    start = time.perf_counter()
    value = benchmark.pedantic(lambda: float(ot.emd2(weights, weights, cost, numItermax=10**8)), rounds=1, iterations=1)
    record(benchmark, n, classes, "POT emd2", time.perf_counter() - start, value)


def reference_loss(c):
    """microsoft/otdd's outer problem: geomloss on [x, label] points with the cost c/2 over the union table."""
    a, b = c["a"], c["b"]
    ka = len(a.gaussians.means)
    with dist._torch_owns_the_cores():
        table = torch.cat([torch.cat([dist.label_distances(a.gaussians, a.gaussians, same=True), c["table"]], 1),
                           torch.cat([c["table"].T, dist.label_distances(b.gaussians, b.gaussians, same=True)], 1)])
    table = table.to(torch.float32)

    def cost(x, y):
        fx, fy = x[..., :-1], y[..., :-1]
        squared = ((fx * fx).sum(-1)[..., :, None] + (fy * fy).sum(-1)[..., None, :]
                   - 2 * fx @ fy.transpose(-2, -1)).clamp_min(0)
        labels = table[x[..., -1].long()[..., :, None], y[..., -1].long()[..., None, :]]
        return (squared + labels) / 2

    za = torch.cat([a.points.float(), a.codes.float()[:, None]], 1)
    zb = torch.cat([b.points.float(), (b.codes + ka).float()[:, None]], 1)
    loss = geomloss.SamplesLoss(loss="sinkhorn", p=2, blur=0.1 ** 0.5, debias=True, backend="tensorized", cost=cost)
    return loss, za, zb


@pytest.mark.parametrize("classes", CLASS_COUNTS)
@pytest.mark.parametrize("n", SIZES)
def test_reference_geomloss(benchmark, n, classes):
    c = case(n, classes)
    loss, za, zb = reference_loss(c)

    def solve():
        with dist._torch_owns_the_cores():
            return 2 * float(loss(za, zb))

    start = time.perf_counter()
    value = benchmark.pedantic(solve, rounds=1, iterations=1)
    record(benchmark, n, classes, "reference", time.perf_counter() - start, value)


def test_rib_mini_matrix_before_and_after(benchmark):
    """The rib-mini matrix in mini-clip's feature space (8 datasets, 28 pairs, d = 64).

    Before: the exact solver, the old default (2000 points, 1600 for `hard`). After: the fast
    solver, which compares equal-size samples (1600 points each); its accuracy is checked
    against the exact solver on those very samples."""
    from ribench.catalog import PRETRAINS, SUITES
    from ribench.distance.suite import suite_distances

    suite = SUITES.get("rib-mini")()
    pretrained = PRETRAINS.get("mini-clip").load(suite)
    pretrained.model.eval()
    suite_distances(suite, pretrained, DistanceOptions(solver="exact", samples=50))   # features into the cache
    start = time.perf_counter()
    suite_distances(suite, pretrained, DistanceOptions(solver="exact"))
    exact_seconds = time.perf_counter() - start
    fast = benchmark.pedantic(lambda: suite_distances(suite, pretrained, DistanceOptions()), rounds=1, iterations=1)
    same_samples = suite_distances(suite, pretrained, DistanceOptions(solver="exact", samples=min(fast.samples.values())))
    positive = same_samples.values > 0
    errors = np.abs(fast.values - same_samples.values)[positive] / same_samples.values[positive]
    _rows[("rib-mini", 28, "matrix")] = {"exact_seconds": exact_seconds, "fast_seconds": fast.seconds["distances"],
                                         "max_relative_error": float(errors.max()),
                                         "points": min(fast.samples.values())}
    benchmark.extra_info.update(exact_seconds=exact_seconds, fast_seconds=fast.seconds["distances"],
                                max_relative_error=float(errors.max()))
    assert errors.max() <= 0.005


def test_table_of_ratios(benchmark):
    """Printed and written last: time, value and ratios per case, all measured in this run
    (it takes `benchmark` only so that --benchmark-only keeps it)."""
    lines = ["| classes | n | prep (tables) | fast | exact | POT emd2 | reference | ref / fast | exact / fast "
             "| fast error | reference error |", "|" + "---:|" * 11]
    table = []
    for classes in CLASS_COUNTS:
        for n in SIZES + FAST_ONLY:
            row = {m: _rows.get((n, classes, m)) for m in ("ribench fast", "ribench exact", "POT emd2", "reference")}
            if row["ribench fast"] is None:
                continue
            exact = row["ribench exact"]["value"] if row["ribench exact"] else None

            def t(m):
                return f"{row[m]['seconds']:.2f} s" if row[m] else "–"

            def err(m):
                return f"{100 * (row[m]['value'] - exact) / exact:+.3f}%" if row[m] and exact else "–"

            def ratio(m):
                return f"{row[m]['seconds'] / row['ribench fast']['seconds']:.1f}×" if row[m] else "–"
            lines.append(f"| {classes} | {n} | {row['ribench fast']['prep_seconds']:.2f} s | {t('ribench fast')} | "
                         f"{t('ribench exact')} | {t('POT emd2')} | {t('reference')} | {ratio('reference')} | "
                         f"{ratio('ribench exact')} | {err('ribench fast')} | {err('reference')} |")
            table.append({"classes": classes, "n": n, **{m: r for m, r in row.items()}})
    matrix = _rows.get(("rib-mini", 28, "matrix"))
    if matrix:
        lines.append(f"\nrib-mini matrix (28 pairs): exact (old default) {matrix['exact_seconds']:.1f} s, fast "
                     f"{matrix['fast_seconds']:.1f} s; fast vs exact on the same {matrix['points']}-point samples: "
                     f"largest relative difference {100 * matrix['max_relative_error']:.3f}%")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info["table"] = table
    print("\n" + "\n".join(lines))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"threads": torch.get_num_threads(), "dim": DIM, "cases": table,
                                   "rib_mini_matrix": matrix}, indent=2, default=float) + "\n")
    assert table
