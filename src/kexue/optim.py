r"""AdaX and the moving-average view of adaptive optimizers.

Derived in `notebooks/04_adax.py` (chapter 04; seed article kexue.fm/archives/7387).

AdaX (Li et al., 2020, arXiv:2004.09740), with $t$ counted from 1:

$$m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\qquad
  v_t = (1+\beta_2) v_{t-1} + \beta_2 g_t^2,$$
$$\theta_t = \theta_{t-1} - \alpha\,\sqrt{(1+\beta_2)^t - 1}\;\frac{m_t}{\sqrt{v_t} + \epsilon}.$$

$v_t$ itself grows like $(1+\beta_2)^t$ and overflows float32 (and float64) long
before $t = 10^8$, so the optimizer stores the normalised second moment
$\hat v_t = v_t / c_t$ with $c_t = (1+\beta_2)^t - 1$ instead. Section 2 of the
notebook shows that $\hat v_t$ is a moving average,

$$\hat v_t = \hat\beta_{2,t}\,\hat v_{t-1} + (1-\hat\beta_{2,t})\,g_t^2,\qquad
  \hat\beta_{2,t} = 1 - \beta_2 / c_t,$$

and that the update becomes $\alpha\,m_t / (\sqrt{\hat v_t} + \epsilon/\sqrt{c_t})$:
the same numbers, no overflow.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import torch
from torch.optim import Optimizer

from .config import param

__all__ = [
    "AdaX",
    "AdaxParams",
    "EMAAdam",
    "adax_log_c",
    "beta2_hat_adam",
    "beta2_hat_adax",
    "beta2_hat_adafactor",
    "recovery_steps",
    "scale_shift_quadratic",
]


# --- coefficient schedules of the moving-average form (notebook section 3) ---

def adax_log_c(t: float, beta2: float) -> float:
    r"""$\log c_t = \log((1+\beta_2)^t - 1)$, computed without overflow for any $t \ge 1$."""
    a = t * math.log1p(beta2)  # log (1+b2)^t
    # log(e^a - 1) = a + log(1 - e^-a); expm1 keeps precision when a is small.
    return math.log(math.expm1(a)) if a < 30.0 else a + math.log1p(-math.exp(-a))


def beta2_hat_adam(t: float, beta2: float = 0.999) -> float:
    r"""Adam's effective EMA coefficient $\beta_2 (1-\beta_2^{t-1}) / (1-\beta_2^t)$ (notebook 3.1)."""
    return beta2 * (-math.expm1((t - 1) * math.log(beta2))) / (-math.expm1(t * math.log(beta2)))


def beta2_hat_adax(t: float, beta2: float = 1e-4) -> float:
    r"""AdaX's effective EMA coefficient $1 - \beta_2 / ((1+\beta_2)^t - 1)$ (notebook 3.2)."""
    return 1.0 - math.exp(math.log(beta2) - adax_log_c(t, beta2))


def beta2_hat_adafactor(t: float, c: float = 0.8) -> float:
    r"""AdaFactor's coefficient $1 - t^{-c}$ (Shazeer & Stern, 2018; notebook 3.3)."""
    return 1.0 - t ** (-c)


def _check(name: str, value: float, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"invalid {name}={value!r}: must be {rule}")


