"""surprise, surprise-diff: layerwise surprise (the Automatic fine-tuning paper,
Agarwala et al., Sec. 4.3, after Eastwood et al. 2022).

For each layer ℓ, the pretrained network's activations f_{1:ℓ}(x) on a sample of
source (pretraining-domain, `ctx.source`) and target (downstream train) images;
per dimension k, 8 equal-width bins over the joint (source ∪ target) range of
that dimension, normalised counts π^{k,src}, π^{k,tgt}:

    s_ℓ  = Σ_k Σ_{i=1..8} π_i^{k,tgt} log(π_i^{k,tgt} / π_i^{k,src})      (Eq. 1)
    s*_ℓ = max(0, s_ℓ − s_{ℓ−1})                                         (surprise-diff)
    lr_ℓ = base lr × s_ℓ / max s   (or s*_ℓ / max s*)

surprise-diff: the paper prints min(0, s_ℓ − s_{ℓ−1}), which is ≤ 0 for every
layer — every learning rate would be zero or negative (gradient ascent), and the
stated purpose, "to isolate the surprise due to a particular layer from the
previous layers", is the increase. We implement max(0, ·) and read min as a
typo. The first layer (stem) has no previous layer: s*_stem = s_stem.

Layers of a ViT (ribench.toolkit.layers vocabulary), each with its own activation:
stem → the tokens entering the first transformer block (patch embedding + class
token + position embedding + pre-norm); block.i → the output of block i;
post → the image features the head reads (final norm / pooling / projection;
CLIP's are L2-normalised); head → the logits over the suite's classes. A
block's lr weight applies to every tensor in it. Tokens per image are reduced
by `tokens`: mean (default: every patch counts, so a low-level shift that moves
all patches shows up in early blocks), cls (the class token, what the head
reads), all (every token × channel a dimension: the paper's literal "flatten
the activations", T·D dimensions per block). Sequence-first open_clip
transformers (batch_first false) are transposed before reducing.

Choices where the paper leaves room: a seeded sample of `samples` = 512 images
of each split (the whole split if smaller); smoothing ε = 1e-6 added to every
bin probability before renormalising (π = (c/n + ε)/(1 + 8ε)), so an empty
source bin gives a finite term; a dimension with a single value (zero range)
puts everything in one bin and contributes 0. The sum over dimensions is
taken as printed, so layers with more dimensions can score higher. Layers with
weight 0 are frozen; if every score is 0, every layer trains at the full rate.
Statistics run in fp32, eval mode, in two streaming passes (joint range, then
counts), so memory does not grow with the sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ribench.methods._layerwise import (PAPER, LayerwiseRates, eval_mode, relative, sample_indices,
                                        trainable_layers, weighted_groups)
from ribench.toolkit.layers import blocks, transformer_blocks


def histogram(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """(K, bins) counts of each column of x (n, K) in `bins` equal-width bins over [lo_k, hi_k]."""
    width = hi - lo
    scale = torch.where(width > 0, bins / torch.where(width > 0, width, torch.ones_like(width)),
                        torch.zeros_like(width))
    idx = ((x - lo) * scale).floor().clamp_(0, bins - 1).long()     # hi_k falls in the last bin
    flat = idx + torch.arange(x.shape[1], device=x.device) * bins
    return torch.bincount(flat.flatten(), minlength=x.shape[1] * bins).view(x.shape[1], bins)


def kl_per_dimension(counts_tgt: torch.Tensor, counts_src: torch.Tensor, eps: float) -> torch.Tensor:
    """KL(π_tgt ‖ π_src) per row of (K, bins) counts, with ε added to every bin probability."""
    bins = counts_tgt.shape[1]

    def probabilities(c):
        c = c.double()
        return (c / c.sum(1, keepdim=True) + eps) / (1 + bins * eps)

    p, q = probabilities(counts_tgt), probabilities(counts_src)
    return (p * (p.log() - q.log())).sum(1)                          # Eq. 1, inner sum


def _batch_first(model) -> bool:
    transformer = getattr(model.image_backbone(), "transformer", None)
    if transformer is None:
        return True                                   # timm: (N, T, D)
    return bool(getattr(transformer, "batch_first", False))   # open_clip: older versions are (T, N, D)


class ActivationTaps:
    """Forward hooks giving {layer: (n, K) fp32 activations} for stem, block.i, post and head."""

    def __init__(self, model, tokens: str = "mean"):
        self.model, self.tokens, self.batch_first = model, tokens, _batch_first(model)
        self.out: dict = {}
        stack = transformer_blocks(model)
        first = next(iter(stack.values()))
        self.handles = [first.register_forward_pre_hook(self._pre("stem", tokens=True), with_kwargs=True)]
        for name, block in stack.items():
            self.handles.append(block.register_forward_hook(self._post(name, tokens=True)))
        self.handles.append(model.head.register_forward_pre_hook(self._pre("post", tokens=False), with_kwargs=True))
        self.handles.append(model.head.register_forward_hook(self._post("head", tokens=False)))

    def _reduce(self, a: torch.Tensor, tokens: bool) -> torch.Tensor:
        a = a.detach().float()
        if not tokens:
            return a.flatten(1)
        if not self.batch_first:
            a = a.transpose(0, 1)
        if self.tokens == "cls":
            return a[:, 0]
        if self.tokens == "mean":
            return a.mean(1)
        return a.flatten(1)

    def _pre(self, name, tokens):
        def hook(module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            self.out[name] = self._reduce(x, tokens)
        return hook

    def _post(self, name, tokens):
        def hook(module, args, output):
            self.out[name] = self._reduce(output[0] if isinstance(output, tuple) else output, tokens)
        return hook

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> dict:
        self.out = {}
        self.model(x)
        return self.out

    def close(self):
        for h in self.handles:
            h.remove()


def layer_surprise(model, source, target, src_idx, tgt_idx, preprocess, device, batch_size,
                   bins=8, tokens="mean", eps=1e-6) -> dict:
    """{layer: s_ℓ} (Eq. 1) on the given rows of the source and target splits."""

    def images(split, idx):
        for start in range(0, len(idx), batch_size):
            rows = np.asarray(idx[start:start + batch_size])
            yield preprocess(torch.from_numpy(np.asarray(split.images[rows])).to(device))

    taps = ActivationTaps(model, tokens)
    try:
        with eval_mode(model):
            lo, hi = {}, {}
            for split, idx in ((source, src_idx), (target, tgt_idx)):      # pass 1: joint range
                for x in images(split, idx):
                    for name, a in taps(x).items():
                        amin, amax = a.min(0).values, a.max(0).values
                        lo[name] = torch.minimum(lo[name], amin) if name in lo else amin
                        hi[name] = torch.maximum(hi[name], amax) if name in hi else amax
            counts = {}
            for domain, split, idx in (("src", source, src_idx), ("tgt", target, tgt_idx)):  # pass 2
                for x in images(split, idx):
                    for name, a in taps(x).items():
                        c = histogram(a, lo[name], hi[name], bins)
                        key = (domain, name)
                        counts[key] = counts[key] + c if key in counts else c
    finally:
        taps.close()
    return {name: float(kl_per_dimension(counts[("tgt", name)], counts[("src", name)], eps).sum())
            for name in lo}


class Surprise(LayerwiseRates):
    name = "surprise"
    description = "layerwise surprise: layer lr ∝ KL(target ‖ source) of its activation histograms"
    paper = f"{PAPER}, Sec. 4.3"

    @dataclass
    class Config:
        samples: int = 512                                 # images of each domain (0: whole split)
        bins: int = 8                                      # per dimension, over the joint range
        tokens: Literal["mean", "cls", "all"] = "mean"     # how a block's tokens reduce per image
        smoothing: float = 1e-6                            # ε added to every bin probability

    def __init__(self, config=None):
        super().__init__(config)
        self.layer_surprise: dict = {}                     # s_ℓ per block, set by prepare

    def surprise(self, ctx) -> dict:
        cfg = self.config
        src = sample_indices(len(ctx.source), cfg.samples, ctx.seed, 31)
        tgt = sample_indices(len(ctx.train), cfg.samples, ctx.seed, 30)
        return layer_surprise(ctx.model, ctx.source, ctx.train, src, tgt, ctx.preprocess, ctx.device,
                              ctx.protocol.batch_size, cfg.bins, cfg.tokens, cfg.smoothing)

    def scores(self, s: dict) -> dict:
        return s

    def weights_from_scores(self, scores: dict) -> dict:
        return relative(scores)

    def _members(self, ctx) -> dict:
        trainable = trainable_layers(ctx.model)
        return {b: [trainable[n] for n in names if n in trainable] for b, names in blocks(ctx.model).items()}

    def prepare(self, ctx):
        members = self._members(ctx)
        s = self.surprise(ctx)
        missing = set(members) - set(s)
        if missing:
            raise ValueError(f"no activation for layer(s) {sorted(missing)}")
        self.layer_surprise = {b: s[b] for b in members}              # s_ℓ per block, input to output
        self.layer_scores = self.scores(self.layer_surprise)
        self.layer_weights = self.weights_from_scores(self.layer_scores)

    def param_groups(self, ctx):
        return weighted_groups(self._members(ctx), self.layer_weights)


class SurpriseDiff(Surprise):
    name = "surprise-diff"
    description = "layerwise surprise, lr ∝ the increase of surprise over the previous layer"

    def scores(self, s: dict) -> dict:
        out, previous = {}, 0.0
        for name, value in s.items():                      # input to output
            out[name] = max(0.0, value - previous)         # s*_ℓ = max(0, s_ℓ − s_{ℓ−1})
            previous = value
        return out
