"""The `tuned` protocol's selection: each method's one tuned quantity (its lr, or its defining
strength) chosen on held-out parts of the downstream *train* splits, never on a test split.

For a method and pretrain, every value of its recipe's grid (the same size for every
method) is trained on the fit part (75%) of each selection dataset's train split and
scored by accuracy on the held-out 25%; the chosen value maximises the mean over
datasets. When the best value is at an edge of the grid, the grid follows it, one
grid step (a decade) at a time beyond that edge, at most EDGE_STEPS times, the same
rule for every method, so that a choice is an optimum and not the grid's bound. Each
(value, dataset) is a stored cell of status "selection" (resumable, never
recomputed); the choice is written to a selections file and recorded in every tuned
result.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ribench.errors import ConfigError, RibenchError
from ribench.run.executor import Executor
from ribench.run.cell import load_pretrained
from ribench.run.runner import run_specs
from ribench.run.choices import selections_path
from ribench.run.labels import method_label
from ribench.run.spec import RunSpec, plan, resolve
from ribench.store import Store

HOLDOUT = 0.25
SELECTION_SEED = 0
EDGE_STEPS = 2          # values tried beyond an edge of the grid, one grid step apart, while the best sits there


def candidates(method: str, suite: str, pretrain: str, overrides=(), datasets=None, includes=(),
               device: str = "cpu", weights: str | None = None, data_root: str | None = None,
               check_device: bool = True, kernels: str = "auto",
               compile: bool = False) -> tuple[RunSpec, list[tuple[float, RunSpec]]]:
    """(the method under its recipe, [(grid value, its selection run)]) on the suite's selection datasets.

    `overrides` (--set) apply to every candidate, e.g. a shorter schedule; the tuned runs must then use
    the same ones."""
    where = _where(includes, device, weights, data_root, check_device, kernels, compile)
    base = resolve(method, suite, pretrain, overrides=overrides, protocol="recipe", **where)
    recipe = base.method_cls.recipe
    if recipe is None or base.method_cls.tunes_nothing_with(base.method_config):
        raise ConfigError(f"method '{base.label}' trains nothing through a protocol; it has nothing to tune")
    chosen_on = list(datasets or base.suite.selection_datasets or base.suite.downstream)
    runs = [(value, selection_run(method, suite, pretrain, value, chosen_on, overrides, recipe.tune, where))
            for value in recipe.grid()]
    return base, runs


def selection_run(method: str, suite: str, pretrain: str, value: float, chosen_on, overrides, tune: str,
                  where: dict) -> RunSpec:
    """The run that scores one value of the tuned quantity on the held-out parts."""
    setting = f"protocol.lr={value!r}" if tune == "lr" else f"method.{tune}={value!r}"
    return resolve(method, suite, pretrain, chosen_on, [SELECTION_SEED], [*overrides, setting],
                   protocol="recipe", holdout=HOLDOUT, **where)


def _beyond(grid: list[float], best: float) -> float | None:
    """The next value past the edge the best sits at, one grid step further; None if it is inside."""
    ordered = sorted(grid)
    if len(ordered) < 2 or best not in (ordered[0], ordered[-1]):
        return None
    step = ordered[1] / ordered[0] if best == ordered[0] else ordered[-1] / ordered[-2]
    return float(f"{(best / step if best == ordered[0] else best * step):.3g}")


def _heldout(store: Store, key: str) -> float | None:
    """A selection cell's held-out accuracy; None for a cell that failed (diverged)."""
    record = store.get(key)
    return None if record is None or "heldout" not in record.accuracies else record.accuracies["heldout"]