class AdaX(Optimizer):
    r"""AdaX, and AdaX-W with `decoupled_weight_decay=True`.

    Per parameter, step $t$ from 1 (DESIGN.md contract):
    `m = b1*m + (1-b1)*g`; `v = (1+b2)*v + b2*g*g`;
    `p -= lr * sqrt((1+b2)**t - 1) * m / (sqrt(v) + eps)`.
    Weight decay: coupled adds `wd*p` to `g` first (AdaX); decoupled multiplies
    `p` by `1 - lr*wd` first (AdaX-W, as AdamW does).

    State per parameter: `step` (int), `exp_avg` ($m_t$) and `exp_avg_sq_hat`
    ($\hat v_t = v_t/c_t$, bounded by the largest $g^2$ seen, so finite for
    any $t$).

    `foreach`: `True` updates all parameters that share a step count, device and
    dtype with one `torch._foreach_*` call per operation (fewest kernel launches:
    best on a GPU); `False` goes tensor by tensor. `None` (default) is `True` on
    CUDA and, on a CPU, foreach over chunks of at most `CPU_CHUNK` elements:
    small tensors share a call, and a chunk stays in cache across the six
    operations (`benchmarks/adax_step_time.py`: about 2x faster than one
    foreach call over 10M parameters on 2 cores).
    """

    CPU_CHUNK = 1 << 18   # elements (1 MiB of float32)

    def __init__(self, params, lr: float = 1.5e-3, betas: tuple[float, float] = (0.9, 1e-4),
                 eps: float = 1e-12, weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                 foreach: bool | None = None):
        lr = float(lr)
        _check("lr", lr, math.isfinite(lr) and lr >= 0.0, "a finite number >= 0")
        if len(betas) != 2:
            raise ValueError(f"invalid betas={betas!r}: must be a pair (beta1, beta2)")
        b1, b2 = float(betas[0]), float(betas[1])
        _check("betas[0]", b1, 0.0 <= b1 < 1.0, "in [0, 1)")
        # b2 = 0 would make c_t = 0 (0/0 in the update); b2 >= 1 is no longer a small rate.
        _check("betas[1]", b2, 0.0 < b2 < 1.0, "in (0, 1)")
        eps = float(eps)
        _check("eps", eps, math.isfinite(eps) and eps >= 0.0, "a finite number >= 0")
        weight_decay = float(weight_decay)
        _check("weight_decay", weight_decay, math.isfinite(weight_decay) and weight_decay >= 0.0,
               "a finite number >= 0")
        defaults = dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=bool(decoupled_weight_decay), foreach=foreach)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        wd, decoupled = group["weight_decay"], group["decoupled_weight_decay"]
        # Parameters with the same (step, device, dtype) are updated by one foreach call each.
        buckets: dict[tuple, list[torch.Tensor]] = defaultdict(list)
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("AdaX does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq_hat"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            buckets[(state["step"], p.device, p.dtype)].append(p)

        for (t, device, dtype), bucket in buckets.items():
            for params in self._chunks(bucket, group["foreach"], device):
                self._update(params, t, dtype, lr, b1, b2, eps, wd, decoupled)

    def _chunks(self, params: list[torch.Tensor], foreach: bool | None, device: torch.device):
        if foreach is False:
            return [[p] for p in params]
        if foreach is True or device.type == "cuda":
            return [params]
        chunks, size = [[]], 0
        for p in params:
            if chunks[-1] and size + p.numel() > self.CPU_CHUNK:
                chunks.append([])
                size = 0
            chunks[-1].append(p)
            size += p.numel()
        return chunks

    def _update(self, params: list[torch.Tensor], t: int, dtype: torch.dtype, lr: float, b1: float,
                b2: float, eps: float, wd: float, decoupled: bool) -> None:
        """One AdaX step of `params` (all at step `t`), written with foreach ops."""
        grads = [p.grad for p in params]
        m = [self.state[p]["exp_avg"] for p in params]
        v_hat = [self.state[p]["exp_avg_sq_hat"] for p in params]
        if wd != 0.0:
            if decoupled:                      # AdaX-W: p <- (1 - lr*wd) p
                torch._foreach_mul_(params, 1.0 - lr * wd)
            else:                              # AdaX: g <- g + wd*p (p.grad is left untouched)
                grads = torch._foreach_add(grads, params, alpha=wd)
        log_c = adax_log_c(t, b2)
        w = math.exp(math.log(b2) - log_c)     # 1 - beta2_hat_t = b2 / c_t, in (0, 1]
        # eps/sqrt(c_t) underflows to 0 for huge t; a floor of `tiny` keeps 0/0 -> 0
        # for parameters whose gradient has always been zero.
        eps_t = max(eps * math.exp(-0.5 * log_c), torch.finfo(dtype).tiny)

        torch._foreach_lerp_(m, grads, 1.0 - b1)           # m = b1 m + (1-b1) g
        torch._foreach_mul_(v_hat, 1.0 - w)                # v_hat = (1-w) v_hat + w g^2
        torch._foreach_addcmul_(v_hat, grads, grads, value=w)
        denom = torch._foreach_sqrt(v_hat)
        torch._foreach_add_(denom, eps_t)
        torch._foreach_addcdiv_(params, m, denom, value=-lr)


class EMAAdam(Optimizer):
    r"""Adam written in the moving-average form of notebook section 3, with any schedule.

    `v_hat = b2hat(t) * v_hat + (1 - b2hat(t)) * g^2`, `p -= lr * m_hat / (sqrt(v_hat) + eps)`,
    with `m_hat = m / (1 - b1^t)` when `momentum_bias_correction` (Adam) or `m` (AdaX).

    `beta2_hat=beta2_hat_adam` with correction is Adam; `beta2_hat_adax` without it
    is AdaX up to where eps sits; `beta2_hat_adafactor` gives AdaFactor's schedule
    on an otherwise Adam-like update. A plain per-tensor loop: a reference, not fast.
    """

    def __init__(self, params, lr: float = 1e-3, beta1: float = 0.9,
                 beta2_hat: Callable[[int], float] = beta2_hat_adam, eps: float = 1e-8,
                 momentum_bias_correction: bool = True):
        _check("lr", lr, math.isfinite(lr) and lr >= 0.0, "a finite number >= 0")
        _check("beta1", beta1, 0.0 <= beta1 < 1.0, "in [0, 1)")
        _check("eps", eps, math.isfinite(eps) and eps >= 0.0, "a finite number >= 0")
        super().__init__(params, dict(lr=lr, beta1=beta1, eps=eps))
        self.beta2_hat = beta2_hat
        self.momentum_bias_correction = momentum_bias_correction

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq_hat"] = torch.zeros_like(p)
                state["step"] += 1
                t, g = state["step"], p.grad
                b = self.beta2_hat(t)
                state["exp_avg"].lerp_(g, 1.0 - group["beta1"])
                state["exp_avg_sq_hat"].mul_(b).addcmul_(g, g, value=1.0 - b)
                m_hat = state["exp_avg"]
                if self.momentum_bias_correction:
                    m_hat = m_hat / (1.0 - group["beta1"] ** t)
                p.addcdiv_(m_hat, state["exp_avg_sq_hat"].sqrt().add_(group["eps"]), value=-group["lr"])
        return loss


# --- a controlled problem for "long-term memory" (notebook section 5) ---

def scale_shift_quadratic(make_optimizer: Callable[[list], Optimizer], steps: int, factor: float,
                          dim: int = 256, noise: float = 1.0, seed: int = 0) -> dict[str, torch.Tensor]:
    r"""A noisy quadratic whose gradient scale jumps by `factor` half-way through.

    $f(\theta) = \tfrac12 \sum_i h_i \theta_i^2$ with $h_i$ log-spaced in $[10^{-2}, 1]$;
    the optimizer sees $g = s_t\,(h \odot \theta + \text{noise}\cdot\xi)$, $\xi \sim N(0, I)$,
    with $s_t = 1$ for the first half and `factor` after. A scale-free method
    takes the same steps before and after; one that remembers the old gradient
    scale takes steps `factor` times too large (or small) until it forgets.

    Returns per-step `update_norm` (RMS of $\Delta\theta$) and `loss` ($f$, unscaled).
    """
    g = torch.Generator().manual_seed(seed)
    h = torch.logspace(-2, 0, dim, dtype=torch.float64)
    theta = torch.nn.Parameter(torch.randn(dim, generator=g, dtype=torch.float64))
    opt = make_optimizer([theta])
    update_norm = torch.empty(steps, dtype=torch.float64)
    loss = torch.empty(steps, dtype=torch.float64)
    for t in range(steps):
        s = 1.0 if t < steps // 2 else factor
        with torch.no_grad():
            theta.grad = s * (h * theta + noise * torch.randn(dim, generator=g, dtype=torch.float64))
            before = theta.detach().clone()
        opt.step()
        with torch.no_grad():
            update_norm[t] = (theta - before).pow(2).mean().sqrt()
            loss[t] = 0.5 * (h * theta * theta).sum()
    return {"update_norm": update_norm, "loss": loss}


def recovery_steps(update_norm: torch.Tensor, switch: int, window: int = 50, tolerance: float = 2.0) -> int:
    """Steps after `switch` until the moving-average update size is back within a factor
    `tolerance` of its level just before the switch; -1 if it never is."""
    ref = update_norm[switch - window:switch].mean()
    after = update_norm[switch:]
    if len(after) < window:
        return -1
    smooth = after.unfold(0, window, 1).mean(1)        # [len(after) - window + 1]
    ok = ((smooth / ref) <= tolerance) & ((smooth / ref) >= 1.0 / tolerance)
    idx = torch.nonzero(ok)
    return int(idx[0]) if len(idx) else -1


# --- chapter 04 experiment parameters (params.yaml `adax`) ---

@dataclass
class AdaxParams:
    """params.yaml `adax`: the chapter-04 experiments (validated by kexue.config)."""

    lr: float = param(1.5e-3, lo=0.0, hi=1.0, doc="AdaX learning rate (article default 1.5e-3)")
    beta1: float = param(0.9, lo=0.0, hi=0.999999)
    beta2: float = param(1e-4, lo=1e-12, hi=0.5, doc="AdaX beta2 (article default 1e-4)")
    adam_lr: float = param(1e-3, lo=0.0, hi=1.0, doc="Adam/AdamW learning rate")
    sgd_lr: float = param(0.05, lo=0.0, hi=10.0, doc="SGD-with-momentum learning rate")
    weight_decay: float = param(1e-4, lo=0.0, hi=1.0, doc="for AdaX and Adam (coupled)")
    decoupled_weight_decay: float = param(1e-2, lo=0.0, hi=1.0, doc="for AdaX-W and AdamW")
    adafactor_c: float = param(0.8, lo=0.0, hi=2.0, doc="AdaFactor schedule exponent, 1 - t^-c")
    n_seeds: int = param(3, lo=1, hi=100)
    epochs: int = param(3, lo=1, hi=1000)
    train_size: int = param(10000, lo=64, hi=60000, doc="Fashion-MNIST training images used")
    test_size: int = param(5000, lo=64, hi=10000)
    batch_size: int = param(128, lo=1, hi=60000)
    width: int = param(16, lo=1, hi=1024, doc="channels of the first conv layer of the CNN")
    memory_steps: int = param(8000, lo=200, hi=10**7, doc="steps of the long-term-memory problem")
    memory_factor: float = param(10.0, lo=1.0, hi=1e6, doc="gradient scale change in that problem")
