"""criticality-identity, criticality-random: module criticality (the Automatic fine-tuning
paper, Agarwala et al., Sec. 4.4, Algorithms 3-4).

How much block ℓ matters to the pretrained network's predictions (V-information,
Xu et al. 2020, as the paper re-purposes it): remove it and measure the loss on
source (pretraining-domain) data,

    w_ℓ = L(f(θ_1, …, δ_ℓ, …, θ_n), D_src) − L(f(θ_1, …, θ_n), D_src)     (Sec. 4.4, I_V)
    TopK = the K blocks with the largest w;  lr_ℓ = base lr × w_ℓ / max w for ℓ ∈ TopK, 0 otherwise

"Removing" block ℓ: `-identity` replaces it by the identity (its output is its
input; the residual stream passes through), `-random` re-initialises its
weights, "close to its initial weights (using the same initialization
mechanism)", Algorithm 3's "Kaiming Initialization": every submodule's own
`reset_parameters()` (PyTorch's defaults: Kaiming-uniform for Linear,
Xavier-uniform for the attention in-projection, ones/zeros for LayerNorm),
under a seed drawn from (ctx.seed, block index). Both run on copies or through
hooks; the model is not changed.

Choices where the paper leaves room:
- w_ℓ is the loss *increase* (the I_V formula), clipped at 0 (a block whose
  removal lowers the loss gets no lr). Algorithm 3 writes the loss itself,
  w_ℓ ← L(f', D_src), which changes w/max w; `measure=loss` gives that reading.
- Only transformer blocks are measured, as ribench's spec says: the stem cannot
  be replaced by an identity (images in, tokens out), nor the head. The stem and
  post (final norm, projection) train at `others` × lr (default 1: as ft) and the
  head at `head` × lr (default 1: the classifier must learn the downstream task);
  set either to 0 to freeze it.
- K: `top_k` = 0 trains every block (the paper found tuning all layers best,
  Fig. 4). Ties in w are broken by block order (earlier first).
- D_src: a seeded sample of `samples` = 512 images of ctx.source (labels within
  its class mask); `data=target` measures on the downstream train split instead
  (the paper mentions both in Sec. 1).
- `partial_epochs` (Algorithm 4): first fine-tune a copy with `ft` for that many
  epochs under the suite's protocol, measure criticality on it, then train the
  pretrained model with those weights. The paper chose 0 by validation
  (Sec. 4.4, Fig. 8); 0 is the default, i.e. Algorithm 3.
If every w is 0, no block is preferred and every block trains at the full rate.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ribench.engine.context import FitContext
from ribench.engine.trainer import train
from ribench.methods._layerwise import (PAPER, LayerwiseRates, eval_mode, labelled_batches, relative,
                                        sample_indices, trainable_layers, weighted_groups)
from ribench.methods.ft import FineTune
from ribench.toolkit.layers import blocks, transformer_blocks


def _identity_hook(module, args, kwargs, output):
    x = args[0] if args else next(iter(kwargs.values()))
    return x                                                   # f'_ℓ = δ: output = input


def reinitialised(block: torch.nn.Module, seed: int) -> dict:
    """{parameter name: tensor} of `block` re-initialised by its modules' own reset_parameters()."""
    fresh = copy.deepcopy(block)
    cuda = sorted({p.device.index or 0 for p in fresh.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
            if callable(reset):                 # nn.MultiheadAttention names it _reset_parameters
                reset()
    return {n: p.detach() for n, p in fresh.named_parameters()}


def mean_loss(model, batches, overrides: dict | None = None) -> float:
    """Mean cross-entropy over pre-built (x, y, mask) batches; `overrides` replace weights by name."""
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y, mask in batches:
            logits = (functional_call(model, overrides, (x,)) if overrides else model(x))[:, mask].float()
            total += float(F.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
    return total / max(n, 1)


def criticality(model, batches, removal: str, seed: int) -> tuple[float, dict]:
    """(L(f), {block: L(f with block ℓ removed)}) on the batches."""
    prefix = {id(m): name for name, m in model.named_modules()}
    with eval_mode(model):
        base = mean_loss(model, batches)
        removed = {}
        for i, (name, block) in enumerate(transformer_blocks(model).items()):
            if removal == "identity":
                handle = block.register_forward_hook(_identity_hook, with_kwargs=True)
                try:
                    removed[name] = mean_loss(model, batches)
                finally:
                    handle.remove()
            else:
                block_seed = int(np.random.SeedSequence([seed, 41, i]).generate_state(1)[0])
                fresh = reinitialised(block, block_seed)
                removed[name] = mean_loss(model, batches,
                                          {f"{prefix[id(block)]}.{n}": t for n, t in fresh.items()})
    return base, removed


class _Criticality(LayerwiseRates):
    removal: str = "identity"

    @dataclass
    class Config:
        samples: int = 512                              # source images (0: the whole split)
        top_k: int = 0                                  # blocks trained; 0: all
        measure: Literal["increase", "loss"] = "increase"
        data: Literal["source", "target"] = "source"
        others: float = 1.0                             # lr multiplier of stem and post
        head: float = 1.0                               # lr multiplier of the head
        partial_epochs: int = 0                         # Algorithm 4: ft this long before measuring

    def __init__(self, config=None):
        super().__init__(config)
        self.criticality_losses: dict = {}              # set by prepare

    def _measured_model(self, ctx):
        if self.config.partial_epochs <= 0:
            return ctx.model
        sub = FitContext(copy.deepcopy(ctx.model), ctx.pretrained, ctx.train, ctx.source, ctx.preprocess,
                         dataclasses.replace(ctx.protocol, epochs=self.config.partial_epochs), ctx.seed,
                         ctx.device)
        train(FineTune(), sub)
        return sub.model

    def scores(self, ctx) -> dict:
        cfg = self.config
        split = ctx.source if cfg.data == "source" else ctx.train
        idx = sample_indices(len(split), cfg.samples, ctx.seed, 40)
        model = self._measured_model(ctx)
        batches = list(labelled_batches(split, idx, ctx.protocol.batch_size, ctx.preprocess, ctx.device))
        base, removed = criticality(model, batches, self.removal, ctx.seed)
        self.criticality_losses = {"base": base, **removed}     # L(f) and L(f with block ℓ removed)
        if cfg.measure == "loss":
            return removed                                              # Algorithm 3: w_ℓ ← L(f', D_src)
        return {b: max(0.0, loss - base) for b, loss in removed.items()}  # I_V, clipped at 0

    def weights_from_scores(self, scores: dict) -> dict:
        k = self.config.top_k
        order = sorted(scores, key=lambda b: -scores[b])                 # stable: ties by block order
        top = set(order if k <= 0 else order[:k])
        weights = relative({b: scores[b] for b in top})
        return {b: weights.get(b, 0.0) for b in scores}

    def prepare(self, ctx):
        self.layer_scores = self.scores(ctx)
        self.layer_weights = self.weights_from_scores(self.layer_scores)

    def param_groups(self, ctx):
        trainable = trainable_layers(ctx.model)
        members = {b: [trainable[n] for n in names if n in trainable] for b, names in blocks(ctx.model).items()}
        weights = dict(self.layer_weights)
        for b in members:
            if b not in weights:
                weights[b] = self.config.head if b == "head" else self.config.others
        return weighted_groups(members, weights)


class CriticalityIdentity(_Criticality):
    name = "criticality-identity"
    description = "module criticality: block lr ∝ source-loss increase when the block is the identity"
    paper = f"{PAPER}, Sec. 4.4, Algorithm 3"
    removal = "identity"


class CriticalityRandom(_Criticality):
    name = "criticality-random"
    description = "module criticality: block lr ∝ source-loss increase when the block is re-initialised"
    paper = f"{PAPER}, Sec. 4.4, Algorithm 3"
    removal = "random"
