"""Image classifiers over a suite's label space, built from pretrained weights.

Every preset returns a `Classifier`: an `nn.Module` mapping preprocessed images
to logits over the suite's classes, with `features` (penultimate, what `lp`
and OTDD use), a linear `head`, and `backbone_parameters()` (everything but
the head). CLIP presets classify through a zero-shot head built by their text
tower from class names and prompt templates; supervised presets restrict their
own classifier head to the suite's classes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Classifier(nn.Module):
    head: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def backbone_parameters(self):
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head_ids]

    def image_backbone(self) -> nn.Module:
        """The module holding the image encoder's blocks (where adapters go)."""
        return self


class ClipClassifier(Classifier):
    """open_clip CLIP image tower + a zero-shot head; the text tower rides along frozen.

    logits = head(normalize(encode_image(x))), head.weight = logit_scale * class text
    embeddings (averaged over templates, normalised), as CLIP's zero-shot protocol.
    """

    def __init__(self, clip, tokenizer, class_names, templates):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.class_names = tuple(class_names)
        self.templates = tuple(templates)
        for p in self.text_parameters():
            p.requires_grad_(False)
        self.head = nn.Linear(clip.text_projection.shape[1] if hasattr(clip, "text_projection")
                              else clip.visual.output_dim, len(class_names), bias=False)
        with torch.no_grad():
            self.head.weight.copy_(self.zeroshot_weights())

    def text_parameters(self):
        """Parameters of the text tower (and logit scale): not part of the image classifier."""
        visual = {id(p) for p in self.clip.visual.parameters()}
        return [p for p in self.clip.parameters() if id(p) not in visual]

    def backbone_parameters(self):
        return list(self.clip.visual.parameters())

    def image_backbone(self):
        return self.clip.visual

    def features(self, x):
        return F.normalize(self.clip.encode_image(x), dim=-1)

    @torch.no_grad()
    def zeroshot_weights(self) -> torch.Tensor:
        device = next(self.clip.parameters()).device
        rows = []
        for name in self.class_names:
            tokens = self.tokenizer([t.format(name) for t in self.templates]).to(device)
            emb = F.normalize(self.clip.encode_text(tokens), dim=-1).mean(0)
            rows.append(F.normalize(emb, dim=-1))
        return self.clip.logit_scale.exp() * torch.stack(rows)


class TimmClassifier(Classifier):
    """A timm ViT whose classifier head is restricted to the suite's classes."""

    def __init__(self, vit, class_index=None):
        super().__init__()
        self.vit = vit
        head = vit.head
        if class_index is not None:
            sub = nn.Linear(head.in_features, len(class_index), bias=head.bias is not None)
            with torch.no_grad():
                sub.weight.copy_(head.weight[class_index])
                if head.bias is not None:
                    sub.bias.copy_(head.bias[class_index])
            head = sub
        vit.head = nn.Identity()
        self.head = head

    def features(self, x):
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)

    def backbone_parameters(self):
        return list(self.vit.parameters())

    def image_backbone(self):
        return self.vit


@dataclass
class Pretrained:
    """What a pretrain preset builds: the classifier, its transform, its provenance."""

    name: str
    model: Classifier
    preprocess: Callable[[torch.Tensor], torch.Tensor]   # uint8 (n,H,W,3) -> float (n,3,H,W)
    weights_sha256: str
    has_text_tower: bool
    info: dict = field(default_factory=dict)              # e.g. the weight file's metadata


def normalizer(mean, std):
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)

    def preprocess(images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        return (x - mean_t.to(x.device)) / std_t.to(x.device)

    return preprocess
