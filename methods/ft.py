"""ft: full fine-tuning. Every weight of the image classifier trains on cross-entropy.

The loop, optimizer and schedule are the suite's protocol (ImageNet-RIB: SGD,
momentum 0.9, warm-up then cosine); ft adds nothing to them.
"""

from dataclasses import dataclass

from ribench.engine.method import Method
from ribench.engine.recipe import Recipe


class FineTune(Method):
    name = "ft"
    description = "full fine-tuning: all image-classifier weights, cross-entropy"
    paper = ('J. Hwang, "ImageNet-RIB Benchmark: Large Pre-Training Datasets Don\'t Guarantee Robustness '
             'after Fine-Tuning" (MIT talk, 2025): its fine-tuning baseline')
    recipe = Recipe(optimizer="sgd", lr=1e-3, source="ImageNet-RIB reference code (Hwang et al.): SGD, momentum 0.9, lr 1e-3, no weight decay")

    @dataclass
    class Config:
        pass
