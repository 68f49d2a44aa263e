"""Plan cells, run them in-process, write each finished cell to the store in one step.

A cell is (suite, pretrain, method + hyperparameters, protocol, downstream
dataset, seed), identified by the hash of everything that changes its result.
Finished cells are skipped, so a re-run trains nothing and an interrupted run
(even `kill -9`) resumes: a cell reaches the store whole or not at all.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ribench import __version__
from ribench.catalog import METHODS
from ribench.engine.compose import resolve_method
from ribench.engine.evaluate import evaluate_all
from ribench.data.features import cached_features
from ribench.errors import RibenchError
from ribench.run.labels import method_label
from ribench.run.spec import Cell, RunSpec, fit_context, ingredient_spec, ingredient_specs, plan
from ribench.store import CellRecord, Store, cell_key
from ribench.toolkit.weights import changed_tensors


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the ribench source, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def _default_ingredient_labels() -> frozenset:
    labels = set()
    for name in METHODS.names():
        try:
            method = METHODS.get(name)()
            for ingredient in method.ingredients():
                if ingredient != "pretrained":
                    labels.add(method_label(*resolve_method(ingredient)))
        except RibenchError:
            continue
    return frozenset(labels)


def keeps_weights(spec: RunSpec) -> bool:
    """Cells that a registered derived method needs by default store their weights (under any protocol)."""
    return method_label(spec.method_cls, spec.method_config) in _default_ingredient_labels()


def provenance(spec: RunSpec, pretrained) -> dict:
    return {
        "ribench": __version__, "git_commit": git_commit(), "torch": torch.__version__,
        "python": platform.python_version(), "device": spec.device, "threads": torch.get_num_threads(),
        "manifests_sha256": spec.suite.manifest_hash(), "weights_sha256": pretrained.weights_sha256,
    }


def pretrained_evaluation(spec: RunSpec, pretrained, store: Store) -> dict:
    """A_pre on every test split, computed once per (suite, pretrain, weights) and cached."""
    identity = {"kind": "pretrained", "suite": spec.suite.name, "manifests": spec.suite.manifest_hash(),
                "pretrain": spec.preset.name, "weights_sha256": pretrained.weights_sha256}
    key = cell_key(identity)
    found = store.get_pretrained(key)
    if found is not None:
        return found["accuracies"]
    accuracies, _ = evaluate_all(pretrained.model, pretrained.preprocess, spec.suite,
                                 spec.protocol.eval_batch_size, spec.device)
    store.put_pretrained(key, spec.suite.name, spec.preset.name, identity, accuracies,
                         provenance(spec, pretrained))
    return accuracies


def run_cell(spec: RunSpec, pretrained, cell: Cell, pretrained_acc: dict, ingredients=None):
    """Fine-tune a fresh copy of the pretrained model on one downstream train split, evaluate all.

    Returns the record and the trained model."""
    start = time.perf_counter()
    torch.manual_seed(cell.seed)
    ctx = fit_context(spec, pretrained, cell.dataset, cell.seed, ingredients=ingredients)
    method = spec.method_cls(spec.method_config)
    timings = method.fit(ctx)
    # What a method learned beside the weights (DiGraP's ω, Auto-RGN's layer rates) goes to details.
    learned = {k: timings.pop(k) for k in [k for k, v in timings.items() if not isinstance(v, (int, float))]}
    model = ctx.model      # a method may wrap the model (e.g. a visual prompt)
    t_eval = time.perf_counter()
    if spec.method_cls.uses_pretrained_eval:
        accuracies, details = dict(pretrained_acc), {}
    else:
        test_features = None
        if spec.method_cls.frozen_backbone:
            def test_features(name):
                return cached_features(pretrained, spec.suite.test_split(name), "test",
                                       spec.protocol.eval_batch_size, spec.device)
        accuracies, details = evaluate_all(model, pretrained.preprocess, spec.suite,
                                           spec.protocol.eval_batch_size, spec.device, test_features)
    if learned:
        details = {**details, "method": learned}
    timings["eval_s"] = time.perf_counter() - t_eval
    timings["total_s"] = time.perf_counter() - start
    return model, CellRecord(
        key=cell.key, suite=spec.suite.name, pretrain=spec.preset.name, method=spec.method_cls.name,
        label=spec.label, dataset=cell.dataset, seed=cell.seed, identity=cell.identity,
        accuracies=accuracies, status="done", details=details, timings=timings,
        provenance=provenance(spec, pretrained),
    )


def _done(store: Store, key: str) -> bool:
    record = store.get(key)
    return record is not None and record.status == "done"


def _max_difference(a: dict, b: dict) -> float:
    return max((abs(a[k] - b[k]) for k in a.keys() & b.keys()), default=0.0)


def load_pretrained(spec: RunSpec):
    """Build the pretrained classifier (fails with the missing file's name before any work)."""
    pretrained = spec.preset.load(spec.suite, spec.weights)
    pretrained.model.to(spec.device).eval()
    spec.suite.adopt_eval_transform(pretrained)
    return pretrained


def execute(spec: RunSpec, store: Store, pretrained=None, progress: bool = True, log=print,
            keep_weights: bool | None = None) -> dict:
    """Run every planned cell not yet in the store; returns counts and the pretrained accuracies.

    A derived method's ingredients run first (only the cells still missing) and
    keep their weights; its own cells then combine those weights.
    """
    pretrained = pretrained or load_pretrained(spec)
    pre_acc = pretrained_evaluation(spec, pretrained, store)
    needs = {}
    for name in ingredient_specs(spec):
        sub = ingredient_spec(spec, name)
        execute(sub, store, pretrained, progress, log, keep_weights=True)
        needs[name] = {(c.dataset, c.seed): c.key for c in plan(sub, pretrained)}
    keep = keeps_weights(spec) if keep_weights is None else keep_weights
    cells = plan(spec, pretrained)
    pending = [c for c in cells if not _done(store, c.key) or (keep and not store.has_weights(c.key))]
    refit = sum(1 for c in pending if _done(store, c.key))
    if len(pending) < len(cells):
        log(f"{len(cells) - len(pending)} of {len(cells)} {spec.label} cells already in the store; skipping them")
    if refit:
        log(f"{refit} stored {spec.label} cell(s) have no saved weights; training them again to keep them")
    bar = None
    if progress and pending:
        bar = tqdm(total=len(pending), unit="cell", desc=spec.label, leave=True)
    for cell in pending:
        if bar is not None:
            bar.set_postfix_str(f"{cell.dataset} seed {cell.seed}")
        try:
            ingredients = {name: store.load_weights(keys[(cell.dataset, cell.seed)], spec.device)
                           for name, keys in needs.items()}
            model, record = run_cell(spec, pretrained, cell, pre_acc, ingredients)
        except RibenchError:
            raise
        except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
            raise RibenchError(f"out of GPU memory in cell {cell.dataset}/seed {cell.seed}: {exc}") from exc
        if keep:
            store.save_weights(cell.key, changed_tensors(model, pretrained.model))
        stored = store.get(cell.key)
        if stored is None or stored.status != "done":
            store.put(record)
        elif _max_difference(stored.accuracies, record.accuracies) > 0:
            log(f"note: {spec.label} {cell.dataset}/seed {cell.seed} trained again for its weights differs "
                f"from the stored cell by up to {_max_difference(stored.accuracies, record.accuracies):.2%}; "
                "the stored accuracies are kept")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {"planned": len(cells), "ran": len(pending), "pretrained": pre_acc}
