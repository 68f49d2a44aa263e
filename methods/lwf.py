"""lwf: learning without forgetting (Li & Hoiem, TPAMI 2017), as ImageNet-RIB applies it.

    L = L_CE(z, y) + α·KL( softmax(z0/T) ‖ softmax(z/T) )

z0: logits of the frozen pretrained model on the same batch (its head over the
dataset's classes), z: the model being trained. α = 1, T = 2, batch-mean
reduction and no T² factor, as the reference code.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ribench.engine.method import Regularizer
from ribench.engine.recipe import Recipe


class LwF(Regularizer):
    name = "lwf"
    description = "LwF: cross-entropy + α·KL(pretrained ‖ model) on temperature-T logits"
    paper = "https://arxiv.org/abs/1606.09282"
    recipe = Recipe(optimizer="sgd", lr=1e-3, source="Li & Hoiem 2017 fine-tune with SGD; lr centred on ImageNet-RIB's 1e-3")

    @dataclass
    class Config:
        alpha: float = 1.0
        T: float = 2.0

    def penalty(self, ctx, batch):
        if self.config.alpha == 0:
            return None
        with torch.no_grad():
            z0 = ctx.pretrained(batch.images)[:, batch.class_mask].float()
        T = self.config.T
        kl = F.kl_div(F.log_softmax(batch.logits / T, dim=1), F.softmax(z0 / T, dim=1), reduction="batchmean")
        return self.config.alpha * kl