def tune(method: str, suite: str, pretrain: str, store: Store, executor: Executor | None = None,
         overrides=(), datasets=None, includes=(), progress: bool = True, log=print, **where) -> dict:
    """Run (or resume) a method's selection; returns its choice (written nowhere yet)."""
    base, runs = candidates(method, suite, pretrain, overrides, datasets, includes, **where)
    recipe = base.method_cls.recipe
    if recipe.lr_from:
        log(f"{base.label} tunes {recipe.tune} at {recipe.lr_from}'s chosen lr ({base.protocol.lr:g})")
    run_specs([spec for _, spec in runs], store, executor, progress=progress, log=log, keep_weights=False)
    pretrained = load_pretrained(base, "cpu")
    # a candidate with a failed (diverged) cell has no score: it is never chosen
    scores = {value: _score(store, spec, pretrained) for value, spec in runs}
    grid = sorted(scores)
    if all(score is None for score in scores.values()):
        raise RibenchError(f"every {recipe.tune} candidate of {base.label} diverged on held-out train data; "
                           "nothing to choose (see 'ribench results' for the failed cells)")
    centre = base.protocol.lr if recipe.tune == "lr" else recipe.centre
    middle = grid.index(min(grid, key=lambda v: abs(math.log(v / centre))))
    best = _best(grid, scores, middle)                                           # ties: nearest the recipe's
    extended = []
    chosen_on = list(runs[0][1].datasets)
    for _ in range(EDGE_STEPS):
        value = _beyond(grid, best)
        if value is None:
            break
        log(f"{base.label}: the best {recipe.tune} {best:g} is at the grid's edge; trying {value:g}")
        spec = selection_run(method, suite, pretrain, value, chosen_on, overrides, recipe.tune,
                             _where(includes, **where))
        run_specs([spec], store, executor, progress=progress, log=log, keep_weights=False)
        runs.append((value, spec))
        scores[value] = _score(store, spec, pretrained)
        extended.append(value)
        grid = sorted(scores)
        best = _best(grid, scores, grid.index(best))
    pre = {c.dataset: store.get(c.key).accuracies["pretrained_heldout"] for c in plan(runs[0][1], pretrained)}
    return {
        "method": method_label(base.method_cls, base.method_config), "tune": recipe.tune, "value": best, "grid": grid,
        "extended": extended,
        "heldout_acc": {repr(v): None if scores[v] is None else round(scores[v], 6) for v in grid},
        "pretrained_heldout_acc": round(sum(pre.values()) / len(pre), 6),
        "datasets": chosen_on, "seed": SELECTION_SEED, "holdout": HOLDOUT,
        "overrides": list(overrides),
        "recipe": {"optimizer": recipe.optimizer, "lr": base.protocol.lr, "weight_decay": recipe.weight_decay,
                   "momentum": recipe.momentum, "source": recipe.source},
        "at_grid_edge": best in (grid[0], grid[-1]),
    }


def _score(store: Store, spec: RunSpec, pretrained) -> float | None:
    """Mean held-out accuracy over the selection datasets; None if a cell failed (diverged)."""
    accs = [_heldout(store, c.key) for c in plan(spec, pretrained)]
    return None if None in accs else sum(accs) / len(accs)


def _best(grid: list[float], scores: dict, near: int) -> float:
    """The best-scoring value; among equals, the one nearest position `near` of the grid."""
    return max((v for v in grid if scores[v] is not None), key=lambda v: (scores[v], -abs(grid.index(v) - near)))


def _where(includes=(), device: str = "cpu", weights: str | None = None, data_root: str | None = None,
           check_device: bool = True, kernels: str = "auto", compile: bool = False) -> dict:
    """Where every selection run resolves: the same for the grid and for the values past its edge."""
    return {"device": device, "weights": weights, "includes": includes, "data_root": data_root,
            "check_device": check_device, "kernels": kernels, "compile": compile}


def write_selection(suite: str, pretrain: str, choice: dict, shipped: bool = False) -> Path:
    """Record a choice in the user's selections file (or, for maintainers, the shipped one), atomically."""
    path = selections_path(suite, shipped)
    found = json.loads(path.read_text()) if path.is_file() else {}
    found.setdefault(pretrain, {})[choice["method"]] = {k: v for k, v in choice.items() if k != "method"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path
