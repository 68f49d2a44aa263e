"""Accuracy of a classifier on test splits, logits restricted to each dataset's classes."""

from __future__ import annotations

import numpy as np
import torch

from .data import TestSplit  # evaluation is for test splits; held-out train parts work too


@torch.no_grad()
def predict(model, preprocess, split, batch_size: int = 500, device: str = "cpu") -> np.ndarray:
    """Predicted suite-class index per sample, argmax over the split's class mask only."""
    model.eval()
    mask = torch.as_tensor(split.class_mask, device=device)
    preds = []
    for images, _, _ in split.batches(batch_size):
        x = preprocess(torch.from_numpy(images).to(device))
        with torch.autocast("cuda", enabled=device.startswith("cuda")):
            logits = model(x).float()
        preds.append(mask[logits[:, mask].argmax(1)].cpu().numpy())
    return np.concatenate(preds)


def accuracy(model, preprocess, split: TestSplit, batch_size: int = 500, device: str = "cpu") -> float:
    return float((predict(model, preprocess, split, batch_size, device) == split.labels).mean())


def evaluate_all(model, preprocess, suite, batch_size: int = 500, device: str = "cpu"):
    """Accuracy on every test split of the suite, and per-group details (e.g. per corruption)."""
    accuracies, details = {}, {}
    for name in suite.evaluated:
        split = suite.test_split(name)
        correct = predict(model, preprocess, split, batch_size, device) == split.labels
        accuracies[name] = float(correct.mean())
        for key, groups in split.details.items():
            details.setdefault(name, {})[key] = {
                str(int(g)): float(correct[groups == g].mean()) for g in np.unique(groups)}
    return accuracies, details
