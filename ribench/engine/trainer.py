"""The one training loop every method runs through, driven by the suite's protocol."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ribench.engine.evaluate import autocast
from ribench.engine.context import Batch, FitContext
from ribench.kernels.flat import FlatWeights
from ribench.kernels.fused_optimizer import FusedPenalisedOptimizer


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


def optimizer_groups(protocol, groups) -> list[dict]:
    return [{"params": g.params, "lr": protocol.lr * g.lr_scale, "lr_scale": g.lr_scale, "name": g.name}
            for g in groups if g.params]


def build_optimizer(protocol, groups):
    """SGD (momentum) or AdamW over the method's parameter groups, lr scaled per group."""
    torch_groups = optimizer_groups(protocol, groups)
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


def flat_layout(method, ctx: FitContext, groups, needs_grad):
    """The trained weights in group order, if the step can run over them as one flat buffer: with
    `--kernels triton`, for a method with a weight penalty to fold into the step or a kernel path
    over flat weights, when every trained weight is a float32 model weight of the optimizer (no
    stand-ins) and a penalty covers only those. None: the torch optimizer and hooks."""
    if ctx.kernels != "triton" or needs_grad is not None:
        return None
    penalty = method.weight_penalty(ctx)
    if penalty is None and not method.works_on_flat_weights(ctx):
        return None
    params = [p for g in groups for p in g.params]
    ids = {id(p) for p in params}
    if (len(ids) != len(params) or any(p.dtype != torch.float32 or p.device != params[0].device for p in params)
            or (penalty is not None and not {id(p) for p in penalty.params} <= ids)):
        return None
    return params


def start_training(method, ctx: FitContext):
    """Let the method prepare and choose its parameters; returns the optimizer over them."""
    method.prepare(ctx)
    groups = method.param_groups(ctx)
    needs_grad = method.gradient_parameters(ctx, groups)
    trainable = {id(p) for p in needs_grad} if needs_grad is not None else {id(p) for g in groups for p in g.params}
    for p in ctx.model.parameters():
        p.requires_grad_(id(p) in trainable)
    ctx.model.train()
    flat = flat_layout(method, ctx, groups, needs_grad)
    if flat is None:
        ctx.optimizer = build_optimizer(ctx.protocol, groups)
    else:   # one fused launch per group over flat weights, the penalty (if any) folded in
        ctx.flat = FlatWeights(flat)
        ctx.optimizer = FusedPenalisedOptimizer(ctx.flat, optimizer_groups(ctx.protocol, groups), ctx.protocol,
                                                method.weight_penalty(ctx))
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
    ctx.model.zero_grad(set_to_none=True)     # weights outside the optimizer may carry gradients too
    optimizer.zero_grad(set_to_none=True)     # after the model's: a flat step points .grad at its buffer
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
    if ctx.flat is not None:
        ctx.flat.release()
        ctx.flat = None
    method.finish(ctx)
    ctx.model.eval()
    done = time.perf_counter()
    return {"prepare_s": t_prepared - t0, "train_s": done - t_prepared, "steps": ctx.step,
            "step_s": (done - t_prepared) / max(ctx.step, 1)}
