"""lora: low-rank adaptation (Hu et al., ICLR 2022) of the query and value projections.

    W_q ← W_q + (α/r)·B_q A_q,   W_v ← W_v + (α/r)·B_v A_v,   W_k unchanged

Hu et al. 2022, Sec. 4.1: "We use a random Gaussian initialization for A and zero
for B, so ΔW = BA is zero at the beginning of training. We then scale ΔWx by α/r,
where α is a constant in r. When optimizing with Adam, tuning α is roughly the
same as tuning the learning rate [...] we simply set α to the first r we try".
r = 8, α = 16 (scaling 2), no dropout, AdamW: the authors' RoBERTa-base recipe
(examples/NLU/roberta_base_mnli.sh: r 8, α 16, lr 5e-4, weight decay 0.1). A
starts from loralib's Kaiming-uniform initialisation (the authors' code), B = 0,
so training starts exactly at θ0. Every other weight, the head included, is
frozen (`also_train=none`).

ImageNet-RIB's code differs: α = 1 (scaling 1/8: under SGD at 3e-3 one rib-tiny
epoch moves q and v by 4e-6 of their norm, against 4e-3 under this recipe) and
it also trains the cls token, the position embedding and the final norm.
`also_train=rib` adds those; with `alpha=1` under the reference protocol it is
that variant.

Fused projections. timm's ViT computes q, k, v with one `qkv` Linear and
open_clip's towers with `nn.MultiheadAttention.in_proj_weight`, both a
(3d × d) matrix whose row thirds are q, k and v. A generic LoRA wrapper can
only adapt the whole matrix; here the adapter is a `torch.nn.utils.parametrize`
parametrization of that fused weight which returns
W + (α/r)·[B_q A_q; 0; B_v A_v], so the key third gets no update and the
attention code runs unchanged. After training the parametrization is removed
with its value kept (`leave_parametrized=True`): the adapters are merged and
the stored model is a plain model with the usual parameter names.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from ribench.errors import ConfigError
from ribench.engine.method import Method, ParamGroup
from ribench.engine.recipe import Recipe


class QueryValueLoRA(nn.Module):
    """Parametrization of a fused (3d × d) q/k/v weight: a rank-r update of the q and v thirds."""

    def __init__(self, dim: int, rank: int, alpha: float):
        super().__init__()
        self.scaling = alpha / rank
        self.A_q = nn.Parameter(torch.empty(rank, dim))
        self.A_v = nn.Parameter(torch.empty(rank, dim))
        self.B_q = nn.Parameter(torch.zeros(dim, rank))
        self.B_v = nn.Parameter(torch.zeros(dim, rank))
        for a in (self.A_q, self.A_v):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    def forward(self, weight):
        dim = weight.shape[1]
        no_change = weight.new_zeros(dim, dim)
        delta = torch.cat([self.B_q @ self.A_q, no_change, self.B_v @ self.A_v], dim=0)
        return weight + self.scaling * delta          # W + (α/r)·BA on the q and v thirds (Sec. 4.1)


def fused_qkv_weights(backbone: nn.Module):
    """(module, attribute) of every fused q/k/v projection weight in an image backbone."""
    found = []
    for module in backbone.modules():
        if isinstance(module, nn.MultiheadAttention):
            if module.in_proj_weight is None:
                raise ConfigError("lora: attention with separate q/k/v weights is not supported")
            found.append((module, "in_proj_weight"))
        elif isinstance(getattr(module, "qkv", None), nn.Linear):
            found.append((module.qkv, "weight"))
    return found


def reference_extras(backbone: nn.Module) -> list:
    """The cls token, position embedding and final norm of an open_clip or timm ViT (ImageNet-RIB's LoRA trains them)."""
    if hasattr(backbone, "class_embedding"):                       # open_clip VisionTransformer
        return [backbone.class_embedding, backbone.positional_embedding, *backbone.ln_post.parameters()]
    if getattr(backbone, "cls_token", None) is not None:           # timm VisionTransformer
        norm = backbone.norm if list(backbone.norm.parameters()) else backbone.fc_norm
        return [backbone.cls_token, backbone.pos_embed, *norm.parameters()]
    raise ConfigError("lora: also_train=rib needs a ViT with a cls token, a position embedding and a final norm")


class LoRA(Method):
    name = "lora"
    description = "LoRA rank 8, alpha 16 on the q and v projections; everything else frozen; merged after training"
    paper = "https://arxiv.org/abs/2106.09685"
    recipe = Recipe(optimizer="adamw", lr=5e-4, weight_decay=0.1,
                    source="Hu et al. 2022 (LoRA), Sec. 4.1 and App. D; the authors' "
                           "examples/NLU/roberta_base_mnli.sh: AdamW, lr 5e-4, weight decay 0.1, r 8, alpha 16")

    @dataclass
    class Config:
        rank: int = 8
        alpha: float = 16.0                          # scaling α/r = 2: the authors' α = 16 at r = 8
        also_train: Literal["none", "rib"] = "none"  # rib: + cls token, position embedding, final norm

    def __init__(self, config=None):
        super().__init__(config)
        self.targets: list = []       # (module, "weight") pairs, set by prepare
        self.adapters: list = []

    def prepare(self, ctx):
        targets = fused_qkv_weights(ctx.model.image_backbone())
        if not targets:
            raise ConfigError("lora: no fused q/k/v projection found in the image backbone")
        adapters = []
        for module, attr in targets:
            weight = getattr(module, attr)
            adapter = QueryValueLoRA(weight.shape[1], self.config.rank, self.config.alpha).to(weight.device)
            parametrize.register_parametrization(module, attr, adapter)
            adapters.append(adapter)
        self.targets, self.adapters = targets, adapters

    def param_groups(self, ctx):
        groups = [ParamGroup([p for a in self.adapters for p in a.parameters()], 1.0, "adapters")]
        if self.config.also_train == "rib":
            groups.append(ParamGroup(reference_extras(ctx.model.image_backbone()), 1.0, "cls-pos-norm"))
        return groups

    def finish(self, ctx):
        """Merge: W ← W + (α/r)·ΔW, then a plain parameter again."""
        for module, attr in self.targets:
            parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
