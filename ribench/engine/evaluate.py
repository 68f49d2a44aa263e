"""Accuracy of a classifier on test splits, logits restricted to each dataset's classes.

On CUDA the evaluation batch is what the free device memory holds (`device_eval_batch_size`);
elsewhere it is the protocol's. Predictions do not depend on the batch beyond float rounding, so
the batch is recorded in a cell's provenance, never in its identity.
"""

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


MAX_EVAL_BATCH = 1024        # a GPU evaluates no faster beyond this; larger batches only hold more images in flight
EVAL_MEMORY_SHARE = 0.5      # of the free device memory: the rest is headroom for fragmentation and other tensors
PROBE_IMAGES = 8             # the forward is measured at 8 and 16 images: the difference is one image's cost


def eval_batch_size(free_bytes: int, fixed_bytes: int, bytes_per_image: int) -> int:
    """The largest batch whose forward fits in `EVAL_MEMORY_SHARE` of `free_bytes`, given the forward's fixed
    cost and its cost per image: a multiple of 64 from 64 on (whole tiles for the matmuls), 1 to MAX_EVAL_BATCH."""
    room = EVAL_MEMORY_SHARE * free_bytes - fixed_bytes
    fits = int(room // max(bytes_per_image, 1))
    if fits >= 64:
        fits -= fits % 64
    return max(1, min(MAX_EVAL_BATCH, fits))


def free_device_memory(device: str) -> int:
    """Bytes a CUDA device can still give: free on the device plus what torch's allocator holds unused."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


@torch.no_grad()
def forward_memory(model, preprocess, image_shape, device: str) -> tuple[int, int]:
    """(fixed bytes, bytes per image) of one evaluation forward on a CUDA device, from the peak memory of
    forwards of PROBE_IMAGES and twice as many blank images (autocast's weight copies are the fixed part).
    Eager even under --compile: the probe's shapes cost no compile, and eager usually needs the more memory."""
    model.eval()
    start = torch.cuda.memory_allocated(device)
    peaks = []
    for n in (PROBE_IMAGES, 2 * PROBE_IMAGES):
        torch.cuda.reset_peak_memory_stats(device)
        with autocast(device), torch.compiler.set_stance("force_eager"):
            model(preprocess(torch.zeros((n, *image_shape), dtype=torch.uint8, device=device))).float()
        peaks.append(torch.cuda.max_memory_allocated(device) - start)
    per_image = max(1, (peaks[1] - peaks[0]) // PROBE_IMAGES)
    return max(0, peaks[0] - PROBE_IMAGES * per_image), per_image


def device_eval_batch_size(model, preprocess, image_shape_of, device: str, default: int) -> int:
    """The evaluation batch on `device`: on CUDA what its free memory holds for this model's forward on images
    of shape `image_shape_of()` (H, W, 3; called only on CUDA, since it may read a split); elsewhere
    `default`, the protocol's eval_batch_size."""
    if not str(device).startswith("cuda"):
        return default
    fixed, per_image = forward_memory(model, preprocess, tuple(image_shape_of()), device)
    return eval_batch_size(free_device_memory(device), fixed, per_image)


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
