"""flyp: finetune like you pretrain (Goyal et al., CVPR 2023).

Both CLIP towers (and the logit scale) are fine-tuned with the pretraining
objective, the symmetric contrastive loss over a batch of (image, caption)
pairs, the caption a prompt template filled with the label's class name:

    s_ij = exp(t)·⟨f(x_i), g(c_j)⟩ (unit-norm embeddings)
    L = ½·[ CE(s, P) + CE(sᵀ, P) ],   P_ij = [c_i = c_j] / Σ_k [c_i = c_k]

Identical captions are positives, as in the pretraining: the target of row i
is uniform over the columns whose caption equals c_i (P = I when all captions
differ, CLIP's diagonal). FLYP's batches of ImageNet's 1000 classes rarely
repeat a caption; on rib-mini (10 classes, 6 templates) about two rows in three
of a batch of 64 share their caption with another pair, and diagonal targets
would push an image away from its own caption wherever it is another pair's.
P is symmetric, so the same P serves image→text and text→image.

Each sample's template is drawn from the suite's templates with the cell's
seed. Evaluation uses a zero-shot head rebuilt from the fine-tuned text
tower. Recipe: the paper's AdamW, lr 1e-5, weight decay 0.1.
"""

from dataclasses import dataclass

import math

import numpy as np
import torch
import torch.nn.functional as F

from ribench.errors import ConfigError
from ribench.engine.method import Method, ParamGroup
from ribench.engine.recipe import Recipe


def contrastive_loss(logits: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
    """½·[CE(s, P) + CE(sᵀ, P)], P_ij uniform over the columns j whose caption (token row) equals row i's."""
    same = (captions[:, None, :] == captions[None, :, :]).all(-1).to(logits.dtype)
    target = same / same.sum(1, keepdim=True)          # P; symmetric, so Pᵀ = P for text → image
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class FLYP(Method):
    name = "flyp"
    description = "FLYP: contrastive fine-tuning of both CLIP towers on class-name captions"
    paper = "https://arxiv.org/abs/2212.00638"
    requires_text_tower = True
    recipe = Recipe(optimizer="adamw", lr=1e-5, weight_decay=0.1,
                    source="Goyal et al. 2023 (FLYP), ImageNet fine-tuning: AdamW, lr 1e-5, weight decay 0.1")

    @dataclass
    class Config:
        pass

    def __init__(self, config=None):
        super().__init__(config)
        self.tokens = None            # class × template caption tokens, set by prepare
        self.caption_rng = None       # which template captions each image

    def prepare(self, ctx):
        model = ctx.model
        if not hasattr(model, "clip") or not hasattr(model, "tokenizer"):
            raise ConfigError("flyp needs a CLIP pretrain with a text tower")
        names = [ctx.class_names[c] for c in ctx.train.class_mask]
        templates = list(ctx.templates)
        tokens = model.tokenizer([t.format(n) for n in names for t in templates])
        self.tokens = tokens.view(len(names), len(templates), -1).to(ctx.device)
        self.caption_rng = np.random.default_rng([ctx.seed, 2])

    def param_groups(self, ctx):
        return [ParamGroup(list(ctx.model.clip.parameters()), 1.0, "clip")]

    def compute_loss(self, ctx, batch):
        clip = ctx.model.clip
        tokens = self.tokens
        choice = self.caption_rng.integers(tokens.shape[1], size=len(batch.labels))
        captions = tokens[batch.labels, torch.from_numpy(choice).to(tokens.device)]
        image = F.normalize(clip.encode_image(batch.images), dim=-1)
        text = F.normalize(clip.encode_text(captions), dim=-1)
        logits = (clip.logit_scale.exp() * image @ text.T).float()
        return contrastive_loss(logits, captions)

    @torch.no_grad()
    def after_step(self, ctx):
        ctx.model.clip.logit_scale.clamp_(0, math.log(100))   # as CLIP training

    @torch.no_grad()
    def finish(self, ctx):
        ctx.model.set_zeroshot_head()     # Û from the fine-tuned text tower, s = exp(its fine-tuned logit scale)
