"""One optimizer step with a weight-space penalty folded into the same pass over flat buffers.

l2sp, ewc and imp-reg add a closed-form penalty gradient after backward:
    quadratic: g ← g + λ·w⊙(θ − θ0)      (l2sp: w = 1; ewc: w = F, the Fisher)
    sign:      g ← g + λ·w⊙sign(θ − θ0)   (imp-reg: w = r̄, the normalised importance)
then the optimizer reads θ and g again. Done apart, that is three extra passes over every weight
(θ, θ0, g) after backward; here the penalty, the momentum or Adam moments and the update are one
read of θ, g, θ0, w and the state and one write of θ and the state. The buffers are flat
(one tensor per role for all the method's weights): Triton's interpreter has no pointer tables,
and one launch covers every weight. The torch functions are the reference the kernels are tested
against and the path on CPU; they follow torch.optim.SGD (momentum, no dampening, no Nesterov)
and torch.optim.AdamW (decoupled weight decay, bias-corrected moments) exactly.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:        # optional: the torch path serves without it
    triton = None

PENALTIES = {"none": 0, "quadratic": 1, "sign": 2}
BLOCK = 1024


@torch.no_grad()
def _penalised_grad(theta, grad, anchor, weight, lam: float, penalty: str) -> torch.Tensor:
    if penalty == "none" or lam == 0:
        return grad
    pull = theta - anchor if penalty == "quadratic" else torch.sign(theta - anchor)
    return grad + lam * (pull if weight is None else weight * pull)


@torch.no_grad()
def penalised_sgd_torch(theta, grad, momentum_buffer, anchor, weight, *, lr: float, lam: float,
                        momentum: float, penalty: str, first: bool, weight_decay: float = 0.0) -> None:
    """θ and the momentum buffer updated in place (torch.optim.SGD's rule on the penalised gradient,
    weight decay added to it as SGD does)."""
    g = _penalised_grad(theta, grad, anchor, weight, lam, penalty)
    if weight_decay:
        g = g + weight_decay * theta
    if first:
        momentum_buffer.copy_(g)
    else:
        momentum_buffer.mul_(momentum).add_(g)
    theta.add_(momentum_buffer, alpha=-lr)


@torch.no_grad()
def penalised_adamw_torch(theta, grad, exp_avg, exp_avg_sq, anchor, weight, *, lr: float, lam: float,
                          betas: tuple[float, float], eps: float, weight_decay: float, step: int,
                          penalty: str) -> None:
    """θ and the moments updated in place (torch.optim.AdamW's rule on the penalised gradient);
    `step` counts from 1."""
    g = _penalised_grad(theta, grad, anchor, weight, lam, penalty)
    beta1, beta2 = betas
    theta.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    correction1, correction2 = 1 - beta1 ** step, 1 - beta2 ** step
    denominator = (exp_avg_sq.sqrt() / correction2 ** 0.5).add_(eps)
    theta.addcdiv_(exp_avg, denominator, value=-lr / correction1)


if triton is not None:
    @triton.jit
    def _penalised_gradient(theta, g, anchor_ptr, weight_ptr, offs, inside, lam,
                            PENALTY: tl.constexpr, HAS_WEIGHT: tl.constexpr):
        if PENALTY != 0:
            anchor = tl.load(anchor_ptr + offs, mask=inside, other=0.0)
            diff = theta - anchor
            if PENALTY == 1:
                pull = diff
            else:
                pull = tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0))
            if HAS_WEIGHT:
                pull = pull * tl.load(weight_ptr + offs, mask=inside, other=0.0)
            g = g + lam * pull
        return g

    @triton.jit
    def _penalised_sgd(theta_ptr, grad_ptr, buf_ptr, anchor_ptr, weight_ptr, n, lr, lam, momentum, decay,
                       FIRST: tl.constexpr, PENALTY: tl.constexpr, HAS_WEIGHT: tl.constexpr,
                       BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = offs < n
        theta = tl.load(theta_ptr + offs, mask=inside, other=0.0)
        g = tl.load(grad_ptr + offs, mask=inside, other=0.0)
        g = _penalised_gradient(theta, g, anchor_ptr, weight_ptr, offs, inside, lam, PENALTY, HAS_WEIGHT)
        g = g + decay * theta
        if FIRST:
            buf = g
        else:
            buf = momentum * tl.load(buf_ptr + offs, mask=inside, other=0.0) + g
        tl.store(buf_ptr + offs, buf, mask=inside)
        tl.store(theta_ptr + offs, theta - lr * buf, mask=inside)

    @triton.jit
    def _penalised_adamw(theta_ptr, grad_ptr, m_ptr, v_ptr, anchor_ptr, weight_ptr, n, lr, lam, beta1, beta2,
                         eps, decay, step_size, sqrt_correction2,
                         PENALTY: tl.constexpr, HAS_WEIGHT: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = offs < n
        theta = tl.load(theta_ptr + offs, mask=inside, other=0.0)
        g = tl.load(grad_ptr + offs, mask=inside, other=0.0)
        g = _penalised_gradient(theta, g, anchor_ptr, weight_ptr, offs, inside, lam, PENALTY, HAS_WEIGHT)
        theta = theta * decay
        m = beta1 * tl.load(m_ptr + offs, mask=inside, other=0.0) + (1 - beta1) * g
        v = beta2 * tl.load(v_ptr + offs, mask=inside, other=0.0) + (1 - beta2) * g * g
        tl.store(m_ptr + offs, m, mask=inside)
        tl.store(v_ptr + offs, v, mask=inside)
        tl.store(theta_ptr + offs, theta - step_size * m / (tl.sqrt(v) / sqrt_correction2 + eps), mask=inside)


def _check(*buffers) -> None:
    if triton is None:
        raise RuntimeError("triton is not installed")
    first = buffers[0]
    for b in buffers:
        if b is not None and (b.dtype != torch.float32 or not b.is_contiguous() or b.shape != first.shape
                              or b.dim() != 1):
            raise ValueError("the fused step takes flat, contiguous float32 buffers of one length")


def penalised_sgd_triton(theta, grad, momentum_buffer, anchor, weight, *, lr: float, lam: float,
                         momentum: float, penalty: str, first: bool, weight_decay: float = 0.0,
                         block: int = BLOCK) -> None:
    """`penalised_sgd_torch` as one launch."""
    _check(theta, grad, momentum_buffer, anchor, weight)
    n = theta.numel()
    code = PENALTIES[penalty] if lam != 0 else 0
    _penalised_sgd[(triton.cdiv(n, block),)](
        theta, grad, momentum_buffer, theta if anchor is None else anchor, theta if weight is None else weight,
        n, lr, lam, momentum, weight_decay, FIRST=first, PENALTY=code, HAS_WEIGHT=weight is not None, BLOCK=block)


def penalised_adamw_triton(theta, grad, exp_avg, exp_avg_sq, anchor, weight, *, lr: float, lam: float,
                           betas: tuple[float, float], eps: float, weight_decay: float, step: int,
                           penalty: str, block: int = BLOCK) -> None:
    """`penalised_adamw_torch` as one launch."""
    _check(theta, grad, exp_avg, exp_avg_sq, anchor, weight)
    n = theta.numel()
    beta1, beta2 = betas
    code = PENALTIES[penalty] if lam != 0 else 0
    _penalised_adamw[(triton.cdiv(n, block),)](
        theta, grad, exp_avg, exp_avg_sq, theta if anchor is None else anchor, theta if weight is None else weight,
        n, lr, lam, beta1, beta2, eps, 1 - lr * weight_decay, lr / (1 - beta1 ** step), (1 - beta2 ** step) ** 0.5,
        PENALTY=code, HAS_WEIGHT=weight is not None, BLOCK=block)
