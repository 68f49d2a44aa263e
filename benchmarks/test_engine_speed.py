"""Speed of the engine's two hot paths on rib-mini: one ft step, one evaluation of all test splits.

Run: python -m pytest benchmarks --benchmark-only   (RIBENCH_BENCH_THREADS sets torch threads)
"""

import copy

import pytest
import torch

from ribench.engine.evaluate import evaluate_all
from ribench.engine.context import FitContext
from ribench.run.cell import load_pretrained
from ribench.run.spec import resolve
from ribench.engine.trainer import position_labels, start_training, training_step


@pytest.fixture(scope="module", params=["mini-clip", "mini-sup"])
def setup(request):
    spec = resolve("ft", "rib-mini", request.param, datasets=["sketch"], seeds=[0], protocol="reference")
    return spec, load_pretrained(spec)


def test_ft_training_step(benchmark, setup):
    spec, pretrained = setup
    model = copy.deepcopy(pretrained.model).train()
    split = spec.suite.train_split("sketch")
    method = spec.method_cls(spec.method_config)
    ctx = FitContext(model, pretrained.model, split, split, pretrained.preprocess, spec.protocol, 0)
    optimizer = start_training(method, ctx)
    images = torch.from_numpy(split.images[: spec.protocol.batch_size])
    labels = torch.from_numpy(position_labels(split.labels[: spec.protocol.batch_size], split.class_mask))
    mask = torch.as_tensor(split.class_mask)

    def step():   # preprocessing included, as in the trainer
        training_step(method, ctx, optimizer, pretrained.preprocess(images), labels, mask)

    benchmark.extra_info["batch_size"] = spec.protocol.batch_size
    benchmark.pedantic(step, rounds=10, warmup_rounds=2)


def test_evaluate_all_test_splits(benchmark, setup):
    spec, pretrained = setup
    for name in spec.suite.evaluated:      # data generation/caching is not what we time
        spec.suite.test_split(name)
    n = sum(len(spec.suite.test_split(name)) for name in spec.suite.evaluated)
    benchmark.extra_info["images"] = n
    benchmark.pedantic(lambda: evaluate_all(pretrained.model, pretrained.preprocess, spec.suite), rounds=3)
