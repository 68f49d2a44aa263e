"""zeroshot: no training; the pretrained model with its head. It provides A_pre.

For a CLIP pretrain the head is the zero-shot head built by the text tower from
the suite's class names and prompt templates; for a supervised pretrain it is
the pretrained classifier restricted to the suite's classes.
"""

from dataclasses import dataclass

from ribench.engine.method import Method


class ZeroShot(Method):
    name = "zeroshot"
    description = "no training: the pretrained model and its (zero-shot or restricted) head"
    paper = ('J. Hwang, "ImageNet-RIB Benchmark: Large Pre-Training Datasets Don\'t Guarantee Robustness '
             'after Fine-Tuning" (MIT talk, 2025): the pretrained model it measures robustness against')
    tunes_nothing = True      # no optimizer: the tuned and reference protocols coincide
    uses_pretrained_eval = True     # its accuracies are the pretrained evaluation
    composable = False

    @dataclass
    class Config:
        pass

    def fit(self, ctx):
        return {"prepare_s": 0.0, "train_s": 0.0, "steps": 0, "step_s": 0.0}
