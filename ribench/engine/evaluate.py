"""Accuracy of a classifier on test splits, logits restricted to each dataset's classes."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ribench.data.splits import TestSplit  # evaluation is for test splits; held-out train parts work too


def autocast(device: str):
    """bf16 mixed precision on CUDA (no loss scaling needed); plain float32 on CPU."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _masked_argmax(logits: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Suite-class index of the largest logit among the dataset's classes."""
    return mask[logits[:, mask].argmax(1)].cpu().numpy()


@torch.no_grad()
def predict(model, preprocess, split, batch_size: int = 500, device: str = "cpu") -> np.ndarray:
    """Predicted suite-class index per sample, argmax over the split's class mask only."""
    model.eval()
    mask = torch.as_tensor(split.class_mask, device=device)
    preds = []
    for x, _, _ in split.model_inputs(batch_size, preprocess, device):
        with autocast(device):
            logits = model(x).float()
        preds.append(_masked_argmax(logits, mask))
    return np.concatenate(preds)


def accuracy(model, preprocess, split: TestSplit, batch_size: int = 500, device: str = "cpu") -> float:
    return float((predict(model, preprocess, split, batch_size, device) == split.labels).mean())


@torch.no_grad()
def predict_from_features(head, features: np.ndarray, split, device: str = "cpu") -> np.ndarray:
    """Like `predict`, for a model whose frozen backbone gave `features` (a trained probe)."""
    mask = torch.as_tensor(split.class_mask, device=device)
    return _masked_argmax(head(torch.from_numpy(features).to(device)).float(), mask)


def evaluate_all(model, preprocess, suite, batch_size: int = 500, device: str = "cpu", test_features=None):
    """Accuracy on every test split of the suite, and per-group details (e.g. per corruption).

    With `test_features` (dataset -> cached features of the frozen backbone), only
    the model's head is applied: for methods that leave the backbone untouched.
    """
    accuracies, details = {}, {}
    for name in suite.evaluated:
        split = suite.test_split(name)
        if test_features is not None:
            predicted = predict_from_features(model.head, test_features(name), split, device)
        else:
            predicted = predict(model, preprocess, split, batch_size, device)
        correct = predicted == split.labels
        accuracies[name] = float(correct.mean())
        for key, groups in split.details.items():
            details.setdefault(name, {})[key] = {
                str(int(g)): float(correct[groups == g].mean()) for g in np.unique(groups)}
    return accuracies, details
