"""saft: sparse adaptation for fine-tuning (Sony AI, ECCV 2024, arXiv 2407.03036).

Phase 1, once, at θ0 (Algorithm 1):
    w = (1/N)·Σ_i ∇θ L_CE(x_i, y_i; θ)                      (Eq. 2, the whole train split)
    m_k = 1 iff |w_k| ≥ sorted(|w|)[d],  d = ⌊αD⌋              (Eq. 3, descending sort)
Phase 2: train; after every step reset the unmasked weights to θ0.

- Which weights (`towers`). The paper's θ = [θ_I, θ_T] holds "both image and
  text encoders", and it classifies through the text encoder,
  P(y|x) ∝ exp(⟨I_x, T_{t_y}⟩/τ) with t_y the class prompt (Eq. 1); "For SAFT,
  we fine-tune both image and text encoders" (Sec. 3, Implementation details),
  and it finds that "SAFT tends to select more learnable parameters in the text
  encoder" (Fig. 6). `towers=both` (default) does that on a CLIP pretrain: D
  counts every scalar weight of the image tower and of the text tower (token and
  position embeddings, transformer, final norm, projection; not the logit scale,
  Eq. 1's fixed temperature), ranked all at once. The head is then no weight of
  its own but a function of the text tower, h_y = exp(t)·normalize(mean over
  templates of normalize(T(template(y)))): training computes it from the tuned
  text tower at every step, and `finish` rebuilds the zero-shot head from it, as
  `flyp` does. `towers=image` ranks the image classifier only (image tower and
  the head, a free weight), ribench's earlier variant; on a pretrain without a
  text tower `both` is that too.
- w is the signed gradient averaged over every training sample, then its
  magnitude: |mean g|, not mean |g| (the paper sets this against the Fisher's
  mean of squared gradients: averaging first mitigates outliers). It is computed
  exactly, not estimated: batches of the train split in order, the loss summed
  over the batch and divided by N, gradients accumulated by backward, in eval
  mode (no dropout) and float32 without autocast. With `towers=both` the CE is
  the zero-shot head's (every template: the model at θ0 exactly), and the text
  tower's part of w is ∂L/∂h backpropagated through the head's construction,
  in chunks of captions (exact, with bounded memory).
- Training with `towers=both` draws `train_templates` templates per class at every
  step with the cell's seed (default 1: the paper's one prompt t_y per class;
  0: all of the suite's templates, the evaluated head itself, classes ×
  templates text passes per step, 60 on rib-mini, up to 80 000 on ImageNet-RIB).
- α = 0.001 (the paper's default for every dataset). d is ⌊αD⌋ with α read as
  written (0.001 = 1/1000), so d is exact. Eq. 3's "≥ the d-th largest" can
  select more than d weights when scores tie; ribench selects exactly d: a
  stable sort by (−|w|, position), the position being the weight's index when
  the ranked tensors are laid end to end in the model's parameter order.
- The reset is exact and free: only the masked entries are given to the
  optimizer (`ribench.toolkit.sparse`), so the others are never written and no momentum
  or weight decay can move them, and the optimizer keeps state for the d masked
  weights only (the paper resets dense weights and leaves sparse optimizers such
  as SparseAdam to future work). The masked weights follow the paper's
  update-then-reset loop bit for bit; α = 1 with `towers=image` is `ft`, bit for bit.
- Recipe: "SAFT is trained using the AdamW optimizer with a weight decay of 0.1
  ... a learning rate of 5×10−6 with the cosine learning rate strategy" (Sec. 3,
  Implementation details). AdamW matters for where the mask acts: the mask holds
  the weights with the largest |mean gradient|, and under SGD they are also the
  ones that move furthest. Measured before (image classifier ranked, SGD, rib-mini):
  91–99% of the mask landed in the stem — the patch embedding and the class
  token (and position embedding, ln_pre) — whose mean gradient over rib-mini's
  white-background images is a DC offset every token carries, and the head got
  none; SGD SAFT then lowered the train loss while train and test accuracy fell.
  AdamW's steps do not scale with the gradient.

`learned` reports how many masked weights each tower holds ("masked": {"image": …,
"text": …}).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ribench.engine.recipe import Recipe
from ribench.engine.trainer import position_labels
from ribench.errors import ConfigError
from ribench.toolkit.layers import image_parameters
from ribench.toolkit.sparse import MaskedFineTune, mask_size

CAPTION_CHUNK = 256          # captions per backward pass through the text tower in phase 1


@contextlib.contextmanager
def accumulated_gradients(model, params: "OrderedDict[str, torch.nn.Parameter]"):
    """Within: only `params` take gradients, in eval mode, from zero. Yields a function that returns what
    they accumulated (zeros where nothing reached them); on exit the model is as it was."""
    was_training = model.training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in params)
        p.grad = None
    model.eval()
    try:
        yield lambda: OrderedDict((n, p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                                  for n, p in params.items())
    finally:
        for name, p in model.named_parameters():
            p.grad = None
            p.requires_grad_(flags[name])
        model.train(was_training)


def mean_gradient(ctx, batch_size: int | None = None) -> "OrderedDict[str, torch.Tensor]":
    """w of Eq. 2 for every weight of the image classifier, at ctx.model's current weights."""
    model, split = ctx.model, ctx.train
    params = image_parameters(model)
    with accumulated_gradients(model, params) as gradients:
        mask = torch.as_tensor(split.class_mask, device=ctx.device)
        targets = position_labels(split.labels, split.class_mask)
        n = len(split)
        for x, _, idx in split.model_inputs(batch_size or ctx.protocol.batch_size, ctx.preprocess, ctx.device):
            y = torch.from_numpy(targets[idx]).to(ctx.device)
            loss = F.cross_entropy(model(x)[:, mask].float(), y, reduction="sum") / n
            loss.backward()            # accumulates Σ_i ∇L_i / N into p.grad
        return gradients()       # read before the model is restored


