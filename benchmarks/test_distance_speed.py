"""Time of one OTDD against sample size (1k, 2k, 5k points per dataset, d = 512), per solver.

Two synthetic datasets of 10 Gaussian classes each, the second a shifted, rescaled copy;
one round per size, as one distance is seconds long. Run:
python -m pytest benchmarks/test_distance_speed.py --benchmark-only   (RIBENCH_BENCH_THREADS sets torch threads)
"""

import numpy as np
import pytest

from ribench.distance.options import DistanceOptions, LabelledFeatures
from ribench.distance.otdd import otdd

DIM, CLASSES = 512, 10


def labelled(name, n, seed, shift=0.0, spread=1.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(CLASSES, DIM))
    labels = np.arange(n) % CLASSES
    features = centres[labels] + spread * rng.normal(size=(n, DIM)) * 0.5 + shift
    return LabelledFeatures(name, features.astype(np.float32), labels)


@pytest.fixture(scope="module", autouse=True)
def _warm_up():
    """Import POT and initialise torch's linear algebra before the first timed call."""
    for solver in ("exact", "sinkhorn"):
        otdd(labelled("a", 100, 1), labelled("b", 100, 2, shift=0.05), DistanceOptions(solver=solver), device="cpu")


@pytest.mark.parametrize("solver", ["exact", "sinkhorn"])
@pytest.mark.parametrize("points", [1000, 2000, 5000])
def test_one_distance(benchmark, solver, points):
    a = labelled("a", points, 1)
    b = labelled("b", points, 2, shift=0.05, spread=1.2)
    options = DistanceOptions(solver=solver, samples=points)
    benchmark.extra_info.update(points=points, dim=DIM, solver=solver, epsilon=options.epsilon)
    value = benchmark.pedantic(lambda: otdd(a, b, options, device="cpu"), rounds=1, iterations=1)
    benchmark.extra_info["value"] = value
    assert value > 0
