"""Per-step time of each method relative to `ft`, measured in the same run.

Each method trains on rib-mini's `sketch` train split at the protocol's batch
size; one benchmark round is one optimizer step with the method's hooks
(`ribench.trainer.training_step`). `extra_info` records the median step time
relative to ft's and the one-time cost of the method's preparation (EWC's
Fisher, SAFT's mean gradient, importance, Auto-RGN's gradient norms, surprise,
criticality) in ft steps and in ft epochs of the split.

Run: python -m pytest benchmarks/test_method_overhead.py --benchmark-only
"""

import copy
import time

import numpy as np
import pytest
import torch

from ribench.features import cached_features
from ribench.method import FitContext
from ribench.runner import load_pretrained, resolve
from ribench.trainer import position_labels, start_training, steps_per_epoch, training_step

METHODS = ["ft", "l2sp", "ewc", "lwf", "l2sp+lwf", "vpt", "lora", "lpft", "flyp",
           "saft", "imp-select", "imp-reg", "auto-rgn", "auto-rgn-hessian", "auto-rgn-change",
           "surprise", "surprise-diff", "criticality-identity", "criticality-random", "digrap"]
_ft_median: dict[str, float] = {}


@pytest.fixture(scope="module", params=["mini-clip", "mini-sup"])
def pretrained(request):
    spec = resolve("ft", "rib-mini", request.param, datasets=["sketch"], seeds=[0])
    return spec, load_pretrained(spec)


@pytest.mark.parametrize("method", METHODS)
def test_training_step(benchmark, pretrained, method):
    spec, pre = pretrained
    if method == "flyp" and not pre.has_text_tower:
        pytest.skip("flyp needs a text tower")
    run = resolve(method, "rib-mini", pre.name, datasets=["sketch"], seeds=[0])
    split = run.suite.train_split("sketch")
    frozen = copy.deepcopy(pre.model).eval().requires_grad_(False)
    ctx = FitContext(copy.deepcopy(pre.model), frozen, split, run.suite.train_split("photo"), pre.preprocess,
                     run.protocol, 0, train_features=lambda: cached_features(pre, split, "train"),
                     has_text_tower=pre.has_text_tower, class_names=tuple(run.suite.class_names),
                     templates=tuple(run.suite.templates),
                     ingredients={"lp[fit=lbfgs]": {"head.weight": pre.model.head.weight.detach()}})
    torch.manual_seed(0)
    instance = run.method_cls(run.method_config)
    t0 = time.perf_counter()
    optimizer = start_training(instance, ctx)
    prepare_s = time.perf_counter() - t0
    n = run.protocol.batch_size
    x = pre.preprocess(torch.from_numpy(split.images[:n]))
    y = torch.from_numpy(position_labels(split.labels[:n], split.class_mask))
    mask = torch.as_tensor(split.class_mask)
    benchmark.pedantic(lambda: training_step(instance, ctx, optimizer, x, y, mask, np.arange(n)),
                       rounds=30, warmup_rounds=5)
    median = benchmark.stats.stats.median
    if method == "ft":
        _ft_median[pre.name] = median
    benchmark.extra_info["prepare_s"] = round(prepare_s, 3)
    if pre.name in _ft_median:
        ft = _ft_median[pre.name]
        benchmark.extra_info["step_vs_ft"] = round(median / ft, 3)
        benchmark.extra_info["prepare_in_ft_steps"] = round(prepare_s / ft, 1)
        epoch_s = ft * steps_per_epoch(len(split), run.protocol.batch_size)
        benchmark.extra_info["prepare_in_ft_epochs"] = round(prepare_s / epoch_s, 2)
