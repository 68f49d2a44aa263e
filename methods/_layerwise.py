"""What the layerwise-rate methods of the Automatic fine-tuning paper (Agarwala et al.) share.

auto-rgn, surprise and criticality each give every layer (or block) of the image
classifier its own learning-rate multiplier, computed from seeded samples of the
train splits in eval mode; these are the pieces they have in common. Not a method
(the underscore keeps it out of the registry).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

from ribench.engine.method import Method, ParamGroup
from ribench.engine.recipe import Recipe
from ribench.engine.trainer import position_labels
from ribench.toolkit.layers import image_parameters

# The methods' `paper`: a citation, as the course paper has no URL.
PAPER = 'Agarwala et al., "Automatic fine-tuning" (Stanford course paper)'


def sample_indices(n_total: int, n: int, seed: int, stream: int) -> np.ndarray:
    """A seeded sample of `n` rows (sorted); n <= 0 or n >= n_total: every row."""
    if n <= 0 or n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng([seed, stream]).choice(n_total, n, replace=False))


def labelled_batches(split, indices, batch_size: int, preprocess: Callable, device: str):
    """(preprocessed images, label positions within the split's class mask, class mask) per batch."""
    targets = position_labels(split.labels, split.class_mask)
    mask = torch.as_tensor(split.class_mask, device=device)
    for x, _, idx in split.model_inputs(batch_size, preprocess, device, np.asarray(indices)):
        yield x, torch.from_numpy(targets[idx]).to(device), mask


def trainable_layers(model) -> "OrderedDict[str, torch.nn.Parameter]":
    """The image classifier's trainable tensors (ft's set), by name."""
    return OrderedDict((n, p) for n, p in image_parameters(model).items() if p.requires_grad)


def relative(scores: dict) -> dict:
    """score / max score; all zero (or empty): no preference, every weight 1."""
    top = max(scores.values(), default=0.0)
    if not top > 0:
        return {k: 1.0 for k in scores}
    return {k: float(v) / top for k, v in scores.items()}


def weighted_groups(members: dict, weights: dict) -> list[ParamGroup]:
    """One ParamGroup per member with its lr multiplier; weight 0 leaves it frozen."""
    return [ParamGroup(list(params), float(weights[name]), name)
            for name, params in members.items() if weights[name] > 0]


@contextlib.contextmanager
def eval_mode(model):
    """Statistics of the pretrained network as it predicts (no dropout); the mode is restored."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class LayerwiseRates(Method):
    """A method whose definition is one lr multiplier per group: the cell records them
    (details["method"]["layer_weights"]; for per-step Auto-RGN, the last step's).

    `layer_scores` and `layer_weights` ({group: score}, {group: multiplier}) are set
    by `prepare` (or each step); the instance lives for one cell.
    """

    # The layer rates scale fine-tuning's lr (Agarwala et al., Sec. 4.1): the base recipe is ft's.
    recipe = Recipe(optimizer="sgd", lr=1e-3,
                    source="Agarwala et al.: per-layer multipliers of the fine-tuning lr; ImageNet-RIB's SGD recipe")

    def __init__(self, config=None):
        super().__init__(config)
        self.layer_scores: dict = {}
        self.layer_weights: dict = {}

    def learned(self, ctx):
        return {"layer_weights": {k: float(v) for k, v in self.layer_weights.items()}}
