"""imp-select: importance-guided selective fine-tuning (Li et al., ECCV 2024, Algorithm 1).

    r_i = (1/n_t)·Σ_j |g_i(x_j)|                                   (Eq. 4, at θ0)
    w_{t+1}^i = w_t^i − η·m^i·g^i,  m^i = 1 iff w^i ∈ T_ID           (Eqs. 5-6)

T_ID is the top k% of the image classifier's weights by r, ranked all at
once over backbone and head; every other weight stays at θ0. k = 10%: the paper
gives no k for Algorithm 1; 10% is the fraction its Fig. 1 trains at random
for comparison, and METHODS.md's default. Importance and its choices (one scalar weight
per "neuron", per-sample gradients, CE or label-free entropy) are those of
`ribench.methods._importance`.

- The mask has ⌊kD⌋ entries; ties are broken as in `saft`: a stable sort by
  (−r, position in the image classifier's tensors laid end to end).
- Eq. 5 is plain SGD; the suite's protocol optimizer runs instead, on the masked
  entries only (`ribench.toolkit.sparse`): no momentum, weight decay or Adam moment ever
  touches an unmasked weight, and only the masked entries hold optimizer state.
  k = 1 is `ft`, bit for bit.
- `reverse=true` trains the k% *least* important weights (the paper's "reversed
  importance guidance" in Fig. 2); `estimate=entropy` ranks by the label-free
  importance (Table 4 row #6, there measured for the regularizer).
"""

from __future__ import annotations

from dataclasses import dataclass

from ribench.errors import ConfigError
from ribench.engine.recipe import Recipe
from ribench.methods._importance import Estimate, importance
from ribench.toolkit.sparse import MaskedFineTune, mask_size


class ImportanceSelect(MaskedFineTune):
    name = "imp-select"
    description = "importance-guided selective fine-tuning: train the top-k% weights by mean |per-sample grad|"
    paper = "https://ecva.net/papers/eccv_2024/papers_ECCV/html/8486_ECCV_2024_paper.php"
    recipe = Recipe(optimizer="adamw", lr=1e-5, weight_decay=0.1, source="Li et al. 2024 (ECCV), Sec. 5: AdamW, lr 1e-5, wd 0.1, as FLYP")

    @dataclass
    class Config:
        k: float = 0.1                 # fraction of the image classifier's weights trained
        estimate: Estimate = "ce"      # importance from cross-entropy, or label-free prediction entropy
        reverse: bool = False          # train the least important k% instead (ablation)
        samples: int = 0               # 0: r over the whole downstream train split

    def __init__(self, config=None):
        super().__init__(config)
        if not 0.0 <= self.config.k <= 1.0:
            raise ConfigError(f"bad value for k: {self.config.k} (a fraction in [0, 1])")
        self.select_largest = not self.config.reverse

    def scores(self, ctx):
        return importance(ctx, self.config.estimate, self.config.samples or None)     # Eq. 4

    def mask_count(self, total):
        return mask_size(self.config.k, total)
