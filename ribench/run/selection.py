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
from ribench.run.executor import Executor
from ribench.run.cell import load_pretrained
from ribench.run.runner import run_specs
from ribench.run.choices import selections_path
from ribench.run.labels import method_label
from ribench.run.spec import RunSpec, plan, resolve
from ribench.store import Store

HOLDOUT = 0.25
SELECTION_SEED = 0


def candidates(method: str, suite: str, pretrain: str, overrides=(), datasets=None, includes=(),
               device: str = "cpu", weights: str | None = None, data_root: str | None = None,
               check_device: bool = True) -> tuple[RunSpec, list[tuple[float, RunSpec]]]:
    """(the method under its recipe, [(grid value, its selection run)]) on the suite's selection datasets.

    `overrides` (--set) apply to every candidate, e.g. a shorter schedule; the tuned runs must then use
    the same ones."""
    where = dict(device=device, weights=weights, includes=includes, data_root=data_root, check_device=check_device)
    base = resolve(method, suite, pretrain, overrides=overrides, protocol="recipe", **where)
    recipe = base.method_cls.recipe
    if recipe is None or base.method_cls.tunes_nothing:
        raise ConfigError(f"method '{base.label}' trains nothing through a protocol; it has nothing to tune")
    chosen_on = list(datasets or base.suite.selection_datasets or base.suite.downstream)
    runs = []
    for value in recipe.grid():
        setting = f"protocol.lr={value!r}" if recipe.tune == "lr" else f"method.{recipe.tune}={value!r}"
        runs.append((value, resolve(method, suite, pretrain, chosen_on, [SELECTION_SEED], [*overrides, setting],
                                    protocol="recipe", holdout=HOLDOUT, **where)))
    return base, runs


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
    per_dataset = {value: {c.dataset: _heldout(store, c.key) for c in plan(spec, pretrained)}
                   for value, spec in runs}
    # A candidate with a failed (diverged) cell has no score: it is never chosen.
    scores = {value: None if None in accs.values() else sum(accs.values()) / len(accs)
              for value, accs in per_dataset.items()}
    grid = [value for value, _ in runs]
    if all(score is None for score in scores.values()):
        raise RibenchError(f"every {recipe.tune} candidate of {base.label} diverged on held-out train data; "
                           "nothing to choose (see 'ribench results' for the failed cells)")
    middle = len(grid) // 2       # ties go to the value nearest the recipe's
    best = max((v for v in grid if scores[v] is not None), key=lambda v: (scores[v], -abs(grid.index(v) - middle)))
    pre = {c.dataset: store.get(c.key).accuracies["pretrained_heldout"] for c in plan(runs[0][1], pretrained)}
    return {
        "method": method_label(base.method_cls, base.method_config), "tune": recipe.tune, "value": best, "grid": grid,
        "heldout_acc": {repr(v): None if scores[v] is None else round(scores[v], 6) for v in grid},
        "pretrained_heldout_acc": round(sum(pre.values()) / len(pre), 6),
        "datasets": list(runs[0][1].datasets), "seed": SELECTION_SEED, "holdout": HOLDOUT,
        "overrides": list(overrides),
        "recipe": {"optimizer": recipe.optimizer, "lr": base.protocol.lr, "weight_decay": recipe.weight_decay,
                   "momentum": recipe.momentum, "source": recipe.source},
        "at_grid_edge": best in (grid[0], grid[-1]),
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
