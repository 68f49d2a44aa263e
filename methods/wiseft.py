"""wiseft: weight-space ensembling of zero-shot and fine-tuned models (Wortsman et al., CVPR 2022).

    θ_α = (1 − α)·θ0 + α·θ_ft                      (paper Eq. 1, head included)

No training: θ_ft is the stored result of the `ft` cell with the same suite,
pretrain, protocol, dataset and seed (`base` names another method, e.g.
`flyp`), so an α sweep costs only evaluations. α = 0 is θ0, α = 1 is θ_ft.
"""

import time
from dataclasses import dataclass

from ribench.errors import ConfigError
from ribench.engine.method import Method
from ribench.toolkit.weights import full_state, weighted_average


class WiSEFT(Method):
    name = "wiseft"
    description = "WiSE-FT: (1 − α)·θ0 + α·θ_ft from the stored ft cell; no training"
    paper = "https://arxiv.org/abs/2109.01903"
    tunes_nothing = True      # no optimizer: the tuned and reference protocols coincide
    composable = False

    @dataclass
    class Config:
        alpha: float = 0.5
        base: str = "ft"

    def __init__(self, config=None):
        super().__init__(config)
        if not 0.0 <= self.config.alpha <= 1.0:
            raise ConfigError(f"bad value for alpha: {self.config.alpha} (must be in [0, 1])")

    def ingredients(self):
        return [self.config.base]

    def fit(self, ctx):
        t0 = time.perf_counter()
        theta0 = full_state(ctx.pretrained, {})
        theta_ft = full_state(ctx.pretrained, ctx.ingredients[self.config.base])
        alpha = self.config.alpha
        ctx.model.load_state_dict(weighted_average([theta0, theta_ft], [1.0 - alpha, alpha]))
        return {"prepare_s": time.perf_counter() - t0, "train_s": 0.0, "steps": 0, "step_s": 0.0}
