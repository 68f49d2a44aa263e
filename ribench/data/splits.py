"""Dataset splits. Train and test splits are different types on purpose.

A method's fit context only ever holds `TrainSplit`s (and nothing that reaches a
test split); evaluation code takes `TestSplit`s. Converting one into the other is
not offered. While a method fits (`test_splits_sealed()`), every `TestSplit` in the
process refuses to give out its images, labels or batches, so a plug-in that finds
one anyway (through the suite registry, say) fails its cell instead of training on
it. Python cannot stop code that reads the files from disk itself; see
docs/reliability.md for what is guaranteed.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from ribench.data.images import Decoding, ImageFiles, decoding_for
from ribench.errors import RibenchError


class TestSplitSealed(RibenchError):
    """A test split was read while a method was fitting."""

    __test__ = False


_sealed = threading.local()


@contextlib.contextmanager
def test_splits_sealed(who: str = "a method"):
    """While inside, reading any TestSplit's data in this thread raises TestSplitSealed."""
    previous = getattr(_sealed, "who", None)
    _sealed.who = who
    try:
        yield
    finally:
        _sealed.who = previous


test_splits_sealed.__test__ = False


@dataclass(frozen=True, eq=False)
class _Split:
    dataset: str
    images: np.ndarray | ImageFiles  # (n, H, W, 3) uint8, in memory or decoded from files per batch
    labels: np.ndarray          # (n,) int64, indices into the suite's label space
    class_mask: np.ndarray      # suite class indices this dataset uses
    details: dict = field(default_factory=dict)  # per-sample metadata arrays

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, order: np.ndarray | None = None, decoding: Decoding | None = None):
        """Yield (uint8 images, labels, indices) in `order` (default: as stored); files decode as `decoding` says."""
        order = np.arange(len(self)) if order is None else order
        if isinstance(self.images, ImageFiles):   # decode the next batches while this one is used
            with contextlib.closing(self.images.prefetched(order, batch_size, decoding)) as prefetched:
                for idx, images in prefetched:
                    yield images, self.labels[idx], idx
            return
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield self.images[idx], self.labels[idx], idx

    def model_inputs(self, batch_size: int, preprocess, device="cpu", order: np.ndarray | None = None):
        """Yield (preprocessed images on `device`, labels, indices): the batch idiom of every loop."""
        for images, labels, idx in self.batches(batch_size, order, decoding_for(device)):
            yield preprocess(to_device(images, device)), labels, idx

    def content_digest(self) -> str:
        """Identifies the images and labels, for caches: pixels in memory, file identities on disk."""
        if isinstance(self.images, ImageFiles):
            h = hashlib.sha256(self.images.digest().encode())
        else:
            h = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()


def to_device(images, device) -> torch.Tensor:
    """uint8 images as a tensor on `device`. To CUDA through pinned host memory without waiting, so the
    copy overlaps the work queued before it (later work on the stream still sees the whole batch)."""
    tensor = torch.from_numpy(np.asarray(images))
    if str(device).startswith("cuda"):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class TrainSplit(_Split):
    """Data a method may train on or compute statistics from."""


class TestSplit(_Split):
    """Held-out data: evaluation only (sealed while a method fits)."""

    __test__ = False   # not a pytest test class
    _GUARDED = frozenset({"images", "labels", "details", "batches", "model_inputs", "content_digest"})

    def __getattribute__(self, name: str):
        if name in TestSplit._GUARDED and getattr(_sealed, "who", None) is not None:
            raise TestSplitSealed(f"{_sealed.who} read the test split of '{object.__getattribute__(self, 'dataset')}' "
                                  "while fitting; test splits are for evaluation only")
        return object.__getattribute__(self, name)

    def __len__(self) -> int:
        return len(self.labels)


def holdout(split: TrainSplit, fraction: float, seed: int) -> tuple[TrainSplit, TrainSplit]:
    """Class-stratified split of a train split into (fit, validation) train splits."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(split.labels):
        idx = np.nonzero(split.labels == c)[0]
        idx = idx[rng.permutation(len(idx))]
        val.extend(idx[: max(1, int(round(fraction * len(idx))))])
    val = np.sort(np.array(val))
    fit = np.setdiff1d(np.arange(len(split)), val)

    def take(idx):
        details = {k: v[idx] for k, v in split.details.items()}
        images = split.images.subset(idx) if isinstance(split.images, ImageFiles) else split.images[idx]
        return TrainSplit(split.dataset, images, split.labels[idx], split.class_mask, details)

    return take(fit), take(val)
