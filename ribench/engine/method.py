"""What a fine-tuning method is: hyperparameters plus hooks around one training loop.

A method never sees a test split: its `FitContext` holds only train splits
(the downstream one and a source sample of the pretraining domain), the model,
a frozen copy of the pretrained weights, the protocol and a seeded generator.
The shared loop in `ribench.engine.trainer` calls the hooks in this order:

    prepare -> param_groups -> [compute_loss -> backward -> after_backward
    -> lr from the schedule × group lr_scale -> optimizer step -> after_step]
    per batch -> finish

A method overrides only what defines it; `fit` itself may be replaced by
methods that do not use the loop (zero-shot, a probe on cached features).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ribench.engine.context import Batch, FitContext
from ribench.engine.recipe import Recipe
from ribench.engine.settings import parse_value, unknown_key
from ribench.engine.trainer import train
from ribench.engine.weight_penalty import WeightPenalty
from ribench.errors import ConfigError


@dataclass
class ParamGroup:
    params: list
    lr_scale: float = 1.0
    name: str = ""


class Method:
    """Base class of every method. Subclasses set `name`, `description` and `Config`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""                      # a URL, or a citation where the paper has none
    recipe: ClassVar[Recipe | None] = None         # how the paper trains it: what the tuned protocol follows
    tunes_nothing: ClassVar[bool] = False          # trains nothing through an optimizer (zeroshot, weight averages)
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

    @classmethod
    def tunes_nothing_with(cls, config: Any) -> bool:
        """Whether this configuration has nothing for the tuned protocol to choose (a variant may fit
        without an optimizer's lr, e.g. a probe solved to convergence)."""
        return cls.tunes_nothing

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

    def weight_penalty(self, ctx: FitContext) -> WeightPenalty | None:
        """The closed-form penalty on weights this method adds after backward, if any: with
        `--kernels triton` the loop may fold it into its fused optimizer step (and mark it `folded`)."""
        return None

    def works_on_flat_weights(self, ctx: FitContext) -> bool:
        """Whether `after_backward` has a kernel path over `ctx.flat` (the trained weights and their
        gradients as one buffer each), which the loop lays out with `--kernels triton` (DiGraP)."""
        return False

    def finish(self, ctx: FitContext) -> None:
        """Post-process the trained model (e.g. merge adapters)."""

    def learned(self, ctx: FitContext) -> dict:
        """What the method learned beside the weights (DiGraP's ω, layer-wise rates), after `fit`:
        stored in the cell's details under "method", so the paper's figures can be drawn from it."""
        return {}

    def ingredients(self) -> list[str]:
        """Method specs (e.g. 'ft', 'lp[fit=lbfgs]') whose trained weights, from the cell
        with the same suite, pretrain, protocol, dataset and seed, this method needs.
        The runner runs them first, stores their weights and passes them in
        `ctx.ingredients`. 'pretrained' names θ0 itself."""
        return []

    # ---- driving ------------------------------------------------------------
    def fit(self, ctx: FitContext) -> dict:
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
                raise ConfigError(unknown_key(key, names, f"method '{cls.name}'"))
            values[key] = parse_value(key, raw, hints.get(key, str))
        return cls.Config(**values)


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
