"""Plan cells, run them in-process, write each finished cell to the store in one step.

A cell is (suite, pretrain, method + hyperparameters, protocol, downstream
dataset, seed), identified by the hash of everything that changes its result.
Finished cells are skipped, so a re-run trains nothing and an interrupted run
(even `kill -9`) resumes: a cell reaches the store whole or not at all.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ribench import __version__
from ribench.catalog import METHODS, PRETRAINS, SUITES
from ribench.engine.compose import method_class, resolve_method
from ribench.engine.settings import parse_spec
from ribench.errors import ConfigError, RibenchError
from ribench.engine.evaluate import evaluate_all
from ribench.data.features import cached_features
from ribench.engine.context import FitContext
from ribench.engine.settings import configure_protocol, split_overrides
from ribench.store import CellRecord, Store, cell_key
from ribench.toolkit.weights import changed_tensors


@dataclass
class Cell:
    dataset: str
    seed: int
    identity: dict
    key: str = ""

    def __post_init__(self):
        self.key = cell_key(self.identity)


@dataclass
class RunSpec:
    """Everything resolved and validated before any work starts."""

    suite: object
    preset: object
    method_cls: type
    method_config: object
    protocol: object
    datasets: list
    seeds: list
    device: str = "cpu"
    weights: str | None = None
    label: str = ""


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the ribench source, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def protocol_changes(protocol, suite_protocol) -> dict:
    """The protocol settings a run overrides (`--set lr=...`), so that its label tells it apart."""
    base = suite_protocol.as_dict()
    return {k: v for k, v in protocol.as_dict().items() if base.get(k) != v}


def method_label(method_cls, config, protocol_changed: dict | None = None) -> str:
    """'ft', 'lp[fit=lbfgs]' when hyperparameters differ from the defaults, 'ft[lr=0.0001]' off the suite's protocol.

    Two runs that differ only in protocol would otherwise share a label, and the
    report could not tell their cells apart.
    """
    defaults = method_cls.defaults()
    changed = {k: v for k, v in method_cls.settings(config).items() if defaults.get(k) != v}
    changed.update(protocol_changed or {})
    if not changed:
        return method_cls.name
    return method_cls.name + "[" + ",".join(f"{k}={v}" for k, v in sorted(changed.items())) + "]"


def run_label(spec: "RunSpec") -> str:
    """The label of a run's cells: its method settings and its protocol changes."""
    return method_label(spec.method_cls, spec.method_config, protocol_changes(spec.protocol, spec.suite.protocol))


def resolve(method: str, suite: str = "rib-mini", pretrain: str = "mini-clip", datasets=None, seeds=(0,),
            overrides=(), device: str = "cpu", weights: str | None = None, includes=(),
            data_root: str | None = None) -> RunSpec:
    """Turn command-line names into a validated RunSpec, or raise a one-line RibenchError."""
    for path in includes:
        METHODS.include(path)
    method_name, inline = parse_spec(method)
    method_cls = method_class(method_name)
    suite_obj = SUITES.get(suite)()
    suite_obj.attach_data(data_root)
    preset = PRETRAINS.get(pretrain)
    method_over, protocol_over = split_overrides(list(overrides), method_cls)
    config = method_cls.configure({**inline, **method_over})
    protocol = configure_protocol(suite_obj.protocol, protocol_over)
    if datasets:
        for name in datasets:
            if suite_obj.info(name).role != "downstream":
                raise ConfigError(f"'{name}' is the pretraining-domain set of {suite_obj.name}; "
                                  f"choose among {', '.join(suite_obj.downstream)}")
        datasets = list(dict.fromkeys(datasets))
    else:
        datasets = suite_obj.downstream
    if not seeds:
        raise ConfigError("no seeds given")
    if method_cls.requires_text_tower and not preset.has_text_tower:
        raise ConfigError(f"method '{method_cls.name}' needs a text tower; pretrain '{preset.name}' has none")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but no CUDA device is available here")
    spec = RunSpec(suite_obj, preset, method_cls, config, protocol, datasets, list(seeds), device, weights)
    spec.label = run_label(spec)
    for name in ingredient_specs(spec):      # validate what a derived method needs, before any work
        ingredient_spec(spec, name)
    return spec


def ingredient_specs(spec: RunSpec) -> list[str]:
    return [n for n in spec.method_cls(spec.method_config).ingredients() if n != "pretrained"]


def ingredient_spec(spec: RunSpec, method: str) -> RunSpec:
    """The run whose cells a derived method of `spec` needs: same suite, pretrain, protocol."""
    cls, config = resolve_method(method)
    if cls.requires_text_tower and not spec.preset.has_text_tower:
        raise ConfigError(f"method '{spec.label}' needs '{method}', which needs a text tower; "
                          f"pretrain '{spec.preset.name}' has none")
    sub = dataclasses.replace(spec, method_cls=cls, method_config=config)
    sub.label = run_label(sub)
    if sub.label == spec.label:
        raise ConfigError(f"method '{spec.label}' cannot be its own ingredient")
    return sub


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


def plan(spec: RunSpec, pretrained) -> list[Cell]:
    """One cell per seed x downstream dataset, round-robin over datasets within each seed."""
    base = {
        "suite": spec.suite.name, "manifests": spec.suite.manifest_hash(),
        "pretrain": spec.preset.name, "weights_sha256": pretrained.weights_sha256,
        "method": spec.method_cls.name, "config": spec.method_cls.settings(spec.method_config),
        "protocol": spec.protocol.as_dict(),
    }
    return [Cell(d, s, dict(base, dataset=d, seed=s)) for s in spec.seeds for d in spec.datasets]


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
    model = copy.deepcopy(pretrained.model).to(spec.device)
    frozen = copy.deepcopy(pretrained.model).to(spec.device).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    train_split = spec.suite.train_split(cell.dataset)
    ctx = FitContext(
        model=model, pretrained=frozen, train=train_split,
        source=spec.suite.train_split(spec.suite.pretrain_eval),
        preprocess=pretrained.preprocess, protocol=spec.protocol, seed=cell.seed, device=spec.device,
        train_features=lambda: cached_features(pretrained, train_split, "train",
                                               spec.protocol.eval_batch_size, spec.device),
        has_text_tower=pretrained.has_text_tower,
        class_names=tuple(spec.suite.class_names), templates=tuple(spec.suite.templates),
        ingredients=dict(ingredients or {}),
    )
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
        from tqdm import tqdm

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