def text_tower_parameters(model) -> "OrderedDict[str, torch.nn.Parameter]":
    """θ_T: the CLIP text encoder's weights by name (not the logit scale, Eq. 1's temperature)."""
    text = {id(p) for p in model.text_parameters()} - {id(model.clip.logit_scale)}
    return OrderedDict((n, p) for n, p in model.named_parameters() if id(p) in text)


def class_prompts(model, class_names, templates, device) -> torch.Tensor:
    """Caption tokens, (classes, templates, context length)."""
    tokens = model.tokenizer([t.format(n) for n in class_names for t in templates])
    return tokens.view(len(class_names), len(templates), -1).to(device)


def text_head(clip, tokens: torch.Tensor) -> torch.Tensor:
    """h_y = exp(t)·normalize(mean_t normalize(T(tokens[y, t]))), differentiable in the text tower.

    The zero-shot head's formula (ribench.pretrains.base.ClipClassifier.zeroshot_weights).
    """
    classes, count, length = tokens.shape
    emb = F.normalize(clip.encode_text(tokens.reshape(classes * count, length)), dim=-1)
    return clip.logit_scale.exp().detach() * F.normalize(emb.view(classes, count, -1).mean(1), dim=-1)


def text_gradient(model, tokens: torch.Tensor, head_grad: torch.Tensor,
                  chunk: int = CAPTION_CHUNK) -> "OrderedDict[str, torch.Tensor]":
    """∂L/∂θ_T = Σ_y ∂L/∂h_y·∂h_y/∂θ_T for h = text_head(tokens), given ∂L/∂h (rows as tokens' classes).

    Exact, in chunks of captions: the caption embeddings e are computed once without a graph,
    ∂L/∂e through the head's mean and normalisations, then each chunk's e is recomputed with
    a graph and backpropagated with its ∂L/∂e.
    """
    clip = model.clip
    params = text_tower_parameters(model)
    with accumulated_gradients(model, params) as gradients:
        classes, count, length = tokens.shape
        flat = tokens.reshape(classes * count, length)
        with torch.no_grad():
            emb = torch.cat([F.normalize(clip.encode_text(flat[s:s + chunk]), dim=-1)
                             for s in range(0, len(flat), chunk)])
        emb.requires_grad_(True)
        head = clip.logit_scale.exp().detach() * F.normalize(emb.view(classes, count, -1).mean(1), dim=-1)
        (emb_grad,) = torch.autograd.grad(head, emb, grad_outputs=head_grad.to(head.dtype))
        for s in range(0, len(flat), chunk):
            F.normalize(clip.encode_text(flat[s:s + chunk]), dim=-1).backward(emb_grad[s:s + chunk])
        return gradients()       # read before the model is restored


