"""vpt: visual prompting with a pad prompter (Bahng et al., 2022).

Bahng et al. "learn a single image perturbation such that a frozen model prompted
with this perturbation performs a new task": a learnable border of width p is
added to the normalised input image; only the border trains, every model weight
stays frozen:  x ↦ f_θ0(x + v_φ),  φ = the four border strips.
p = 30 px at 224 px (the paper's padding prompt), scaled with the image size
(4 px on rib-mini's 32 px).

Its own lr regime: a prompt lives in normalised-pixel units and its gradients
are those of the loss with respect to the input, so the authors train it with
SGD at lr 40, momentum 0.9, weight decay 0 (main_clip.py defaults, with 1000
warm-up steps, cosine decay, batch 256, 1000 epochs): the recipe below. Under
the suite's SGD at 1e-3 a border barely moves.

Initialisation: the paper states none; the authors' code draws φ from N(0, 1),
and so did ImageNet-RIB, whose stored row (SGD at 1e-3) measured that untrained
noise border. ribench starts from φ = 0 (`init=zeros`): the prompted model is
then exactly the pretrained model at step 0, as LoRA's B = 0 makes it, so the
row measures what the prompt learned and nothing else; the gradient at φ = 0 is
the input gradient on the border pixels, which is not zero, and each pixel is
its own parameter, so there is no symmetry for noise to break. After the
paper's 1000 epochs the start is forgotten; after a suite's 10 it is not.
`init=normal` is the authors' N(0, 1).
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ribench.engine.method import Method, ParamGroup
from ribench.engine.recipe import Recipe
from ribench.errors import ConfigError
from ribench.pretrains.base import Classifier


class PadPrompter(nn.Module):
    """v_φ: zero inside, learnable strips of width `pad` along each edge (zeros, or N(0, 1) with init="normal")."""

    def __init__(self, image_size: int, pad: int, init: str = "zeros"):
        super().__init__()
        inner = image_size - 2 * pad
        draw = torch.randn if init == "normal" else torch.zeros
        self.pad_up = nn.Parameter(draw(1, 3, pad, image_size))
        self.pad_down = nn.Parameter(draw(1, 3, pad, image_size))
        self.pad_left = nn.Parameter(draw(1, 3, inner, pad))
        self.pad_right = nn.Parameter(draw(1, 3, inner, pad))
        self.register_buffer("base", torch.zeros(1, 3, inner, inner), persistent=False)

    def forward(self, x):
        middle = torch.cat([self.pad_left, self.base, self.pad_right], dim=3)
        prompt = torch.cat([self.pad_up, middle, self.pad_down], dim=2)
        return x + prompt                              # x + v_φ


class Prompted(Classifier):
    """A classifier that sees every input through the prompter, in training and evaluation."""

    def __init__(self, classifier: Classifier, prompter: PadPrompter):
        super().__init__()
        self.classifier = classifier
        self.prompter = prompter

    @property
    def head(self):
        return self.classifier.head

    @property
    def head_parameterisation(self):
        return self.classifier.head_parameterisation

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
    recipe = Recipe(optimizer="sgd", lr=40.0, weight_decay=0.0, momentum=0.9,
                    source="Bahng et al. 2022, the authors' main_clip.py defaults: SGD lr 40, momentum 0.9, "
                           "weight decay 0, 1000 warm-up steps then cosine, batch 256, 1000 epochs")

    @dataclass
    class Config:
        prompt_size: int = 30         # border width at `reference_size` px (the paper's padding prompt)
        reference_size: int = 224
        init: Literal["zeros", "normal"] = "zeros"    # normal: the authors' N(0, 1)

    def __init__(self, config=None):
        super().__init__(config)
        self.pad: int | None = None   # the border width at the cell's image size, set by prepare

    def prepare(self, ctx):
        image_size = int(ctx.train.images.shape[1])
        pad = max(1, round(self.config.prompt_size * image_size / self.config.reference_size))
        if 2 * pad >= image_size:
            raise ConfigError(f"vpt: a {pad}px border leaves nothing of a {image_size}px image")
        prompter = PadPrompter(image_size, pad, self.config.init).to(ctx.device)
        ctx.model = Prompted(ctx.model, prompter)
        self.pad = pad

    def param_groups(self, ctx):
        return [ParamGroup(list(ctx.model.prompter.parameters()), 1.0, "prompt")]
