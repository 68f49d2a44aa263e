"""flyp: finetune like you pretrain (Goyal et al., CVPR 2023).

Both CLIP towers (and the logit scale) are fine-tuned with the pretraining
objective, the symmetric contrastive loss over a batch of (image, caption)
pairs, the caption a prompt template filled with the label's class name:

    s_ij = exp(t)·⟨f(x_i), g(c_j)⟩ (unit-norm embeddings)
    L = ½·[ CE(s, diag) + CE(sᵀ, diag) ]

Each sample's template is drawn from the suite's templates with the cell's
seed. Evaluation uses a zero-shot head rebuilt from the fine-tuned text
tower. The paper uses AdamW with weight decay 0.1; ribench keeps the suite's
protocol so rows stay comparable (`--set optimizer=adamw weight_decay=0.1`
gives the paper's optimizer).
"""

from dataclasses import dataclass

import math

import numpy as np
import torch
import torch.nn.functional as F

from ribench.errors import ConfigError
from ribench.engine.method import Method, ParamGroup


class FLYP(Method):
    name = "flyp"
    description = "FLYP: contrastive fine-tuning of both CLIP towers on class-name captions"
    paper = "https://arxiv.org/abs/2212.00638"
    requires_text_tower = True

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
        target = torch.arange(len(logits), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))

    @torch.no_grad()
    def after_step(self, ctx):
        ctx.model.clip.logit_scale.clamp_(0, math.log(100))   # as CLIP training

    @torch.no_grad()
    def finish(self, ctx):
        ctx.model.set_zeroshot_head()     # Û from the fine-tuned text tower, s = exp(its fine-tuned logit scale)
