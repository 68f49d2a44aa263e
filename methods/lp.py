"""lp: linear probing. The backbone is frozen; only the head trains.

Without augmentation this equals training a linear layer on cached features, so
features are computed once (and shared with OTDD) and the head is trained on
them. `fit=protocol` (default) follows the suite's protocol (optimizer, lr,
schedule, epochs, batch) like every other method; `fit=lbfgs` fits the probe to
convergence (L-BFGS, L2-regularised logistic regression, as LP-FT's probe).
That variant has no lr, so the tuned protocol chooses nothing for it: its L2 stays
at 1e-4 (Kumar et al. sweep it on ID validation; ribench does not, to keep one
tuned quantity per method, and lpft's lr is tuned with this probe in place).
Head-only: unlike ImageNet-RIB's reference code, the final norm, cls token and
position embedding stay frozen.

A CLIP head is s·Û with s = exp(logit_scale) fixed (ribench.pretrains.base.
LogitScaledHead): the probe trains Û, which moves under the protocol's steps on
its own unit scale (a head stored as s·Û moved by 0.02% in one rib-tiny epoch).
The L-BFGS variant penalises the logit map W = s·Û, so it is the same logistic
regression whatever the parameterisation.
"""

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ribench.engine.recipe import Recipe
from ribench.engine.method import Method, ParamGroup
from ribench.engine.trainer import build_optimizer, position_labels, steps_per_epoch


class LinearProbe(Method):
    name = "lp"
    description = "linear probe: frozen backbone, head trained on cached features"
    paper = ('J. Hwang, "ImageNet-RIB Benchmark: Large Pre-Training Datasets Don\'t Guarantee Robustness '
             'after Fine-Tuning" (MIT talk, 2025): its linear-probing baseline')
    frozen_backbone = True     # evaluated through cached test features and the trained head
    composable = False         # trains on cached features, outside the loop
    recipe = Recipe(optimizer="sgd", lr=1e-3,
                    source="ImageNet-RIB reference code: its linear probe trains under the fine-tuning SGD recipe")

    @dataclass
    class Config:
        fit: Literal["protocol", "lbfgs"] = "protocol"
        l2: float = 1e-4          # L-BFGS variant only: weight of 0.5*||W||^2
        max_iter: int = 300       # L-BFGS variant only

    @classmethod
    def tunes_nothing_with(cls, config) -> bool:
        # L-BFGS solves the regularised probe to convergence: there is no lr to choose
        return config.fit == "lbfgs"

    def fit(self, ctx):
        t0 = time.perf_counter()
        features = torch.from_numpy(ctx.train_features()).to(ctx.device)
        t1 = time.perf_counter()
        split = ctx.train
        mask = torch.as_tensor(split.class_mask, device=ctx.device)
        targets = torch.from_numpy(position_labels(split.labels, split.class_mask)).to(ctx.device)
        head = ctx.model.head
        for p in ctx.model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
        if self.config.fit == "lbfgs":
            steps = self._lbfgs(ctx.model, features, targets, mask)
        else:
            steps = self._protocol(ctx, head, features, targets, mask)
        for p in ctx.model.parameters():
            p.requires_grad_(True)
        done = time.perf_counter()
        return {"prepare_s": t1 - t0, "train_s": done - t1, "steps": steps,
                "step_s": (done - t1) / max(steps, 1)}

    def _protocol(self, ctx, head, features, targets, mask):
        protocol = ctx.protocol
        optimizer = build_optimizer(protocol, [ParamGroup(list(head.parameters()))])
        total = steps_per_epoch(len(targets), protocol.batch_size) * protocol.epochs
        order_rng = np.random.default_rng([ctx.seed, 1])     # the same batches as ft
        step = 0
        for _ in range(protocol.epochs):
            order = torch.from_numpy(order_rng.permutation(len(targets)))
            for start in range(0, len(order), protocol.batch_size):
                idx = order[start:start + protocol.batch_size]
                for group in optimizer.param_groups:
                    group["lr"] = protocol.lr * protocol.lr_factor(step, total)
                loss = F.cross_entropy(head(features[idx])[:, mask], targets[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
        return step

    def _lbfgs(self, model, features, targets, mask):
        head = model.head
        optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=self.config.max_iter,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-7)

        def closure():
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(head(features)[:, mask], targets)
            loss = loss + 0.5 * self.config.l2 * model.logit_weight().pow(2).sum()   # on W = s·Û, not Û
            loss.backward()
            return loss

        optimizer.step(closure)
        return optimizer.state[optimizer._params[0]].get("n_iter", 0)
