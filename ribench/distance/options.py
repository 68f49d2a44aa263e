"""What defines a distance and what it is computed on, apart from the maths so that
the result record (`ribench.distance.matrix`) can name its options without importing torch."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ribench.errors import ConfigError

__all__ = ["CONVENTIONS", "SOLVERS", "DistanceOptions", "LabelledFeatures"]

SOLVERS = ("fast", "exact", "sinkhorn")
CONVENTIONS = ("otdd2", "half")


@dataclass(frozen=True)
class DistanceOptions:
    """What defines a distance; recorded with every result.

    epsilon is Sinkhorn's ε as a fraction of the median ground cost of the pair,
    so a distance does not depend on the features' units (OTDD.md: ε relative to
    the cost scale); the absolute value used is recorded per pair. tolerance is the
    fast solver's certified bound on the relative error of each value.
    """

    solver: str = "fast"
    samples: int | None = 2000          # points per dataset, stratified by class; None or 0: all
    epsilon: float = 0.01
    lambda_x: float = 1.0
    lambda_y: float = 1.0
    seed: int = 0
    convention: str = "otdd2"           # "half": the reference implementation's half-cost number
    max_iterations: int | None = None   # None: the solver's default (ribench.distance.solvers)
    tolerance: float = 1e-3             # fast solver: |value − OTDD²| ≤ tolerance·OTDD², certified

    def validate(self) -> "DistanceOptions":
        if self.solver not in SOLVERS:
            raise ConfigError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")
        if self.convention not in CONVENTIONS:
            raise ConfigError(f"unknown convention {self.convention!r}; choose one of {', '.join(CONVENTIONS)}")
        if self.samples is not None and self.samples < 0:
            raise ConfigError(f"samples must be positive (0 means all points), got {self.samples}")
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ConfigError(f"epsilon must be a positive fraction of the median cost, got {self.epsilon}")
        for name in ("lambda_x", "lambda_y"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be non-negative, got {value}")
        if self.lambda_x == 0 and self.lambda_y == 0:
            raise ConfigError("lambda_x and lambda_y are both 0: the ground cost would be 0")
        if not (0 < self.tolerance < 1):
            raise ConfigError(f"tolerance must lie between 0 and 1 (a relative error), got {self.tolerance}")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise ConfigError(f"max_iterations must be at least 1, got {self.max_iterations}")
        return self

    @property
    def quantity(self) -> str:
        kind = {"exact": "exact OT", "fast": f"OT within {self.tolerance:g} (certified auction)",
                "sinkhorn": "debiased Sinkhorn divergence"}[self.solver]
        if self.convention == "half":
            return f"OTDD² / 2 ({kind}, half ground cost as in microsoft/otdd)"
        return f"OTDD² ({kind}, full ground cost)"

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "samples": self.samples or None, "quantity": self.quantity}


@dataclass(frozen=True, eq=False)
class LabelledFeatures:
    """A dataset as points in feature space with their labels."""

    name: str
    features: np.ndarray    # (n, d)
    labels: np.ndarray      # (n,) integer class ids, any values

    def digest(self) -> str:
        """Content hash: identical data subsamples identically, whatever its name or position."""
        h = hashlib.sha256(np.ascontiguousarray(self.features).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()
