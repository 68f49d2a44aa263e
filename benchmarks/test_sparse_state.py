"""saft, imp-select and imp-reg against ft: step time, optimizer state and one-time preparation.

Each method trains on rib-mini's `sketch` train split at the protocol's batch
size; one benchmark round is one optimizer step with the method's hooks
(`ribench.trainer.training_step`), as in test_method_overhead.py.
`extra_info` records, per method and pretrain:

- step_vs_ft: median step time over ft's, measured in the same run;
- state_bytes / state_vs_ft: bytes of the optimizer's state (momentum
  buffers) and their ratio to ft's; sparse_overhead_bytes: the stand-ins and
  their index vectors that sparse state costs in exchange (`ribench.sparse`);
- prepare_s / prepare_vs_ft_epoch: the one-time mask or importance computation
  (SAFT's mean gradient, the per-sample importance) in seconds and relative to
  one training epoch of ft (ft's median step × steps per epoch).

Run: python -m pytest benchmarks/test_sparse_state.py --benchmark-only
(RIBENCH_BENCH_ROUNDS sets the rounds, default 30.)
"""

import copy
import os
import time

import numpy as np
import pytest
import torch

from ribench.features import cached_features
from ribench.method import FitContext
from ribench.runner import load_pretrained, resolve
from ribench.sparse import optimizer_state_bytes
from ribench.trainer import position_labels, start_training, steps_per_epoch, training_step

METHODS = ["ft", "saft", "imp-select", "imp-reg"]
ROUNDS = int(os.environ.get("RIBENCH_BENCH_ROUNDS", "30"))
_ft: dict[str, dict] = {}


@pytest.fixture(scope="module", params=["mini-clip", "mini-sup"])
def pretrained(request):
    spec = resolve("ft", "rib-mini", request.param, datasets=["sketch"], seeds=[0])
    return spec, load_pretrained(spec)


@pytest.mark.parametrize("method", METHODS)
def test_sparse_training_step(benchmark, pretrained, method):
    spec, pre = pretrained
    run = resolve(method, "rib-mini", pre.name, datasets=["sketch"], seeds=[0])
    split = run.suite.train_split("sketch")
    frozen = copy.deepcopy(pre.model).eval().requires_grad_(False)
    ctx = FitContext(copy.deepcopy(pre.model), frozen, split, run.suite.train_split("photo"), pre.preprocess,
                     run.protocol, 0, train_features=lambda: cached_features(pre, split, "train"),
                     has_text_tower=pre.has_text_tower, class_names=tuple(run.suite.class_names),
                     templates=tuple(run.suite.templates))
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
                       rounds=ROUNDS, warmup_rounds=min(5, ROUNDS))
    median = benchmark.stats.stats.median
    state = optimizer_state_bytes(optimizer)
    if method == "ft":
        _ft[pre.name] = {"median": median, "state": state,
                         "epoch_s": median * steps_per_epoch(len(split), run.protocol.batch_size)}
    info = benchmark.extra_info
    info["prepare_s"] = round(prepare_s, 3)
    info["state_bytes"] = state
    if "sparse" in ctx.state:
        info["masked_weights"] = ctx.state["sparse"].count()
        info["sparse_overhead_bytes"] = ctx.state["sparse"].overhead_bytes()
    ft = _ft.get(pre.name)
    if ft is not None:
        info["step_vs_ft"] = round(median / ft["median"], 3)
        info["state_vs_ft"] = round(state / ft["state"], 4)
        info["prepare_vs_ft_epoch"] = round(prepare_s / ft["epoch_s"], 2)
