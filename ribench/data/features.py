"""Penultimate features of a pretrained model, computed once per (pretrain, dataset split).

Shared by `lp` and the dataset distances. Cached on disk by the weights' and
the split's content so a changed model or dataset never reuses stale features.
"""

from __future__ import annotations

import numpy as np
import torch

from ribench.cachefile import load_arrays, save_arrays
from ribench.paths import cache_dir


def _split_digest(split) -> str:
    return split.content_digest()[:16]


@torch.no_grad()
def compute_features(model, preprocess, split, batch_size=500, device="cpu") -> np.ndarray:
    model.eval()
    out = []
    for x, _, _ in split.model_inputs(batch_size, preprocess, device):
        out.append(model.features(x).float().cpu().numpy())
    return np.concatenate(out)


def cached_features(pretrained, split, kind: str, batch_size=500, device="cpu") -> np.ndarray:
    """Features of `split` under `pretrained`'s frozen weights; `kind` is 'train' or 'test'.

    The cache file carries its own hash: a truncated, zeroed or bit-flipped file is recomputed, never used."""
    path = (cache_dir() / "features" / f"{pretrained.name}-{pretrained.weights_sha256[:16]}"
            / f"{split.dataset}-{kind}-{_split_digest(split)}.npz")
    found = load_arrays(path)
    if found is not None and "features" in found and len(found["features"]) == len(split):
        return found["features"]
    feats = compute_features(pretrained.model, pretrained.preprocess, split, batch_size, device)
    save_arrays(path, {"features": feats}, "feature cache")
    return feats


class TrainFeatures:
    """`FitContext.train_features`: the cached features of one train split, and nothing else.

    A plain object instead of a closure over the run, so that what a method can reach from its
    context holds no suite and no test split (a lambda here used to hold the whole run spec)."""

    def __init__(self, pretrained, split, batch_size: int, device: str):
        if type(split).__name__ != "TrainSplit":
            raise TypeError("TrainFeatures takes a train split")
        self._pretrained, self._split, self._batch_size, self._device = pretrained, split, batch_size, device

    def __call__(self) -> np.ndarray:
        return cached_features(self._pretrained, self._split, "train", self._batch_size, self._device)
