"""A method's recipe: how its paper trains it, which the `tuned` protocol follows.

One learning rate cannot serve parameters that live on scales 10²–10⁴ apart (a
prompt in pixel units, adapters scaled by α/r, a 0.1% mask, a whole network), and
the papers train them with different optimizers. So each trained method declares
its paper's optimizer, weight decay and learning rate here, next to its Config,
with the source; the suite keeps epochs, batch size, schedule and warm-up. Under
`tuned`, the one quantity in `tune` is chosen per (method, pretrain) from a grid
of GRID_SIZE log-spaced values around the recipe's value, by mean ID accuracy on
held-out parts of the downstream *train* splits (ribench.run.selection).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ribench.engine.protocol import Protocol

GRID_SIZE = 5            # the same for every method
# The grid spans the recipe's value × 10^(±2), a decade apart: the papers' values come from ViT-B/16 at
# 224 px and many steps, and on a small suite's small models the best value may sit a decade or more away
# (ft under AdamW learns at 1e-4 on rib-mini, FLYP's recipe says 1e-5).
GRID_DECADES = 4.0
OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class Recipe:
    optimizer: str                   # "sgd" (with momentum) or "adamw" (Adam is AdamW at weight_decay 0)
    lr: float                        # the paper's learning rate: the centre of the lr grid
    weight_decay: float = 0.0
    momentum: float = 0.9            # SGD only
    source: str = ""                 # where the paper states it
    tune: str = "lr"                 # what selection chooses: "lr", or the method's defining strength
    centre: float | None = None      # the strength's centre when `tune` is not "lr"
    lr_from: str | None = None       # a strength-tuned method trains at this method's chosen lr

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"recipe optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.tune != "lr" and self.centre is None:
            raise ValueError(f"a recipe that tunes {self.tune!r} needs its centre")

    def grid(self) -> list[float]:
        """GRID_SIZE log-spaced values of the tuned quantity around its centre (3 significant digits)."""
        centre = self.lr if self.tune == "lr" else self.centre
        steps = [GRID_DECADES * (i / (GRID_SIZE - 1) - 0.5) for i in range(GRID_SIZE)]
        return [float(f"{centre * 10 ** step:.3g}") for step in steps]

    def protocol(self, suite_protocol: Protocol, lr: float | None = None) -> Protocol:
        """The suite's protocol with this recipe's optimizer, weight decay and `lr` (default: the recipe's)."""
        return dataclasses.replace(suite_protocol, optimizer=self.optimizer, lr=self.lr if lr is None else lr,
                                   weight_decay=self.weight_decay, momentum=self.momentum)

    def describe(self) -> str:
        extra = f", momentum {self.momentum:g}" if self.optimizer == "sgd" else ""
        tuned = "lr" if self.tune == "lr" else f"{self.tune} (centre {self.centre:g})"
        if self.lr_from:
            tuned += f" at {self.lr_from}'s chosen lr"
        return (f"{self.optimizer} lr {self.lr:g}, weight decay {self.weight_decay:g}{extra}; tunes {tuned}"
                + (f" — {self.source}" if self.source else ""))
