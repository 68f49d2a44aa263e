"""Image classifiers over a suite's label space, built from pretrained weights.

Every preset returns a `Classifier`: an `nn.Module` mapping preprocessed images
to logits over the suite's classes, with `features` (penultimate, what `lp`
and OTDD use), a linear `head`, and `backbone_parameters()` (everything but
the head). CLIP presets classify through a zero-shot head built by their text
tower from class names and prompt templates, parameterised as s·Û (see
`LogitScaledHead`); supervised presets restrict their own classifier head to
the suite's classes.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ribench.errors import WeightsError


def unloadable(path, what: str, error: BaseException, hint: str = "") -> WeightsError:
    """One line for a weights file that cannot be loaded, whatever the loading library raised
    (open_clip asserts, safetensors and torch raise their own types; torch's advice to pass
    weights_only=False, which would run the file's code, is never repeated)."""
    if isinstance(error, pickle.UnpicklingError):
        why = "it holds pickled Python objects besides tensors, which ribench never loads"
    else:
        text = " ".join(str(error).split()) or "no message"
        why = f"{type(error).__name__}: {text if len(text) < 300 else text[:300] + ' ...'}"
    return WeightsError(f"{path} is not {what} ({why}){hint}")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LogitScaledHead(nn.Module):
    """CLIP's zero-shot head as a fixed logit scale times trainable class directions: logits = s·Û·f.

    CLIP scores an image against class texts as "scaled pairwise cosine similarities"
    (Radford et al. 2021, Fig. 3: logits = ⟨I_e, T_e⟩·exp(t)), so the zero-shot weight
    matrix W = s·Û has rows of norm s = exp(t) (100 for the released towers). Trained
    as W, an SGD step lr·∇_W L is tiny against ‖W‖ ∝ s: under the suite's SGD a CLIP
    head barely trained (0.02% per epoch of `lp` on rib-tiny). Here `weight` is Û,
    trainable, starting at the unit-norm class text directions, and `scale` is s, a
    persistent buffer that no optimizer sees: the logits at θ0 are those of CLIP's
    zero-shot classifier, ∇_Û L = s·∇_W L, and a step moves Û by s² more relative
    to its norm than it moved W (7% per `lp` epoch on rib-tiny, s ≈ 21 there).
    Nothing renormalises Û during training: W = s·Û is a plain linear map.
    """

    bias = None

    def __init__(self, in_features: int, out_features: int, scale: float = 1.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))    # Û
        self.register_buffer("scale", torch.tensor(float(scale)))              # s, never trained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(x, self.weight)

    def logit_weight(self) -> torch.Tensor:
        """W = s·Û, the linear map from features to logits."""
        return self.scale * self.weight


class Classifier(nn.Module):
    head: nn.Module                                # nn.Linear, or a LogitScaledHead for CLIP
    head_parameterisation: str = "plain"           # what head.weight means; part of a cell's identity

    def logit_weight(self) -> torch.Tensor:
        """The linear map from features to logits (what a probe's L2 penalty is on)."""
        return self.head.weight

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

    logits = s·Û·normalize(encode_image(x)): Û (`head.weight`, trained) = the class text
    embeddings averaged over templates and normalised, s (`head.scale`, fixed) =
    exp(logit_scale), as CLIP's zero-shot protocol. See `LogitScaledHead`.
    """

    head_parameterisation = "logit-scaled"

    def __init__(self, clip, tokenizer, class_names, templates):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.class_names = tuple(class_names)
        self.templates = tuple(templates)
        for p in self.text_parameters():
            p.requires_grad_(False)
        self.head = LogitScaledHead(clip.text_projection.shape[1] if hasattr(clip, "text_projection")
                                    else clip.visual.output_dim, len(class_names))
        self.set_zeroshot_head()

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

    def logit_weight(self):
        return self.head.logit_weight()

    @torch.no_grad()
    def set_zeroshot_head(self) -> None:
        """head ← the zero-shot head of the current text tower and logit scale (s = exp(logit_scale))."""
        # rows normalised here too, so an override returning s·Û (a cached head) gives the same Û
        self.head.weight.copy_(F.normalize(self.zeroshot_weights().float(), dim=-1))
        self.head.scale.copy_(self.clip.logit_scale.detach().exp())

    @torch.no_grad()
    def zeroshot_weights(self) -> torch.Tensor:
        """Û: per class, the normalised mean of the normalised template embeddings (unit rows)."""
        device = next(self.clip.parameters()).device
        rows = []
        for name in self.class_names:
            tokens = self.tokenizer([t.format(name) for t in self.templates]).to(device)
            emb = F.normalize(self.clip.encode_text(tokens), dim=-1).mean(0)
            rows.append(F.normalize(emb, dim=-1))
        return torch.stack(rows)


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
