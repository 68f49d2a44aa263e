"""What a fine-tuning method is: hyperparameters plus hooks around one training loop.

A method never sees a test split: its `FitContext` holds only train splits
(the downstream one and a source sample of the pretraining domain), the model,
a frozen copy of the pretrained weights, the protocol and a seeded generator.
The shared loop in `ribench.trainer` calls the hooks in this order:

    prepare -> param_groups -> [compute_loss -> backward -> after_backward
    -> lr from the schedule × group lr_scale -> optimizer step -> after_step]
    per batch -> finish

A method overrides only what defines it; `fit` itself may be replaced by
methods that do not use the loop (zero-shot, a probe on cached features).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .data import TrainSplit
from .errors import ConfigError
from .protocol import Protocol


@dataclass
class FitContext:
    model: torch.nn.Module            # being fine-tuned; starts at θ0
    pretrained: torch.nn.Module       # frozen copy of θ0
    train: TrainSplit                 # the downstream train split
    source: TrainSplit                # pretraining-domain train split (source statistics)
    preprocess: Callable
    protocol: Protocol
    seed: int
    device: str = "cpu"
    train_features: Callable[[], np.ndarray] | None = None   # cached penultimate features of `train`
    has_text_tower: bool = False
    class_names: tuple = ()                                   # the suite's label space (text prompts)
    templates: tuple = ()                                     # the suite's prompt templates
    ingredients: dict = field(default_factory=dict)           # method spec -> changed tensors of its cell
    state: dict = field(default_factory=dict)                 # scratch space for hooks
    optimizer: Any = None                                     # set by the loop once groups are chosen
    step: int = 0
    total_steps: int = 0

    def __post_init__(self):
        for name, value in vars(self).items():
            if type(value).__name__ == "TestSplit":
                raise TypeError(f"FitContext.{name} must not hold a test split")

    @property
    def rng(self) -> np.random.Generator:
        if "_rng" not in self.state:
            self.state["_rng"] = np.random.default_rng(self.seed)
        return self.state["_rng"]


class Batch:
    """One training batch. `logits` (restricted to the split's class mask) are computed
    on first use, so a method with its own forward (FLYP) pays for no unused one."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_mask: torch.Tensor,
                 model: torch.nn.Module, indices=None):
        self.images = images          # preprocessed
        self.labels = labels          # positions within the split's class mask
        self.class_mask = class_mask  # suite class indices of the split
        self.indices = indices        # rows of the train split in this batch
        self._model = model

    @functools.cached_property
    def logits(self) -> torch.Tensor:
        return self._model(self.images)[:, self.class_mask].float()


@dataclass
class ParamGroup:
    params: list
    lr_scale: float = 1.0
    name: str = ""


class Method:
    """Base class of every method. Subclasses set `name`, `description` and `Config`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    # What the runner may rely on:
    uses_pretrained_eval: ClassVar[bool] = False   # trains nothing: its accuracies are A_pre
    frozen_backbone: ClassVar[bool] = False        # backbone untouched: evaluate via cached features
    requires_text_tower: ClassVar[bool] = False    # refuse pretrains without one, before any work
    composable: ClassVar[bool] = True              # trains through the loop: regularizers may join it

    @dataclass
    class Config:
        pass

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    # ---- the hooks --------------------------------------------------------
    def prepare(self, ctx: FitContext) -> None:
        """Statistics and masks, computed from train splits only."""

    def param_groups(self, ctx: FitContext) -> list[ParamGroup]:
        """Trainable parameters and per-group lr multipliers (default: the whole classifier)."""
        return [ParamGroup([p for p in ctx.model.parameters() if p.requires_grad], 1.0, "all")]

    def gradient_parameters(self, ctx: FitContext, groups: list[ParamGroup]) -> list | None:
        """Model weights that need gradients; None: exactly the groups' parameters.

        A method that optimizes stand-ins for weights (the masked entries of a
        sparse method) returns the weights whose gradients it reads.
        """
        return None

    def compute_loss(self, ctx: FitContext, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(batch.logits, batch.labels)

    def after_backward(self, ctx: FitContext) -> None:
        """Change gradients before the optimizer step."""

    def after_step(self, ctx: FitContext) -> None:
        """Act on weights after each optimizer step."""

    def finish(self, ctx: FitContext) -> None:
        """Post-process the trained model (e.g. merge adapters)."""

    def ingredients(self) -> list[str]:
        """Method specs (e.g. 'ft', 'lp[fit=lbfgs]') whose trained weights, from the cell
        with the same suite, pretrain, protocol, dataset and seed, this method needs.
        The runner runs them first, stores their weights and passes them in
        `ctx.ingredients`. 'pretrained' names θ0 itself."""
        return []

    # ---- driving ------------------------------------------------------------
    def fit(self, ctx: FitContext) -> dict:
        from .trainer import train

        return train(self, ctx)

    @classmethod
    def settings(cls, config: Any) -> dict:
        """Hyperparameters as one flat dict (what labels, listings and records show)."""
        return dataclasses.asdict(config)

    @classmethod
    def defaults(cls) -> dict:
        return cls.settings(cls.Config())

    @classmethod
    def setting_names(cls) -> set[str]:
        """Keys `--set` may route to this method."""
        return {f.name for f in dataclasses.fields(cls.Config)}

    @classmethod
    def configure(cls, overrides: dict[str, str]) -> Any:
        """Build the Config from string overrides, converting by the field's type."""
        hints = typing.get_type_hints(cls.Config)
        names = [f.name for f in dataclasses.fields(cls.Config)]
        values = {}
        for key, raw in overrides.items():
            if key not in names:
                raise ConfigError(_unknown_key(key, names, f"method '{cls.name}'"))
            values[key] = parse_value(key, raw, hints.get(key, str))
        return cls.Config(**values)


