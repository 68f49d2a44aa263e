"""What a method may see while it fits: the fit context (train splits only) and one batch."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ribench.data.splits import TrainSplit
from ribench.engine.protocol import Protocol


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
    kernels: str = "torch"                                    # "triton": ribench.kernels for the extra work
    compile: bool = False                                     # --compile: model's forward runs through torch.compile
    train_features: Callable[[], np.ndarray] | None = None   # cached penultimate features of `train`
    has_text_tower: bool = False
    class_names: tuple = ()                                   # the suite's label space (text prompts)
    templates: tuple = ()                                     # the suite's prompt templates
    ingredients: dict = field(default_factory=dict)           # method spec -> changed tensors of its cell
    state: dict = field(default_factory=dict)                 # scratch space for hooks
    optimizer: Any = None                                     # set by the loop once groups are chosen
    flat: Any = None                                          # FlatWeights, when the loop lays them out (--kernels triton)
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
