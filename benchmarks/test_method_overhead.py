"""Per-step time of each method relative to `ft`, measured in the same run.

Each method trains on rib-mini's `sketch` train split at the protocol's batch
size; one benchmark round is one optimizer step with the method's hooks
(`ribench.engine.trainer.training_step`). `extra_info` records the median step time
relative to ft's (an ft step runs before each round, timed apart) and the one-time cost of the method's preparation (EWC's
Fisher, SAFT's mean gradient, importance, Auto-RGN's gradient norms, surprise,
criticality) in ft steps and in ft epochs of the split, and the bytes of the
optimizer's state against ft's (masked methods keep state for the mask only;
`sparse_overhead_bytes` is what their stand-ins and indices cost instead).

Run: python -m pytest benchmarks/test_method_overhead.py --benchmark-only
(RIBENCH_BENCH_ROUNDS sets the rounds, default 30; -k mini-clip one pretrain.)
"""

import os
import time

import numpy as np
import pytest
import torch

from ribench.run.cell import load_pretrained
from ribench.run.spec import fit_context, resolve
from ribench.toolkit.sparse import optimizer_state_bytes
from ribench.engine.trainer import position_labels, start_training, steps_per_epoch, training_step

METHODS = ["ft", "l2sp", "ewc", "lwf", "l2sp+lwf", "vpt", "lora", "lpft", "flyp",
           "saft", "imp-select", "imp-reg", "auto-rgn", "auto-rgn-hessian", "auto-rgn-change",
           "surprise", "surprise-diff", "criticality-identity", "criticality-random", "digrap"]
ROUNDS = int(os.environ.get("RIBENCH_BENCH_ROUNDS", "30"))
_ft: dict[str, dict] = {}


@pytest.fixture(scope="module", params=["mini-clip", "mini-sup"])
def pretrained(request):
    spec = resolve("ft", "rib-mini", request.param, datasets=["sketch"], seeds=[0], protocol="reference")
    return spec, load_pretrained(spec)


def _stepper(pre, method):
    """(one-step closure, ctx, optimizer, prepare seconds) for `method` on rib-mini's sketch split."""
    run = resolve(method, "rib-mini", pre.name, datasets=["sketch"], seeds=[0], protocol="reference")
    ctx = fit_context(run, pre, "sketch", 0,
                      ingredients={"lp[fit=lbfgs]": {"head.weight": pre.model.head.weight.detach()}})
    split = ctx.train
    torch.manual_seed(0)
    instance = run.method_cls(run.method_config)
    t0 = time.perf_counter()
    optimizer = start_training(instance, ctx)
    prepare_s = time.perf_counter() - t0
    n = run.protocol.batch_size
    x = pre.preprocess(torch.from_numpy(split.images[:n]))
    y = torch.from_numpy(position_labels(split.labels[:n], split.class_mask))
    mask = torch.as_tensor(split.class_mask)
    epoch_steps = steps_per_epoch(len(split), run.protocol.batch_size)
    return (lambda: training_step(instance, ctx, optimizer, x, y, mask, np.arange(n))), ctx, optimizer, \
        prepare_s, epoch_steps


@pytest.mark.parametrize("method", METHODS)
def test_training_step(benchmark, pretrained, method):
    """The method's step, with one ft step (timed apart) before each round, so a
    busy machine slows both alike and step_vs_ft compares like with like."""
    spec, pre = pretrained
    if method == "flyp" and not pre.has_text_tower:
        pytest.skip("flyp needs a text tower")
    step, ctx, optimizer, prepare_s, epoch_steps = _stepper(pre, method)
    ft_step = _stepper(pre, "ft")[0]
    ft_times = []

    def time_ft_step():
        t = time.perf_counter()
        ft_step()
        ft_times.append(time.perf_counter() - t)

    benchmark.pedantic(step, setup=time_ft_step, rounds=ROUNDS, warmup_rounds=min(5, ROUNDS))
    if benchmark.disabled:          # --benchmark-disable: the step ran once, untimed
        return
    median = benchmark.stats.stats.median
    ft_median = float(np.median(ft_times[-ROUNDS:]))
    state = optimizer_state_bytes(optimizer)
    if method == "ft":
        _ft[pre.name] = {"state": state}
    info = benchmark.extra_info
    info["ft_step_s"] = round(ft_median, 4)
    info["step_vs_ft"] = round(median / ft_median, 3)
    info["prepare_s"] = round(prepare_s, 3)
    info["prepare_in_ft_steps"] = round(prepare_s / ft_median, 1)
    info["prepare_in_ft_epochs"] = round(prepare_s / (ft_median * epoch_steps), 2)
    info["state_bytes"] = state
    if "sparse" in ctx.state:
        info["masked_weights"] = ctx.state["sparse"].count()
        info["sparse_overhead_bytes"] = ctx.state["sparse"].overhead_bytes()
    if pre.name in _ft:
        info["state_vs_ft"] = round(state / _ft[pre.name]["state"], 4)