def _unknown_key(key, names, where):
    import difflib

    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    known = ", ".join(names) if names else "none"
    return f"unknown setting '{key}' for {where}{hint} (settings: {known})"


def parse_value(key: str, raw: str, kind) -> Any:
    """Parse a --set value as the field's type; a clear error otherwise."""
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        if raw not in choices:
            raise ConfigError(f"bad value for {key}: '{raw}' (choose one of {', '.join(map(str, choices))})")
        return raw
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(raw)
        if kind is float:
            value = float(raw)
            if not np.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        raise ConfigError(f"bad value for {key}: '{raw}' is not a valid {kind.__name__}") from None
    return raw


def configure_protocol(protocol: Protocol, overrides: dict[str, str]) -> Protocol:
    hints = typing.get_type_hints(Protocol)
    names = [f.name for f in dataclasses.fields(Protocol)]
    values = {}
    for key, raw in overrides.items():
        if key not in names:
            raise ConfigError(_unknown_key(key, names, "the protocol"))
        values[key] = parse_value(key, raw, hints[key])
    new = dataclasses.replace(protocol, **values)
    for key in ("lr", "epochs", "batch_size"):
        if getattr(new, key) <= 0:
            raise ConfigError(f"bad value for {key}: must be positive")
    if new.optimizer not in ("sgd", "adamw"):
        raise ConfigError(f"bad value for optimizer: '{new.optimizer}' (choose sgd or adamw)")
    if new.schedule not in ("cosine", "constant"):
        raise ConfigError(f"bad value for schedule: '{new.schedule}' (choose cosine or constant)")
    return new


def split_overrides(pairs: list[str], method_cls: type[Method]) -> tuple[dict, dict]:
    """Route `--set key=value` pairs to the method or the protocol.

    `method.key` / `protocol.key` force a side; `part.key` (a combination's part)
    goes to the method; a bare key goes to the method if it has such a setting,
    else to the protocol.
    """
    method_names = method_cls.setting_names()
    method, protocol = {}, {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"bad --set '{pair}': expected key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key.startswith("method."):
            method[key[7:]] = raw
        elif key.startswith("protocol."):
            protocol[key[9:]] = raw
        elif key in method_names or "." in key:     # 'lwf.alpha': a part of a combination
            method[key] = raw
        else:
            protocol[key] = raw
    return method, protocol


class Regularizer(Method):
    """A penalty that joins a base method by name (`ft+lwf`, `flyp+l2sp`).

    Alone it is `ft` plus the penalty. Two ways to add it: `penalty` returns a
    loss term (autograd, for penalties on outputs such as LwF), and
    `after_backward` may add a closed-form gradient (for penalties on weights,
    cheaper than a graph; `value` then gives the same penalty for tests and logs).
    """

    def penalty(self, ctx: FitContext, batch: Batch) -> torch.Tensor | None:
        return None

    def compute_loss(self, ctx: FitContext, batch: Batch) -> torch.Tensor:
        loss = super().compute_loss(ctx, batch)
        extra = self.penalty(ctx, batch)
        return loss if extra is None else loss + extra


def anchored_parameters(ctx: FitContext, backbone_only: bool = True):
    """(names, trainable weights θ, their pretrained values θ0) for weight-space penalties.

    Pairs are matched by name, so weights with no pretrained counterpart (adapters,
    prompts) are not anchored.
    """
    model, frozen = ctx.model, dict(ctx.pretrained.named_parameters())
    allowed = {id(p) for p in model.backbone_parameters()} if backbone_only else None
    names, params, anchors = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or name not in frozen or (allowed is not None and id(p) not in allowed):
            continue
        names.append(name)
        params.append(p)
        anchors.append(frozen[name].detach())
    return names, params, anchors


@torch.no_grad()
def add_to_gradients(params: list, terms: list, alpha: float) -> None:
    """p.grad += alpha·term for each weight (a closed-form penalty gradient), one fused foreach op.

    A weight that got no gradient from the loss (e.g. untouched by this batch) starts at zero.
    """
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    torch._foreach_add_([p.grad for p in params], terms, alpha=alpha)
