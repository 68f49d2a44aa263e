"""A run resolved from names: the validated RunSpec, its cells, and the one fit-context factory.

Everything a command names (method spec, suite, pretrain, datasets, seeds, `--set`)
is checked here, before any work starts, so a typo fails in one line.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field

import torch

from ribench.catalog import METHODS, PRETRAINS, SUITES
from ribench.data.features import TrainFeatures
from ribench.engine.compose import method_class, resolve_method
from ribench.engine.context import FitContext
from ribench.engine.settings import configure_protocol, parse_spec, split_overrides
from ribench.kernels import resolve_kernels
from ribench.errors import ConfigError
from ribench.run.choices import chosen
from ribench.run.labels import method_label, protocol_changes, run_label
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
    protocol: str = "reference"
    holdout: float | None = None
    kernels: str = "auto"
    compile: bool = False


PROTOCOLS = ("reference", "tuned", "recipe")


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
    protocol_name: str = "reference"     # reference: the suite's; tuned: the recipe at the chosen value
    base_protocol: object = None         # the protocol before --set (labels show changes from it)
    label_defaults: dict | None = None   # tuned strength methods: the defaults with the chosen strength
    selection: dict = field(default_factory=dict)    # tuned: the chosen value of this run and its ingredients
    holdout: float | None = None         # a selection run: fit on the rest, score on this held-out fraction
    kernels: str = "torch"               # the implementation of the methods' extra work (ribench.kernels)
    compile: bool = False                # --compile: the cell's model runs through torch.compile (provenance only)


def resolve(method: str, suite: str = "rib-mini", pretrain: str = "mini-clip", datasets=None, seeds=(0,),
            overrides=(), device: str = "cpu", weights: str | None = None, includes=(),
            data_root: str | None = None, check_device: bool = True, protocol: str | None = None,
            holdout: float | None = None, kernels: str = "auto", compile: bool = False) -> RunSpec:
    """Turn command-line names into a validated RunSpec, or raise a one-line RibenchError.

    `protocol`: "reference" (the suite's, ImageNet-RIB's one lr for all), "tuned" (the method's recipe
    at its chosen value, see ribench.run.selection) or "recipe" (the recipe at its paper value: what
    selection starts from); None: the suite's default (tuned). `check_device=False` lets a driver without the device plan cells that
    workers run; `holdout` makes a selection run. `compile` (--compile) changes how a cell's model runs, not what
    it computes, so it is recorded in provenance, not in identity.
    """
    if protocol is not None and protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol '{protocol}' (choose reference or tuned)")
    for path in includes:
        METHODS.include(path)
    method_name, inline = parse_spec(method)
    method_cls = method_class(method_name)
    check_seeds(seeds)
    check_device_name(device)
    if datasets is not None and not datasets:
        raise ConfigError("--datasets names no dataset (give comma-separated names, or leave it out for all)")
    suite_obj = SUITES.get(suite)()
    preset = PRETRAINS.get(pretrain)
    preset.check_suite(suite_obj)
    protocol = suite_obj.protocol_named(protocol)
    suite_obj.attach_data(data_root)
    method_over, protocol_over = split_overrides(list(overrides), method_cls)
    asked = method_cls.configure(inline)
    method_cls.configure({**inline, **method_over})          # a bad setting is named before a missing choice
    if method_cls.requires_text_tower and not preset.has_text_tower:
        raise ConfigError(f"method '{method_cls.name}' needs a text tower; pretrain '{preset.name}' has none")
    base_protocol, selection = _protocol_of(method_cls, asked, suite_obj, preset.name, protocol)
    if device.startswith("cuda"):            # torch's fused optimizer step on GPUs (recorded; not a label change)
        base_protocol = dataclasses.replace(base_protocol, fused=True)
    label_defaults = None
    if protocol == "tuned" and selection and method_cls.recipe.tune != "lr":
        strength = {method_cls.recipe.tune: repr(selection[method_label(method_cls, asked)])}
        label_defaults = method_cls.settings(method_cls.configure(strength))   # the chosen strength is no change
        config = method_cls.configure({**strength, **inline, **method_over})
    else:
        config = method_cls.configure({**inline, **method_over})
    protocol_obj = configure_protocol(base_protocol, protocol_over)
    if datasets:
        for name in datasets:
            if suite_obj.info(name).role != "downstream":
                raise ConfigError(f"'{name}' is the pretraining-domain set of {suite_obj.name}; "
                                  f"choose among {', '.join(suite_obj.downstream)}")
        datasets = list(dict.fromkeys(datasets))
    else:
        datasets = suite_obj.downstream
    if check_device and device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but no CUDA device is available here")
    used_kernels = resolve_kernels(kernels, device, check_device)
    request = RunRequest(method, suite, pretrain, tuple(overrides), device, weights, tuple(str(p) for p in includes),
                         None if data_root is None else str(data_root), protocol, holdout, kernels, bool(compile))
    spec = RunSpec(suite_obj, preset, method_cls, config, protocol_obj, datasets, list(seeds), device, weights,
                   request=request, protocol_name=protocol, base_protocol=base_protocol, label_defaults=label_defaults,
                   selection=selection, holdout=holdout, kernels=used_kernels, compile=bool(compile))
    spec.label = run_label(spec)
    for name in ingredient_specs(spec):      # validate what a derived method needs, before any work
        sub = ingredient_spec(spec, name)
        spec.selection.update(sub.selection)
    return spec


DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def check_seeds(seeds) -> None:
    """Seeds are distinct whole numbers >= 0 (numpy's generators refuse negative seeds, after training)."""
    seeds = list(seeds or ())
    if not seeds:
        raise ConfigError("no seeds given")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"bad seed {seed!r}: seeds are whole numbers of at least 0")
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ConfigError(f"seed {repeated[0]} is given twice; each seed is one cell per dataset")


