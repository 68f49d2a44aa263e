"""A run resolved from names: the validated RunSpec, its cells, and the one fit-context factory.

Everything a command names (method spec, suite, pretrain, datasets, seeds, `--set`)
is checked here, before any work starts, so a typo fails in one line.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch

from ribench.catalog import METHODS, PRETRAINS, SUITES
from ribench.data.features import cached_features
from ribench.engine.compose import method_class, resolve_method
from ribench.engine.context import FitContext
from ribench.engine.settings import configure_protocol, parse_spec, split_overrides
from ribench.errors import ConfigError
from ribench.run.labels import protocol_changes, run_label
from ribench.store import cell_key


@dataclass
class Cell:
    dataset: str
    seed: int
    identity: dict
    key: str = ""

    def __post_init__(self):
        self.key = cell_key(self.identity)


@dataclass(frozen=True)
class RunRequest:
    """The names a run is resolved from: all a stateless worker needs to rebuild it."""

    method: str
    suite: str = "rib-mini"
    pretrain: str = "mini-clip"
    overrides: tuple = ()
    device: str = "cpu"
    weights: str | None = None
    includes: tuple = ()
    data_root: str | None = None


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
    request: RunRequest | None = None


def resolve(method: str, suite: str = "rib-mini", pretrain: str = "mini-clip", datasets=None, seeds=(0,),
            overrides=(), device: str = "cpu", weights: str | None = None, includes=(),
            data_root: str | None = None, check_device: bool = True) -> RunSpec:
    """Turn command-line names into a validated RunSpec, or raise a one-line RibenchError.

    `check_device=False` lets a driver without the device plan cells that workers run.
    """
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
    if check_device and device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but no CUDA device is available here")
    request = RunRequest(method, suite, pretrain, tuple(overrides), device, weights, tuple(str(p) for p in includes),
                         None if data_root is None else str(data_root))
    spec = RunSpec(suite_obj, preset, method_cls, config, protocol, datasets, list(seeds), device, weights,
                   request=request)
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
    changed = protocol_changes(spec.protocol, spec.suite.protocol)
    request = spec.request and dataclasses.replace(
        spec.request, method=method, overrides=tuple(f"protocol.{k}={v}" for k, v in changed.items()))
    sub = dataclasses.replace(spec, method_cls=cls, method_config=config, request=request)
    sub.label = run_label(sub)
    if sub.label == spec.label:
        raise ConfigError(f"method '{spec.label}' cannot be its own ingredient")
    return sub


def cell_for(spec: RunSpec, pretrained, dataset: str, seed: int) -> Cell:
    """The cell of one dataset and seed: its identity is everything that changes its result."""
    identity = {
        "suite": spec.suite.name, "manifests": spec.suite.manifest_hash(),
        "pretrain": spec.preset.name, "weights_sha256": pretrained.weights_sha256,
        "method": spec.method_cls.name, "config": spec.method_cls.settings(spec.method_config),
        "protocol": spec.protocol.as_dict(), "dataset": dataset, "seed": seed,
    }
    return Cell(dataset, seed, identity)


def plan(spec: RunSpec, pretrained) -> list[Cell]:
    """One cell per seed x downstream dataset, round-robin over datasets within each seed."""
    return [cell_for(spec, pretrained, d, s) for s in spec.seeds for d in spec.datasets]


def fit_context(spec: RunSpec, pretrained, dataset: str, seed: int, train=None, protocol=None,
                ingredients=None) -> FitContext:
    """The one way a cell's fit context is made: fresh copies of θ0 (trained and frozen), train splits only.

    `train` replaces the dataset's train split (a held-out part of it, for selection);
    `protocol` replaces the run's protocol.
    """
    model = copy.deepcopy(pretrained.model).to(spec.device)
    frozen = copy.deepcopy(pretrained.model).to(spec.device).eval().requires_grad_(False)
    train_split = train if train is not None else spec.suite.train_split(dataset)
    return FitContext(
        model=model, pretrained=frozen, train=train_split,
        source=spec.suite.train_split(spec.suite.pretrain_eval),
        preprocess=pretrained.preprocess, protocol=protocol or spec.protocol, seed=seed, device=spec.device,
        train_features=lambda: cached_features(pretrained, train_split, "train",
                                               spec.protocol.eval_batch_size, spec.device),
        has_text_tower=pretrained.has_text_tower,
        class_names=tuple(spec.suite.class_names), templates=tuple(spec.suite.templates),
        ingredients=dict(ingredients or {}),
    )
