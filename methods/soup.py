"""soup: a uniform model soup (Wortsman et al., ICML 2022), as ImageNet-RIB uses it.

    θ = (1/K)·Σ_k θ_k,   ingredients θ_k: pretrained, ft, ewc, lwf by default

Each ingredient is the stored result of its cell with the same suite,
pretrain, protocol, dataset and seed; nothing trains. A soup of one
ingredient is that ingredient. (The greedy soup is not offered: it would
need a held-out part of the downstream train split the ingredients were not
trained on.)
"""

import time
from dataclasses import dataclass

from ribench.engine.settings import split_top_level
from ribench.errors import ConfigError
from ribench.engine.method import Method
from ribench.toolkit.weights import full_state, weighted_average


class Soup(Method):
    name = "soup"
    description = "uniform model soup of the pretrained, ft, ewc and lwf weights; no training"
    paper = "https://arxiv.org/abs/2203.05482"
    tunes_nothing = True      # no optimizer: the tuned and reference protocols coincide
    composable = False

    @dataclass
    class Config:
        ingredients: str = "pretrained,ft,ewc,lwf"

    def __init__(self, config=None):
        super().__init__(config)
        if not split_top_level(self.config.ingredients):
            raise ConfigError("soup: no ingredients given")

    def ingredients(self):
        return split_top_level(self.config.ingredients)

    def fit(self, ctx):
        t0 = time.perf_counter()
        states = [full_state(ctx.pretrained, {} if name == "pretrained" else ctx.ingredients[name])
                  for name in self.ingredients()]
        k = len(states)
        ctx.model.load_state_dict(weighted_average(states, [1.0 / k] * k))
        return {"prepare_s": time.perf_counter() - t0, "train_s": 0.0, "steps": 0, "step_s": 0.0}
