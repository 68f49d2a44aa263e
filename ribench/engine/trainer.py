"""The one training loop every method runs through, driven by the suite's protocol."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ribench.engine.evaluate import autocast
from ribench.engine.context import Batch, FitContext


class Diverged(Exception):
    """Training left finite numbers: the loss, or a weight, became NaN or infinite.

    `step` is the optimizer step (counted from 0) at which it was seen; `what` is 'loss' or 'weights'.
    A diverged cell is stored as failed, never as a result."""

    def __init__(self, step: int, what: str, detail: str = ""):
        self.step, self.what, self.detail = step, what, detail
        super().__init__(f"{what} became non-finite at step {step}" + (f" ({detail})" if detail else ""))


def non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the model's parameters holding a NaN or an infinity (buffers may hold -inf by design:
    an attention mask)."""
    return [name for name, t in model.named_parameters()
            if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all())]


def check_finite_weights(model: torch.nn.Module, step: int) -> None:
    """Raise Diverged when a fitted model holds NaN or inf (a method may diverge without a loss we see)."""
    bad = non_finite_tensors(model)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise Diverged(step, "weights", f"{bad[0]}{more}")


def build_optimizer(protocol, groups):
    """SGD (momentum) or AdamW over the method's parameter groups, lr scaled per group."""
    torch_groups = [
        {"params": g.params, "lr": protocol.lr * g.lr_scale, "lr_scale": g.lr_scale, "name": g.name}
        for g in groups if g.params
    ]
    fused = {"fused": True} if protocol.fused else {}
    if protocol.optimizer == "sgd":
        return torch.optim.SGD(torch_groups, lr=protocol.lr, momentum=protocol.momentum,
                               weight_decay=protocol.weight_decay, **fused)
    return torch.optim.AdamW(torch_groups, lr=protocol.lr, weight_decay=protocol.weight_decay, **fused)


def position_labels(labels: np.ndarray, class_mask: np.ndarray) -> np.ndarray:
    """Suite class indices -> positions within the dataset's class mask."""
    lookup = np.full(int(class_mask.max()) + 1, -1)
    lookup[class_mask] = np.arange(len(class_mask))
    return lookup[labels]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def start_training(method, ctx: FitContext):
    """Let the method prepare and choose its parameters; returns the optimizer over them."""
    method.prepare(ctx)
    groups = method.param_groups(ctx)
    needs_grad = method.gradient_parameters(ctx, groups)
    trainable = {id(p) for p in needs_grad} if needs_grad is not None else {id(p) for g in groups for p in g.params}
    for p in ctx.model.parameters():
        p.requires_grad_(id(p) in trainable)
    ctx.model.train()
    ctx.optimizer = build_optimizer(ctx.protocol, groups)
    return ctx.optimizer


def training_step(method, ctx: FitContext, optimizer, x, y, class_mask, indices=None) -> torch.Tensor:
    """One optimizer step with the method's hooks around it.

    The lr of each group is set after `after_backward`, from the protocol's schedule
    times the group's `lr_scale`, so a method may change `lr_scale` from the
    current gradient (per-step layer-wise rates).
    """
    with autocast(ctx.device):
        loss = method.compute_loss(ctx, Batch(x, y, class_mask, ctx.model, indices))
    if not bool(torch.isfinite(loss.detach()).all()):
        raise Diverged(ctx.step, "loss", f"loss {float(loss.detach().float().mean())}")
    optimizer.zero_grad(set_to_none=True)
    ctx.model.zero_grad(set_to_none=True)     # weights outside the optimizer may carry gradients too
    loss.backward()
    method.after_backward(ctx)
    factor = ctx.protocol.lr_factor(ctx.step, max(ctx.total_steps, ctx.step + 1))
    for group in optimizer.param_groups:
        group["lr"] = ctx.protocol.lr * group["lr_scale"] * factor
    optimizer.step()
    method.after_step(ctx)
    ctx.step += 1
    return loss


def train(method, ctx: FitContext) -> dict:
    """Fine-tune ctx.model on ctx.train with the method's hooks; returns timings."""
    t0 = time.perf_counter()
    optimizer = start_training(method, ctx)
    t_prepared = time.perf_counter()
    protocol, split = ctx.protocol, ctx.train
    mask = torch.as_tensor(split.class_mask, device=ctx.device)
    targets = position_labels(split.labels, split.class_mask)
    per_epoch = steps_per_epoch(len(split), protocol.batch_size)
    ctx.total_steps = per_epoch * protocol.epochs
    order_rng = np.random.default_rng([ctx.seed, 1])
    for epoch in range(protocol.epochs):
        for x, _, idx in split.model_inputs(protocol.batch_size, ctx.preprocess, ctx.device,
                                            order_rng.permutation(len(split))):
            y = torch.from_numpy(targets[idx]).to(ctx.device)
            training_step(method, ctx, optimizer, x, y, mask, idx)
    method.finish(ctx)
    ctx.model.eval()
    done = time.perf_counter()
    return {"prepare_s": t_prepared - t0, "train_s": done - t_prepared, "steps": ctx.step,
            "step_s": (done - t_prepared) / max(ctx.step, 1)}