class SAFT(MaskedFineTune):
    name = "saft"
    description = "SAFT: train only the top 0.1% weights by |mean gradient| (both CLIP towers); the rest stay at θ0"
    paper = "https://arxiv.org/abs/2407.03036"
    recipe = Recipe(optimizer="adamw", lr=5e-6, weight_decay=0.1,
                    source="SAFT (paper 001), Sec. 3, Implementation details: AdamW, weight decay 0.1, "
                           "lr 5e-6, cosine schedule")

    @dataclass
    class Config:
        alpha: float = 0.001            # sparsity level: the fraction of weights trained
        towers: Literal["image", "both"] = "both"   # both: θ = [θ_I, θ_T], the head follows the text tower
        train_templates: int = 1        # templates per class drawn each step (towers=both); 0: all

    def __init__(self, config=None):
        super().__init__(config)
        if not 0.0 <= self.config.alpha <= 1.0:
            raise ConfigError(f"bad value for alpha: {self.config.alpha} (must be in [0, 1])")
        if self.config.train_templates < 0:
            raise ConfigError(f"bad value for train_templates: {self.config.train_templates} (must be ≥ 0)")
        self.text = False             # whether this cell ranks and trains the text tower (set by prepare)
        self.tokens = None            # caption tokens of the split's classes × the suite's templates
        self.template_rng = None

    def ranked_parameters(self, ctx) -> "OrderedDict[str, torch.nn.Parameter]":
        """The weights D counts, in the model's parameter order."""
        if not self.text:
            return image_parameters(ctx.model)
        keep = {n for n in image_parameters(ctx.model) if not n.startswith("head.")}
        keep |= set(text_tower_parameters(ctx.model))
        return OrderedDict((n, p) for n, p in ctx.model.named_parameters() if n in keep)

    def scores(self, ctx):
        w = mean_gradient(ctx)
        if self.text:
            rows = torch.as_tensor(ctx.train.class_mask, device=ctx.device)
            scale = getattr(ctx.model.head, "scale", 1.0)     # ∂L/∂W = ∂L/∂Û / s for a head trained as s·Û
            w.update(text_gradient(ctx.model, self.tokens, w["head.weight"][rows] / scale))
        return OrderedDict((n, g.abs_()) for n, g in w.items())      # |w| ranks the weights (Eq. 3)

    def mask_count(self, total):
        return mask_size(self.config.alpha, total)                   # d = ⌊αD⌋

    def prepare(self, ctx):
        self.text = (self.config.towers == "both" and ctx.has_text_tower
                     and hasattr(ctx.model, "text_parameters"))
        if self.text:
            names = [ctx.class_names[c] for c in ctx.train.class_mask]
            self.tokens = class_prompts(ctx.model, names, ctx.templates, ctx.device)
            self.template_rng = np.random.default_rng([ctx.seed, 3])
        super().prepare(ctx)

    def compute_loss(self, ctx, batch):
        if not self.text:
            return super().compute_loss(ctx, batch)
        if ctx.step == 0:
            ctx.state["sparse"].check()
        tokens = self.tokens
        k = self.config.train_templates
        if 0 < k < tokens.shape[1]:                 # k distinct templates per class, drawn with the cell's seed
            pick = np.argsort(self.template_rng.random(tokens.shape[:2]), axis=1)[:, :k]
            pick = torch.from_numpy(pick).to(tokens.device)
            tokens = torch.gather(tokens, 1, pick[..., None].expand(-1, -1, tokens.shape[2]))
        head = text_head(ctx.model.clip, tokens)                      # rows: the split's classes
        logits = (ctx.model.features(batch.images) @ head.T).float()  # Eq. 1 through the text tower
        return F.cross_entropy(logits, batch.labels)

    @torch.no_grad()
    def finish(self, ctx):
        if self.text:
            ctx.model.head.weight.copy_(ctx.model.zeroshot_weights())   # the head follows the text tower

    def learned(self, ctx):
        sparse = ctx.state.get("sparse")
        if sparse is None:
            return {}
        text = set(text_tower_parameters(ctx.model)) if self.text else set()
        counts = {"image": 0, "text": 0}
        for name, idx in sparse.indices().items():
            counts["text" if name in text else "image"] += int(idx.numel())
        return {"masked": counts}
