"""The fine-tuning protocol a suite fixes for every method (ImageNet-RIB style)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    """Optimizer and schedule shared by every method on a suite.

    ImageNet-RIB's reference code: SGD, momentum 0.9, lr 1e-3, weight decay 0,
    196 linear warm-up steps then per-step cosine decay, 10 epochs, batch 64/256,
    no augmentation (the eval transform for training too).
    """

    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_steps: int = 196
    epochs: int = 10
    batch_size: int = 64
    schedule: str = "cosine"
    eval_batch_size: int = 500
    # torch's fused optimizer kernels (the default on CUDA): not bit-identical to the plain path (2e-8 per
    # AdamW step), so a cell records it; omitted from the record while off, so CPU identities stay as they were
    fused: bool = False

    def as_dict(self) -> dict:
        record = dataclasses.asdict(self)
        if not self.fused:
            del record["fused"]
        return record

    def lr_factor(self, step: int, total_steps: int) -> float:
        """Multiplier of the base lr at optimizer step `step` (0-based)."""
        warmup = min(self.warmup_steps, max(total_steps - 1, 0))
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if self.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
