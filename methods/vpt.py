"""vpt: visual prompting with a pad prompter (Bahng et al., 2022), as ImageNet-RIB uses it.

A learnable border of width p, initialised from N(0, 1), is added to the
normalised input image; only the border trains, every model weight stays
frozen:  x ↦ f_θ0(x + v_φ),  φ = the four border strips.
p = 30 px at 224 px, scaled with the image size (4 px on rib-mini's 32 px).
"""

from dataclasses import dataclass

import torch
from torch import nn

from ribench.engine.method import Method, ParamGroup
from ribench.errors import ConfigError
from ribench.pretrains.base import Classifier


class PadPrompter(nn.Module):
    """v_φ: zero inside, learnable strips of width `pad` along each edge."""

    def __init__(self, image_size: int, pad: int):
        super().__init__()
        inner = image_size - 2 * pad
        self.pad_up = nn.Parameter(torch.randn(1, 3, pad, image_size))
        self.pad_down = nn.Parameter(torch.randn(1, 3, pad, image_size))
        self.pad_left = nn.Parameter(torch.randn(1, 3, inner, pad))
        self.pad_right = nn.Parameter(torch.randn(1, 3, inner, pad))
        self.register_buffer("base", torch.zeros(1, 3, inner, inner), persistent=False)

    def forward(self, x):
        middle = torch.cat([self.pad_left, self.base, self.pad_right], dim=3)
        prompt = torch.cat([self.pad_up, middle, self.pad_down], dim=2)
        return x + prompt


class Prompted(Classifier):
    """A classifier that sees every input through the prompter, in training and evaluation."""

    def __init__(self, classifier: Classifier, prompter: PadPrompter):
        super().__init__()
        self.classifier = classifier
        self.prompter = prompter

    @property
    def head(self):
        return self.classifier.head

    def features(self, x):
        return self.classifier.features(self.prompter(x))

    def forward(self, x):
        return self.classifier(self.prompter(x))

    def backbone_parameters(self):
        return self.classifier.backbone_parameters()

    def image_backbone(self):
        return self.classifier.image_backbone()


class VisualPrompt(Method):
    name = "vpt"
    description = "visual prompt (pad prompter): a learnable input border; the model stays frozen"
    paper = "https://arxiv.org/abs/2203.17274"

    @dataclass
    class Config:
        prompt_size: int = 30         # border width at `reference_size` px
        reference_size: int = 224

    def __init__(self, config=None):
        super().__init__(config)
        self.pad: int | None = None   # the border width at the cell's image size, set by prepare

    def prepare(self, ctx):
        image_size = int(ctx.train.images.shape[1])
        pad = max(1, round(self.config.prompt_size * image_size / self.config.reference_size))
        if 2 * pad >= image_size:
            raise ConfigError(f"vpt: a {pad}px border leaves nothing of a {image_size}px image")
        prompter = PadPrompter(image_size, pad).to(ctx.device)
        ctx.model = Prompted(ctx.model, prompter)
        self.pad = pad

    def param_groups(self, ctx):
        return [ParamGroup(list(ctx.model.prompter.parameters()), 1.0, "prompt")]
