"""lpft: linear probe, then fine-tune (Kumar et al., ICLR 2022).

Stage 1 is the `lp[fit=lbfgs]` cell of the same suite, pretrain, dataset and
seed (a probe fitted to convergence, as the paper's logistic-regression
probe); its stored head is reused, not fitted again. Stage 2 is `ft` from
that head under the suite's protocol.
"""

from dataclasses import dataclass

from ribench.engine.method import Method
from ribench.engine.recipe import Recipe
from ribench.toolkit.weights import load_changed


class LPFT(Method):
    name = "lpft"
    description = "LP-FT: fine-tune everything starting from the converged linear probe's head"
    paper = "https://arxiv.org/abs/2202.10054"
    recipe = Recipe(optimizer="sgd", lr=1e-3, source="Kumar et al. 2022: SGD with momentum, lr swept on ID validation; centred on ImageNet-RIB's 1e-3")

    @dataclass
    class Config:
        probe: str = "lp[fit=lbfgs]"

    def ingredients(self):
        return [self.config.probe]

    def prepare(self, ctx):
        load_changed(ctx.model, ctx.ingredients[self.config.probe])
