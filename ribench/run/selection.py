"""The `tuned` protocol's selection: each method's one tuned quantity (its lr, or its defining
strength) chosen on held-out parts of the downstream *train* splits, never on a test split.

For a method and pretrain, every value of its recipe's grid (the same size for every
method) is trained on the fit part (75%) of each selection dataset's train split and
scored by accuracy on the held-out 25%; the chosen value maximises the mean over
datasets. Each (value, dataset) is a stored cell of status "selection" (resumable,
never recomputed); the choice is written to a selections file and recorded in
every tuned result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ribench.errors import ConfigError, RibenchError
from ribench.paths import data_home
from ribench.run.executor import Executor
from ribench.run.runner import run_specs
from ribench.run.spec import RunSpec, plan, resolve
from ribench.store import Store

HOLDOUT = 0.25
SELECTION_SEED = 0
SHIPPED = Path(__file__).resolve().parent.parent / "suites" / "selections"


def selections_path(suite: str, shipped: bool = False) -> Path:
    """Where a suite's chosen values live: the user's file (written by `ribench tune`) or the shipped one."""
    return (SHIPPED if shipped else data_home() / "selections") / f"{suite}.json"


def load_selections(suite: str) -> dict:
    """{pretrain: {method label: choice}}: the user's choices over the shipped ones."""
    merged: dict = {}
    for path in (selections_path(suite, shipped=True), selections_path(suite)):
        if path.is_file():
            try:
                found = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise RibenchError(f"cannot read the selections file {path}: {error}") from None
            for pretrain, choices in found.items():
                merged.setdefault(pretrain, {}).update(choices)
    return merged


def candidates(method: str, suite: str, pretrain: str, includes=(), device: str = "cpu",
               weights: str | None = None, data_root: str | None = None,
               check_device: bool = True) -> tuple[RunSpec, list[tuple[float, RunSpec]]]:
    """(the method under its recipe, [(grid value, its selection run)]) on the suite's selection datasets."""
    base = resolve(method, suite, pretrain, includes=includes, device=device, weights=weights,
                   data_root=data_root, protocol="recipe", check_device=check_device)
    recipe = base.method_cls.recipe
    if recipe is None:
        raise ConfigError(f"method '{base.label}' trains nothing under a protocol; it has nothing to tune")
    datasets = list(base.suite.selection_datasets or base.suite.downstream)
    runs = []
    for value in recipe.grid():
        setting = f"protocol.lr={value}" if recipe.tune == "lr" else f"method.{recipe.tune}={value}"
        runs.append((value, resolve(method, suite, pretrain, datasets, [SELECTION_SEED], [setting], device,
                                    weights, includes, data_root, protocol="recipe", holdout=HOLDOUT,
                                    check_device=check_device)))
    return base, runs


def tune(method: str, suite: str, pretrain: str, store: Store, executor: Executor | None = None,
         includes=(), progress: bool = True, log=print, **where) -> dict:
    """Run (or resume) a method's selection and return its choice (not yet written anywhere)."""
    base, runs = candidates(method, suite, pretrain, includes, **where)
    if base.method_cls.recipe.tune != "lr" and base.method_cls.recipe.lr_from:
        lr_from = base.method_cls.recipe.lr_from
        log(f"{base.label} tunes {base.method_cls.recipe.tune} at {lr_from}'s chosen lr "
            f"({base.protocol.lr:g})")
    run_specs([spec for _, spec in runs], store, executor, progress=progress, log=log, keep_weights=False)
    scores, per_dataset = {}, {}
    for value, spec in runs:
        loaded = spec.preset.load(spec.suite, spec.weights)
        cells = [store.get(c.key) for c in plan(spec, loaded)]
        per_dataset[value] = {c.dataset: c.accuracies["heldout"] for c in cells}
        scores[value] = sum(per_dataset[value].values()) / len(cells)
    grid = [value for value, _ in runs]
    chosen = max(grid, key=lambda v: (scores[v], -abs(grid.index(v) - len(grid) // 2)))
    recipe = base.method_cls.recipe
    return {
        "method": base.label, "tune": recipe.tune, "value": chosen, "grid": grid,
        "heldout_acc": {str(v): round(scores[v], 6) for v in grid},
        "per_dataset": {str(v): {d: round(a, 6) for d, a in per_dataset[v].items()} for v in grid},
        "datasets": list(runs[0][1].datasets), "seed": SELECTION_SEED, "holdout": HOLDOUT,
        "recipe": {"optimizer": recipe.optimizer, "lr": base.protocol.lr, "weight_decay": recipe.weight_decay,
                   "momentum": recipe.momentum, "source": recipe.source},
        "at_grid_edge": chosen in (grid[0], grid[-1]),
    }


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
