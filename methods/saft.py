"""saft: sparse adaptation for fine-tuning (Sony AI, ECCV 2024, arXiv 2407.03036).

Phase 1, once, at θ0 (Algorithm 1):
    w = (1/N)·Σ_i ∇θ L_CE(x_i, y_i; θ)                      (Eq. 2, the whole train split)
    m_k = 1 iff |w_k| ≥ sorted(|w|)[d],  d = ⌊αD⌋              (Eq. 3, descending sort)
Phase 2: train; after every step reset the unmasked weights to θ0.

- w is the signed gradient averaged over every training sample, then its
  magnitude: |mean g|, not mean |g| (the paper sets this against the Fisher's
  mean of squared gradients: averaging first mitigates outliers). It is computed
  exactly, not estimated: batches of the train split in order, the loss summed
  over the batch and divided by N, gradients accumulated by backward, in eval
  mode (no dropout) and float32 without autocast.
- D counts every scalar weight of the image classifier, backbone and head
  (`ribench.toolkit.layers.image_parameters`), ranked all at once, not per layer.
  The paper fine-tunes both CLIP towers and classifies through the text tower;
  ribench's CLIP classifier holds the class text embeddings in its zero-shot
  head, which is ranked with the image tower.
- α = 0.001 (the paper's default for every dataset). d is ⌊αD⌋ with α read as
  written (0.001 = 1/1000), so d is exact. Eq. 3's "≥ the d-th largest" can
  select more than d weights when scores tie; ribench selects exactly d: a
  stable sort by (−|w|, position), the position being the weight's index when
  the image classifier's tensors are laid end to end in parameter order.
- The reset is exact and free: only the masked entries are given to the
  optimizer (`ribench.toolkit.sparse`), so the others are never written and no momentum
  or weight decay can move them, and the optimizer keeps state for the d masked
  weights only (the paper resets dense weights and leaves sparse optimizers such
  as SparseAdam to future work). The masked weights follow the paper's
  update-then-reset loop bit for bit; α = 1 is `ft`, bit for bit.
- The paper trains with AdamW, weight decay 0.1, lr 5e-6; ribench keeps the
  suite's protocol (`--set optimizer=adamw weight_decay=0.1` for the paper's).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ribench.errors import ConfigError
from ribench.toolkit.layers import image_parameters
from ribench.toolkit.sparse import MaskedFineTune, mask_size
from ribench.engine.trainer import position_labels


def mean_gradient(ctx, batch_size: int | None = None) -> "OrderedDict[str, torch.Tensor]":
    """w of Eq. 2 for every weight of the image classifier, at ctx.model's current weights."""
    model, split = ctx.model, ctx.train
    params = image_parameters(model)
    was_training = model.training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in params)
        p.grad = None
    model.eval()
    mask = torch.as_tensor(split.class_mask, device=ctx.device)
    targets = position_labels(split.labels, split.class_mask)
    n = len(split)
    for x, _, idx in split.model_inputs(batch_size or ctx.protocol.batch_size, ctx.preprocess, ctx.device):
        y = torch.from_numpy(targets[idx]).to(ctx.device)
        loss = F.cross_entropy(model(x)[:, mask].float(), y, reduction="sum") / n
        loss.backward()            # accumulates Σ_i ∇L_i / N into p.grad
    w = OrderedDict((name, p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                    for name, p in params.items())
    for name, p in model.named_parameters():
        p.grad = None
        p.requires_grad_(flags[name])
    model.train(was_training)
    return w


class SAFT(MaskedFineTune):
    name = "saft"
    description = "SAFT: train only the top 0.1% weights by |mean gradient|; the rest stay at θ0"
    paper = "https://arxiv.org/abs/2407.03036"

    @dataclass
    class Config:
        alpha: float = 0.001            # sparsity level: the fraction of weights trained

    def __init__(self, config=None):
        super().__init__(config)
        if not 0.0 <= self.config.alpha <= 1.0:
            raise ConfigError(f"bad value for alpha: {self.config.alpha} (must be in [0, 1])")

    def scores(self, ctx):
        w = mean_gradient(ctx)
        return OrderedDict((n, g.abs_()) for n, g in w.items())      # |w| ranks the weights (Eq. 3)

    def mask_count(self, total):
        return mask_size(self.config.alpha, total)                   # d = ⌊αD⌋