def check_device_name(device: str) -> None:
    if not isinstance(device, str) or not DEVICE.match(device):
        raise ConfigError(f"unknown device {device!r} (choose cpu, cuda, cuda:N or mps)")


def resolve_request(request: RunRequest, check_device: bool = True) -> RunSpec:
    """The run a request names, resolved again (on a worker, or for an ingredient)."""
    r = request
    return resolve(r.method, r.suite, r.pretrain, overrides=r.overrides, device=r.device, weights=r.weights,
                   includes=r.includes, data_root=r.data_root, check_device=check_device, protocol=r.protocol,
                   holdout=r.holdout, kernels=r.kernels, compile=r.compile)


def _protocol_of(method_cls, config, suite, pretrain: str, protocol: str) -> tuple:
    """(the protocol a run starts from, the chosen values it uses) under `protocol`."""
    recipe = method_cls.recipe
    if protocol == "reference" or method_cls.tunes_nothing_with(config):
        return suite.protocol, {}
    if recipe is None:
        raise ConfigError(f"method '{method_cls.name}' declares no recipe, so it cannot run under the tuned "
                          "protocol; give its class a Recipe (see docs/adding-a-method.md) or use --protocol reference")
    lr = recipe.lr
    if recipe.lr_from:                       # a strength-tuned method trains at another method's chosen lr
        found = chosen(suite.name, pretrain, recipe.lr_from)
        if found is None:
            raise ConfigError(f"'{method_cls.name}' trains at {recipe.lr_from}'s chosen lr, and {recipe.lr_from} "
                              f"has no tuned choice on {suite.name}/{pretrain}; run 'ribench tune --method "
                              f"{recipe.lr_from} --pretrain {pretrain}' first")
        lr = found["value"]
    if protocol == "recipe":
        return recipe.protocol(suite.protocol, lr), {}
    label = method_label(method_cls, config)
    found = chosen(suite.name, pretrain, label)
    if found is None:
        raise ConfigError(f"no tuned choice for '{label}' on {suite.name}/{pretrain}; run 'ribench tune --method "
                          f"{label} --pretrain {pretrain}' (or use --protocol reference)")
    if recipe.tune == "lr":
        lr = found["value"]
    return recipe.protocol(suite.protocol, lr), {label: found["value"]}


def ingredient_specs(spec: RunSpec) -> list[str]:
    return trained_ingredients(spec.method_cls, spec.method_config)


def trained_ingredients(method_cls, config) -> list[str]:
    """The methods whose cells a method needs, the pretrained model (always there) left out."""
    return [n for n in method_cls(config).ingredients() if n != "pretrained"]


def ingredient_spec(spec: RunSpec, method: str) -> RunSpec:
    """The run whose cells a derived method of `spec` needs: same suite, pretrain, protocol.

    Under `tuned` an ingredient trains under its own recipe and choice, not its user's."""
    if spec.protocol_name == "tuned":
        r = spec.request
        sub = resolve(method, r.suite, r.pretrain, spec.datasets, spec.seeds, (), r.device, r.weights, r.includes,
                      r.data_root, check_device=False, protocol="tuned", kernels=r.kernels, compile=r.compile)
        sub.device = spec.device
        if sub.label == spec.label:
            raise ConfigError(f"method '{spec.label}' cannot be its own ingredient")
        return sub
    cls, config = resolve_method(method)
    if cls.requires_text_tower and not spec.preset.has_text_tower:
        raise ConfigError(f"method '{spec.label}' needs '{method}', which needs a text tower; "
                          f"pretrain '{spec.preset.name}' has none")
    protocol = spec.protocol
    if cls.tunes_nothing_with(config) and not trained_ingredients(cls, config):
        protocol = spec.suite.protocol     # e.g. a probe solved by L-BFGS: no protocol setting changes it, so
                                           # lpft at every lr of its selection grid shares one probe's cells
    changed = protocol_changes(protocol, spec.suite.protocol)
    request = spec.request and dataclasses.replace(
        spec.request, method=method, overrides=tuple(f"protocol.{k}={v}" for k, v in changed.items()))
    sub = dataclasses.replace(spec, method_cls=cls, method_config=config, request=request, protocol=protocol)
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
    head = getattr(pretrained.model, "head_parameterisation", "plain")
    if head != "plain":          # a CLIP head trained as s·Û is another model than one trained as W
        identity["head"] = head
    if spec.protocol_name != "reference":     # reference identities stay as they always were
        identity["protocol_name"] = spec.protocol_name
        identity["selection"] = dict(sorted(spec.selection.items()))
    if spec.holdout is not None:
        identity.update(kind="selection", holdout=spec.holdout)
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
        train_features=TrainFeatures(pretrained, train_split, spec.protocol.eval_batch_size, spec.device),
        has_text_tower=pretrained.has_text_tower,
        class_names=tuple(spec.suite.class_names), templates=tuple(spec.suite.templates),
        ingredients=dict(ingredients or {}), kernels=spec.kernels, compile=spec.compile,
    )
