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
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim import Optimizer

from .config import ROOT, param

__all__ = [
    "AdaX",
    "AdaxParams",
    "BatchedAdaptive",
    "NgramLM",
    "encode_words",
    "kjv_word_splits",
    "lm_eval",
    "lm_selection",
    "ngram_windows",
    "train_lm",
    "warmup_constant_decay",
    "word_vocabulary",
    "EMAAdam",
    "adafactor_schedule",
    "MemberSpec",
    "cosine_lr",
    "ensemble_from_seeds",
    "fit_members",
    "member_eval",
    "scale_shift_quadratic_batch",
    "reddi_counterexample",
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
    `p` by `1 - lr*wd` first (AdaX-W, as AdamW does). `maximize` ascends (`g` -> `-g`).

    State per parameter, as in `torch.optim`: `step` (a float64 0-d tensor, so
    `torch.compile` of `step()` compiles once instead of once per step value),
    `exp_avg` ($m_t$) and `exp_avg_sq_hat` ($\hat v_t = v_t/c_t$, bounded by the
    largest $g^2$ seen, so finite for any $t$). Every param group is validated
    (`add_param_group` too); complex parameters are refused (use `torch.view_as_real`).

    Implementations (the default is the one the committed reports ran):

    * `foreach`: `True` updates all parameters that share a step count, device and
      dtype with one `torch._foreach_*` call per operation (fewest kernel launches:
      best on a GPU); `False` goes tensor by tensor. `None` (default) is `True` on
      CUDA and, on a CPU, foreach over chunks of at most `CPU_CHUNK` elements:
      small tensors share a call, and a chunk stays in cache across the six
      operations (`benchmarks/adax_step_time.py`: about 2x faster than one
      foreach call over 10M parameters on 2 cores).
    * `fused=True`: one pass over memory per parameter, in PyTorch's fused Adam kernel.
      AdaX in its moving-average form is Adam with $\hat\beta_{2,t} = 1 - \beta_2/c_t$ changing
      every step and no bias correction; the kernel gets that $\hat\beta_{2,t}$, $\epsilon/\sqrt{c_t}$,
      and a step count of 1e30 that makes both of its bias corrections exactly 1. Agrees with
      the default to float rounding (tested), not bit for bit; where $\hat\beta_{2,t}$ rounds to 1
      in float64 (t above about 3.7e5 at $\beta_2 = 10^{-4}$) it falls back to the default path.
    * Inside `torch.compile` the step's coefficients are computed with tensor operations
      on the step tensor, so the compiled step does not depend on the step's value.
    """

    CPU_CHUNK = 1 << 18   # elements (1 MiB of float32)
    FUSED_STEP = 1e30     # beta ** FUSED_STEP == 0.0 in float64 for every beta < 1

    def __init__(self, params, lr: float = 1.5e-3, betas: tuple[float, float] = (0.9, 1e-4),
                 eps: float = 1e-12, weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                 foreach: bool | None = None, *, maximize: bool = False, fused: bool = False):
        defaults = _adax_hyperparameters(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                              decoupled_weight_decay=decoupled_weight_decay, foreach=foreach,
                                              maximize=maximize, fused=fused))
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group, its hyperparameters checked like the constructor's (a bad value is a
        `ValueError` naming it) and its parameters checked (no complex tensors)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        own = {k: v for k, v in param_group.items() if k != "params"}
        checked = _adax_hyperparameters({**self.defaults, **own})
        param_group.update({k: checked[k] for k in own if k in checked})
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            if torch.is_complex(p):
                self.param_groups.pop()
                raise ValueError(_complex_message(p))

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
        maximize = group.get("maximize", False)
        compiling = torch.compiler.is_compiling()
        # Parameters with the same (step, device, dtype) are updated by one foreach call each.
        buckets: dict[tuple, list[torch.Tensor]] = defaultdict(list)
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("AdaX does not support sparse gradients")
            if torch.is_complex(p):
                raise ValueError(_complex_message(p))
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0, dtype=torch.float64)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq_hat"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            elif not torch.is_tensor(state["step"]):     # an int step (older state dicts, hand-set)
                state["step"] = torch.tensor(float(state["step"]), dtype=torch.float64)
            state["step"] += 1
            if compiling:
                self._update_traced(p, state, lr, b1, b2, eps, wd, decoupled, maximize)
            else:
                buckets[(int(state["step"].item()), p.device, p.dtype)].append(p)

        for (t, device, dtype), bucket in buckets.items():
            if group.get("fused") and self._update_fused(bucket, t, lr, b1, b2, eps, wd, decoupled, maximize):
                continue
            for params in self._chunks(bucket, group["foreach"], device):
                self._update(params, t, dtype, lr, b1, b2, eps, wd, decoupled, maximize)

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
                b2: float, eps: float, wd: float, decoupled: bool, maximize: bool = False) -> None:
        """One AdaX step of `params` (all at step `t`), written with foreach ops."""
        grads = [p.grad for p in params]
        m = [self.state[p]["exp_avg"] for p in params]
        v_hat = [self.state[p]["exp_avg_sq_hat"] for p in params]
        if maximize:
            grads = torch._foreach_neg(grads)
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

    def _update_fused(self, params: list[torch.Tensor], t: int, lr: float, b1: float, b2: float, eps: float,
                      wd: float, decoupled: bool, maximize: bool) -> bool:
        """The same step through PyTorch's fused Adam kernel (see the class docstring); False
        when it cannot represent this step (beta2_hat rounds to 1), so the caller falls back."""
        log_c = adax_log_c(t, b2)
        w = math.exp(math.log(b2) - log_c)
        beta2_hat = 1.0 - w
        if not beta2_hat < 1.0:
            return False
        dtype = params[0].dtype
        eps_t = max(eps * math.exp(-0.5 * log_c), torch.finfo(dtype).tiny)
        step = torch.tensor(self.FUSED_STEP, dtype=torch.float32, device=params[0].device)
        kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        kernel(params, [p.grad for p in params], [self.state[p]["exp_avg"] for p in params],
               [self.state[p]["exp_avg_sq_hat"] for p in params], [], [step] * len(params),
               amsgrad=False, lr=lr, beta1=b1, beta2=beta2_hat, weight_decay=wd, eps=eps_t,
               maximize=maximize, grad_scale=None, found_inf=None)
        return True

    @staticmethod
    def _update_traced(p: torch.Tensor, state: dict, lr: float, b1: float, b2: float, eps: float, wd: float,
                       decoupled: bool, maximize: bool) -> None:
        """One parameter's step with its coefficients computed from the step *tensor* (inside
        `torch.compile`: no Python number that changes every step, so no recompilation)."""
        g = -p.grad if maximize else p.grad
        if wd != 0.0:
            if decoupled:
                p.mul_(1.0 - lr * wd)
            else:
                g = g.add(p, alpha=wd)
        a = state["step"] * math.log1p(b2)                        # log (1+b2)^t, float64
        log_c = torch.where(a < 30.0, torch.log(torch.expm1(torch.clamp(a, max=30.0))),
                            a + torch.log1p(-torch.exp(-a)))
        w = torch.exp(math.log(b2) - log_c)
        eps_t = torch.clamp(eps * torch.exp(-0.5 * log_c), min=torch.finfo(p.dtype).tiny)
        state["exp_avg"].lerp_(g, 1.0 - b1)
        v_hat = state["exp_avg_sq_hat"]
        v_hat.mul_((1.0 - w).to(p.dtype)).add_(g * g * w.to(p.dtype))
        p.addcdiv_(state["exp_avg"], v_hat.sqrt().add_(eps_t.to(p.dtype)), value=-lr)


def _complex_message(p: torch.Tensor) -> str:
    return (f"AdaX does not support complex parameters (got a {str(p.dtype).replace('torch.', '')} tensor of shape "
            f"{tuple(p.shape)}): its second moment would be g*g, not |g|^2; optimise torch.view_as_real(p) instead")


def _adax_hyperparameters(h: dict) -> dict:
    """AdaX's hyperparameters checked (a `ValueError` naming the bad value) and normalised."""
    def number(name):
        try:
            return float(h[name])
        except (TypeError, ValueError):
            raise ValueError(f"invalid {name}={h[name]!r}: must be a number") from None
    lr = number("lr")
    _check("lr", lr, math.isfinite(lr) and lr >= 0.0, "a finite number >= 0")
    betas = h["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"invalid betas={betas!r}: must be a pair (beta1, beta2)")
    b1, b2 = float(betas[0]), float(betas[1])
    _check("betas[0]", b1, 0.0 <= b1 < 1.0, "in [0, 1)")
    # b2 = 0 would make c_t = 0 (0/0 in the update); b2 >= 1 is no longer a small rate.
    _check("betas[1]", b2, 0.0 < b2 < 1.0, "in (0, 1)")
    eps, wd = number("eps"), number("weight_decay")
    _check("eps", eps, math.isfinite(eps) and eps >= 0.0, "a finite number >= 0")
    _check("weight_decay", wd, math.isfinite(wd) and wd >= 0.0, "a finite number >= 0")
    foreach, fused = h.get("foreach"), h.get("fused", False)
    _check("foreach", foreach, foreach in (None, True, False), "None, True or False")
    _check("fused", fused, fused in (True, False), "True or False")
    if fused and foreach:
        raise ValueError("invalid fused=True with foreach=True: pick one implementation")
    return {**h, "lr": lr, "betas": (b1, b2), "eps": eps, "weight_decay": wd,
            "decoupled_weight_decay": bool(h["decoupled_weight_decay"]), "maximize": bool(h.get("maximize", False)),
            "fused": bool(fused)}


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


def adafactor_schedule(params, lr: float = 1.5e-3, beta1: float = 0.9, c: float = 0.8) -> "EMAAdam":
    """The chapter's one "AdaFactor schedule" arm: AdaX in every respect (no bias correction of m,
    eps 1e-12) except the coefficient, beta2_hat_t = 1 - t^-c. `MemberSpec("adafactor", lr)` is the
    same optimizer inside a batched model (tests/test_optim.py)."""
    return EMAAdam(params, lr=lr, beta1=beta1, eps=1e-12, momentum_bias_correction=False,
                   beta2_hat=lambda t: beta2_hat_adafactor(t, c))


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
    r = scale_shift_quadratic_batch(make_optimizer, steps, factor, [seed], dim, noise)
    return {k: v[0] for k, v in r.items()}


def scale_shift_quadratic_batch(make_optimizer: Callable[[list], Optimizer], steps: int, factor: float,
                                seeds: Sequence[int], dim: int = 256, noise: float = 1.0) -> dict[str, torch.Tensor]:
    """`scale_shift_quadratic` for several seeds at once: row s of a [len(seeds), dim] parameter
    is seed s's problem, with its own random stream, so an element-wise optimizer moves row s
    exactly as it would move the single-seed run (tested). Returns [len(seeds), steps] tensors."""
    if steps < 2:
        raise ValueError(f"steps={steps!r}: must be >= 2")
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"factor={factor!r}: must be a finite number > 0")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    if not gens:
        raise ValueError("seeds is empty: need at least one seed")
    h = torch.logspace(-2, 0, dim, dtype=torch.float64)
    theta = torch.nn.Parameter(torch.stack([torch.randn(dim, generator=g, dtype=torch.float64) for g in gens]))
    opt = make_optimizer([theta])
    update_norm = torch.empty(len(gens), steps, dtype=torch.float64)
    loss = torch.empty(len(gens), steps, dtype=torch.float64)
    for t in range(steps):
        s = 1.0 if t < steps // 2 else factor
        with torch.no_grad():
            xi = torch.stack([torch.randn(dim, generator=g, dtype=torch.float64) for g in gens])
            theta.grad = s * (h * theta + noise * xi)
            before = theta.detach().clone()
        opt.step()
        with torch.no_grad():
            update_norm[:, t] = (theta - before).pow(2).mean(-1).sqrt()
            loss[:, t] = 0.5 * (h * theta * theta).sum(-1)
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


# --- Reddi et al.'s counterexample, where Adam provably goes to the wrong point ---

def reddi_counterexample(make_optimizer: Callable[[list], Optimizer], steps: int, seeds: Sequence[int],
                         lrs: Sequence[float] = (0.5,), stochastic: bool = True, big: float = 1010.0,
                         small: float = 10.0, period: int = 101, x0: float = 0.0) -> torch.Tensor:
    r"""The online/stochastic linear problem of Reddi, Kale & Kumar (ICLR 2018, §5 "Synthetic experiments").

    $x \in [-1, 1]$, $f_t(x) = g_t x$ with $g_t$ = `big` once every `period` steps and $-$`small`
    otherwise (`stochastic=False`), or `big` with probability 1/`period` and $-$`small` otherwise
    (`stochastic=True`, each seed its own stream, the same at every learning rate). The mean gradient is positive
    (1010 − 100·10 = +10 per period), so the minimiser of the total loss is $x^* = -1$; an
    average of $g^2$ that forgets the rare large gradient within a period (Adam, $\beta_2 = 0.99$)
    lets the 100 small gradients push $x$ to $+1$. Learning rate $\alpha/\sqrt t$ for each $\alpha$
    in `lrs`, projection onto $[-1, 1]$ after every step (in one dimension every weighted
    projection is this clamp).

    Each learning rate is one param group holding a [len(seeds)] parameter, and row s is seed s's
    run, so an element-wise optimizer moves every (lr, seed) exactly as a single run would (tested).
    `make_optimizer` receives the list of param groups. Returns x after every step,
    [len(lrs), len(seeds), steps] (float64).
    """
    if steps < 1:
        raise ValueError(f"steps={steps!r}: must be >= 1")
    if period < 2:
        raise ValueError(f"period={period!r}: must be >= 2")
    if not (big > 0 and small > 0 and math.isfinite(big) and math.isfinite(small)):
        raise ValueError(f"big={big!r}, small={small!r}: must be finite numbers > 0")
    bad = [a for a in lrs if not (math.isfinite(a) and a > 0)]
    if bad or not lrs:
        raise ValueError(f"lrs={list(lrs)!r}: need at least one, each a finite number > 0")
    if not -1.0 <= x0 <= 1.0:
        raise ValueError(f"x0={x0!r}: must lie in [-1, 1]")
    if not seeds:
        raise ValueError("seeds is empty: need at least one seed")
    n = len(seeds)
    t = torch.arange(1, steps + 1)
    if stochastic:
        rare = torch.stack([torch.rand(steps, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64)
                            < 1.0 / period for s in seeds], 1)                       # [steps, n]
    else:
        rare = (t % period == 1).unsqueeze(1).expand(steps, n)
    grads = torch.where(rare, torch.tensor(big, dtype=torch.float64), torch.tensor(-small, dtype=torch.float64))
    xs = [torch.nn.Parameter(torch.full((n,), float(x0), dtype=torch.float64)) for _ in lrs]
    opt = make_optimizer([{"params": [x], "lr": float(a)} for x, a in zip(xs, lrs)])
    path = torch.empty(len(lrs), n, steps, dtype=torch.float64)
    for k in range(steps):
        for group, a in zip(opt.param_groups, lrs):
            group["lr"] = float(a) / math.sqrt(k + 1)
        for x in xs:
            x.grad = grads[k].clone()
        opt.step()
        with torch.no_grad():
            for i, x in enumerate(xs):
                x.clamp_(-1.0, 1.0)
                path[i, :, k] = x
    return path


# --- the identities of the derivation, judged (notebook sections 2-4) ---

# --- many optimizers x learning rates x seeds in one batched model (notebook section 6) ---

KINDS = ("adam", "adax", "adafactor", "sgd")


@dataclass(frozen=True)
class MemberSpec:
    """One ensemble member's optimizer, in the moving-average form of notebook section 3.

    `kind`: the coefficient schedule: "adam" (beta2_hat_adam), "adax" (beta2_hat_adax),
    "adafactor" (1 - t^-c), or "sgd": SGD with heavy-ball momentum beta1 as `torch.optim.SGD`
    (buf = beta1*buf + g, theta -= lr*buf), written as m/(1-beta1) with no denominator. `momentum_correction`: divide m by 1 - beta1^t (None: True for
    Adam, False for AdaX and AdaFactor's schedule, as the article's AdaX). `decoupled`: weight
    decay as `p *= 1 - lr*wd` (AdamW, AdaX-W) instead of `g += wd*p`. `eps`: None gives 1e-8
    for Adam (torch's default) and 1e-12 otherwise (AdaX's default).
    """
    kind: str
    lr: float
    weight_decay: float = 0.0
    decoupled: bool = False
    momentum_correction: bool | None = None
    eps: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"invalid kind={self.kind!r}: must be one of {KINDS}")
        if self.kind == "sgd" and (self.momentum_correction or self.eps is not None):
            raise ValueError(f"kind='sgd' takes no momentum_correction={self.momentum_correction!r} or "
                             f"eps={self.eps!r}: SGD has no bias correction and no denominator")
        _check("lr", self.lr, math.isfinite(self.lr) and self.lr >= 0.0, "a finite number >= 0")
        _check("weight_decay", self.weight_decay, math.isfinite(self.weight_decay) and self.weight_decay >= 0.0,
               "a finite number >= 0")
        if self.eps is not None:
            _check("eps", self.eps, math.isfinite(self.eps) and self.eps >= 0.0, "a finite number >= 0")

    @property
    def corrected(self) -> bool:
        if self.kind == "sgd":
            return False
        return self.kind == "adam" if self.momentum_correction is None else bool(self.momentum_correction)

    @property
    def epsilon(self) -> float:
        if self.kind == "sgd":
            return 1.0                       # with v = 0 the denominator sqrt(v) + eps is 1
        return (1e-8 if self.kind == "adam" else 1e-12) if self.eps is None else float(self.eps)


class BatchedAdaptive:
    r"""Adam, AdamW, AdaX, AdaX-W and AdaFactor's schedule for every member of a batched model.

    Every parameter is a `[members, ...]` tensor; member s is updated by `specs[s]`, element-wise:

    $$g \leftarrow g + \lambda_c\theta,\quad \theta \leftarrow (1 - \alpha_t\lambda_d)\theta,\quad
      m \leftarrow \beta_1 m + (1-\beta_1) g,\quad
      \hat v \leftarrow \hat\beta_{2,t}\hat v + (1-\hat\beta_{2,t}) g^2,\quad
      \theta \leftarrow \theta - \alpha_t\,\frac{m\,/\,(1-\beta_1^t)^{[\text{corrected}]}}{\sqrt{\hat v} + \epsilon_t},$$

    with the member's own $\alpha_t$ (its lr times the shared `lr_scale` of the step), schedule
    $\hat\beta_{2,t}$ and $\epsilon_t$ (AdaX: $\epsilon/\sqrt{c_t}$, as `AdaX`). The per-member
    numbers are `[members, 1, ...]` tensors, so one pass updates all members: member s follows
    exactly the trajectory of `torch.optim.Adam`/`AdamW`, `kexue.optim.AdaX` or `torch.optim.SGD`
    (momentum beta1, no dampening) on its own (tests/test_optim.py, float64). SGD members use the
    same recursion with $\hat\beta_{2,t} = 1$ (so $\hat v = 0$), $\epsilon = 1$ and step
    $\alpha_t/(1-\beta_1)$: $m/(1-\beta_1)$ is torch's momentum buffer $b \leftarrow \beta_1 b + g$.
    """

    def __init__(self, params, specs: Sequence[MemberSpec], beta1: float = 0.9, beta2_adam: float = 0.999,
                 beta2_adax: float = 1e-4, adafactor_c: float = 0.8):
        self.params = list(params)
        self.specs = list(specs)
        m = len(self.specs)
        if m == 0:
            raise ValueError("specs is empty: need one MemberSpec per member")
        for i, p in enumerate(self.params):
            if p.dim() == 0 or p.shape[0] != m:
                raise ValueError(f"parameter {i} has shape {tuple(p.shape)}: its first dimension must be the "
                                 f"{m} members")
        _check("beta1", beta1, 0.0 <= beta1 < 1.0, "in [0, 1)")
        _check("beta2_adam", beta2_adam, 0.0 <= beta2_adam < 1.0, "in [0, 1)")
        _check("beta2_adax", beta2_adax, 0.0 < beta2_adax < 1.0, "in (0, 1)")
        _check("adafactor_c", adafactor_c, math.isfinite(adafactor_c) and adafactor_c > 0, "a finite number > 0")
        self.beta1, self.beta2_adam, self.beta2_adax, self.adafactor_c = beta1, beta2_adam, beta2_adax, adafactor_c
        ref = self.params[0]
        as_t = lambda xs: torch.tensor(xs, dtype=torch.float64)                          # noqa: E731
        self._kind = torch.tensor([KINDS.index(s.kind) for s in self.specs])
        self._lr = as_t([s.lr for s in self.specs])
        self._wd_coupled = as_t([0.0 if s.decoupled else s.weight_decay for s in self.specs])
        self._wd_decoupled = as_t([s.weight_decay if s.decoupled else 0.0 for s in self.specs])
        self._corrected = torch.tensor([s.corrected for s in self.specs])
        self._eps = as_t([s.epsilon for s in self.specs])
        self._tiny = torch.finfo(ref.dtype).tiny
        self.t = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq_hat = [torch.zeros_like(p) for p in self.params]

    def coefficients(self, t: int, lr_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Per-member numbers of step t (float64, [members]): `w` = 1 - beta2_hat_t (the weight
        of the newest g^2), `step` = lr_t (/ (1 - beta1^t) when corrected), `eps`, `decay`."""
        b2 = self.beta2_adam                  # Adam: 1 - beta2_hat_t = (1 - b2) / (1 - b2^t)
        w_adam = (1 - b2) / -math.expm1(t * math.log(b2)) if b2 > 0 else 1.0
        w_kind = torch.tensor([w_adam, math.exp(math.log(self.beta2_adax) - adax_log_c(t, self.beta2_adax)),
                               t ** (-self.adafactor_c), 0.0], dtype=torch.float64)
        eps_mult = torch.tensor([1.0, math.exp(-0.5 * adax_log_c(t, self.beta2_adax)), 1.0, 1.0],
                                dtype=torch.float64)
        lr = self._lr * float(lr_scale)
        corr = 1.0 / -math.expm1(t * math.log(self.beta1)) if self.beta1 > 0 else 1.0
        eps = self._eps * eps_mult[self._kind]
        eps = torch.where(self._kind == KINDS.index("adax"), eps.clamp(min=self._tiny), eps)
        step = torch.where(self._corrected, lr * corr, lr)
        step = torch.where(self._kind == KINDS.index("sgd"), lr / (1.0 - self.beta1), step)
        return {"w": w_kind[self._kind], "step": step, "eps": eps,
                "decay": 1.0 - lr * self._wd_decoupled, "wd": self._wd_coupled}

    @torch.no_grad()
    def step(self, lr_scale: float = 1.0) -> None:
        """One update of every member; `lr_scale` multiplies every member's lr (a schedule)."""
        if not (math.isfinite(lr_scale) and lr_scale >= 0):
            raise ValueError(f"invalid lr_scale={lr_scale!r}: must be a finite number >= 0")
        self.t += 1
        c = self.coefficients(self.t, lr_scale)
        any_coupled = bool((c["wd"] != 0).any())
        any_decoupled = bool((c["decay"] != 1).any())
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq_hat):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            col = {k: x.to(device=p.device, dtype=p.dtype).view(shape) for k, x in c.items()}
            g = p.grad
            if any_coupled:
                g = g + col["wd"] * p
            if any_decoupled:
                p.mul_(col["decay"])
            m.lerp_(g, 1.0 - self.beta1)
            v.mul_(1.0 - col["w"]).addcmul_(g * col["w"], g)
            p.addcdiv_(m * col["step"], v.sqrt().add_(col["eps"]), value=-1.0)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def cosine_lr(step: int, steps: int, final: float = 0.01) -> float:
    """Learning-rate multiplier at update `step` (1-based) of `steps`: a cosine from 1 down to
    `final` at the last update."""
    if steps < 1 or not 1 <= step <= steps:
        raise ValueError(f"step={step!r} of steps={steps!r}: need 1 <= step <= steps")
    if not 0 <= final <= 1:
        raise ValueError(f"final={final!r}: must be in [0, 1]")
    frac = (step - 1) / max(steps - 1, 1)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * frac))


def ensemble_from_seeds(dims: list[int], member_seeds: Sequence[int], dtype: torch.dtype = torch.float32):
    """A `kexue.gan.EnsembleMLP` (ReLU) whose member s is initialised from `member_seeds[s]` alone:
    members that share a seed start from the same weights, whatever else differs (paired arms)."""
    from .gan import EnsembleMLP
    if not member_seeds:
        raise ValueError("member_seeds is empty: need one seed per member")
    cache = {}
    for s in dict.fromkeys(member_seeds):
        cache[s] = EnsembleMLP(1, dims, "relu", torch.Generator().manual_seed(int(s)))
    ens = EnsembleMLP(len(member_seeds), dims, "relu").to(dtype)
    with torch.no_grad():
        for i in range(len(ens.weights)):
            ens.weights[i].copy_(torch.cat([cache[s].weights[i] for s in member_seeds]))
            ens.biases[i].copy_(torch.cat([cache[s].biases[i] for s in member_seeds]))
    return ens


def fit_members(model: torch.nn.Module, opt: BatchedAdaptive, x: torch.Tensor, y: torch.Tensor, steps: int,
                batch_size: int, streams: Sequence[torch.Generator], member_stream: Sequence[int],
                lr_schedule: Callable[[int], float] = lambda s: 1.0,
                on_eval: Callable[[int, torch.Tensor], None] | None = None, eval_steps: Sequence[int] = (),
                progress: Callable | None = None) -> torch.Tensor:
    """Train every member of a batched classifier (`x` [N, d], `y` [N]) for `steps` updates.

    Data stream k draws its mini-batches (with replacement) from generator `streams[k]`;
    member s reads stream `member_stream[s]`, so members that share a stream (one seed, any
    optimizer or lr) see the same batches. The loss is the sum over members of each member's
    mean cross-entropy, so each member's gradient is its own. `on_eval(step, loss)` is called
    after the updates in `eval_steps` with each member's mean training loss [members] since the
    previous call. Returns the members' mean training loss over the last 10% of the updates.
    """
    member_stream = torch.as_tensor(list(member_stream), dtype=torch.long)
    n_members = int(member_stream.numel())
    if steps < 1:
        raise ValueError(f"steps={steps!r}: must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: must be >= 1")
    if len(opt.specs) != n_members:
        raise ValueError(f"{len(opt.specs)} optimizer specs for {n_members} members")
    if n_members and (member_stream.min() < 0 or member_stream.max() >= len(streams)):
        raise ValueError(f"member_stream refers to streams outside 0..{len(streams) - 1}")
    bad = [s for s in eval_steps if not 1 <= s <= steps]
    if bad:
        raise ValueError(f"eval_steps {bad}: must lie in 1..{steps}")
    eval_steps = set(eval_steps)
    dev = x.device
    member_stream = member_stream.to(dev)
    acc = torch.zeros(n_members, dtype=torch.float64, device=dev)
    tail = torch.zeros(n_members, dtype=torch.float64, device=dev)
    tail_from = steps - max(steps // 10, 1)
    since = 0
    it = range(1, steps + 1) if progress is None else progress(range(1, steps + 1))
    for step in it:
        idx = torch.stack([torch.randint(len(x), (batch_size,), generator=g) for g in streams]).to(dev)
        idx = idx[member_stream]                                        # [members, B]
        logits = model(x[idx])                                          # [members, B, classes]
        loss = F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="none")
        loss = loss.view(n_members, batch_size).mean(1)                 # [members]
        opt.zero_grad()
        loss.sum().backward()
        opt.step(lr_schedule(step))
        with torch.no_grad():
            acc += loss.detach().double()
            since += 1
            if step > tail_from:
                tail += loss.detach().double()
        if step in eval_steps and on_eval is not None:
            on_eval(step, (acc / since).cpu())
            acc.zero_()
            since = 0
    return (tail / (steps - tail_from)).cpu()


@torch.no_grad()
def member_eval(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 2000
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy, mean cross-entropy) of every member on the same data: two [members] tensors."""
    correct, loss_sum = None, None
    for i in range(0, len(x), chunk):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        first = next(model.parameters())
        logits = model(xb.to(first.dtype).unsqueeze(0).expand(first.shape[0], -1, -1))
        c = (logits.argmax(-1) == yb).sum(1).double()
        ce = F.cross_entropy(logits.transpose(1, 2), yb.expand(logits.shape[0], -1), reduction="none").sum(1).double()
        correct = c if correct is None else correct + c
        loss_sum = ce if loss_sum is None else loss_sum + ce
    return (correct / len(x)).cpu(), (loss_sum / len(x)).cpu()


# --- a task on which optimizers differ: a word-level language model on the KJV (notebook section 7) ---

_WORD = re.compile(r"[a-z]+|[^\sa-z]")


def kjv_word_splits(verses: Sequence[str], every: int = 20) -> dict[str, list[str]]:
    """{"train", "val", "test"} -> tokens, from verses in canonical order: verse i goes to validation when
    i % every == 0, to test when i % every == every // 2, to training otherwise (every book in every split).
    Tokens are lower-cased words and single punctuation marks; each verse ends with a newline token."""
    if every < 3:
        raise ValueError(f"every={every!r}: need >= 3 so that the three splits differ")
    if len(verses) < every:
        raise ValueError(f"{len(verses)} verses: need at least every={every} to fill the three splits")
    out = {"train": [], "val": [], "test": []}
    for i, v in enumerate(verses):
        out["val" if i % every == 0 else "test" if i % every == every // 2 else "train"] += _WORD.findall(v.lower()) + ["\n"]
    return out


def word_vocabulary(tokens: Sequence[str], size: int) -> list[str]:
    """"<unk>" and the `size` - 1 most frequent tokens (ties in order of first appearance)."""
    if size < 2:
        raise ValueError(f"size={size!r}: need >= 2 (<unk> and at least one word)")
    from collections import Counter
    return ["<unk>"] + [w for w, _ in Counter(tokens).most_common(size - 1)]


def encode_words(tokens: Sequence[str], vocab: Sequence[str]) -> torch.Tensor:
    """Token ids (int64), 0 (<unk>) for a token outside `vocab`."""
    index = {w: i for i, w in enumerate(vocab)}
    return torch.tensor([index.get(w, 0) for w in tokens], dtype=torch.long)


def ngram_windows(stream: torch.Tensor, starts: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `context` tokens from each of `starts` (any shape S) and the token after them:
    ([*S, context], [*S]), int64."""
    if starts.numel() and (int(starts.min()) < 0 or int(starts.max()) + context + 1 > len(stream)):
        raise ValueError(f"window starts must lie in 0..{len(stream) - context - 1} for context {context}")
    w = stream[starts.unsqueeze(-1) + torch.arange(context + 1)]
    return w[..., :-1], w[..., -1]


class NgramLM(torch.nn.Module):
    r"""`members` neural n-gram language models (Bengio et al., 2003) in one module; member s initialised
    from seed `seeds[s]` alone, every parameter a `[members, ...]` tensor (so `BatchedAdaptive` gives each
    member its own optimizer).

    Per member: the previous `context` tokens' embeddings ($\mathcal N(0, 1)$, width d) concatenated,
    one ReLU layer of `hidden` units, and a linear read-out to the vocabulary:
    $p(w_t \mid w_{t-k..t-1}) = \mathrm{softmax}(W_2\,\mathrm{relu}(W_1 [e_{t-k}; \dots; e_{t-1}] + b_1) + b_2)$,
    weights $\mathcal N(0, 1/\text{fan-in})$, biases 0. Word frequencies in text are heavy-tailed, and
    most of the read-out's rows belong to rare words: the setting in which SGD is known to trail Adam
    (Kunstner et al., 2024).
    """

    def __init__(self, vocab: int, seeds: Sequence[int], context: int = 3, d: int = 32, hidden: int = 64):
        super().__init__()
        if not seeds:
            raise ValueError("seeds is empty: need one seed per member")
        for name, v in (("vocab", vocab), ("context", context), ("d", d), ("hidden", hidden)):
            _check(name, v, isinstance(v, int) and v >= 1, "an integer >= 1")
        self.vocab, self.context, self.d, self.hidden, self.members = vocab, context, d, hidden, len(seeds)
        shapes = {"embed": ((vocab, d), 1.0), "w1": ((context * d, hidden), 1 / math.sqrt(context * d)),
                  "w2": ((hidden, vocab), 1 / math.sqrt(hidden))}
        one = {}
        for s in dict.fromkeys(int(x) for x in seeds):
            g = torch.Generator().manual_seed(s)
            one[s] = {k: torch.randn(shape, generator=g) * std for k, (shape, std) in shapes.items()}
        for k in shapes:
            setattr(self, k, torch.nn.Parameter(torch.stack([one[int(s)][k] for s in seeds])))
        self.b1 = torch.nn.Parameter(torch.zeros(self.members, 1, hidden))
        self.b2 = torch.nn.Parameter(torch.zeros(self.members, 1, vocab))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [members, B, vocab] of the contexts `x` [members, B, context]."""
        m, b, k = x.shape
        if m != self.members or k != self.context:
            raise ValueError(f"x has shape {tuple(x.shape)}: need [{self.members}, B, {self.context}]")
        offset = (torch.arange(m, device=x.device) * self.vocab).view(m, 1, 1)
        e = F.embedding(x + offset, self.embed.reshape(m * self.vocab, self.d)).reshape(m, b, k * self.d)
        h = F.relu(torch.bmm(e, self.w1) + self.b1)                                       # [m, b, hidden]
        return torch.bmm(h, self.w2) + self.b2

    def member_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's mean cross-entropy in nats, [members], of contexts [members, B, k] and next tokens [members, B]."""
        loss = F.cross_entropy(self(x).flatten(0, 1), y.flatten(), reduction="none")
        return loss.view(self.members, -1).mean(1)


def warmup_constant_decay(step: int, steps: int, warmup: int, decay_from: int, final: float = 0.01) -> float:
    """Learning-rate multiplier at update `step` (1-based) of `steps`: linear from 1/warmup to 1 over
    the first `warmup` updates, 1 until update `decay_from`, then a cosine down to `final` at `steps`."""
    if steps < 1 or not 1 <= step <= steps:
        raise ValueError(f"step={step!r} of steps={steps!r}: need 1 <= step <= steps")
    if not 0 <= warmup <= decay_from <= steps:
        raise ValueError(f"warmup={warmup!r}, decay_from={decay_from!r}: need 0 <= warmup <= decay_from <= steps")
    if not 0 <= final <= 1:
        raise ValueError(f"final={final!r}: must be in [0, 1]")
    if step <= warmup:
        return step / warmup
    if step <= decay_from:
        return 1.0
    frac = (step - decay_from) / max(steps - decay_from, 1)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def lm_eval(model: NgramLM, stream: torch.Tensor, starts: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Each member's mean cross-entropy (nats per token, float64 [members]) on the same windows."""
    total = torch.zeros(model.members, dtype=torch.float64)
    for i in range(0, len(starts), chunk):
        x, y = ngram_windows(stream, starts[i:i + chunk], model.context)
        total += model.member_loss(x.expand(model.members, -1, -1), y.expand(model.members, -1)).double() * len(x)
    return total / len(starts)


def train_lm(model: NgramLM, opt: BatchedAdaptive, train: torch.Tensor, val: torch.Tensor,
             member_seeds: Sequence[int], steps: int, batch_size: int, lr_schedule: Callable[[int], float],
             eval_steps: Sequence[int], val_windows: int, progress: Callable | None = None) -> dict:
    """Train every member on random windows of `train`; member s reads the batch stream of its seed
    (`member_seeds[s]`, generator seeded with seed + 10**6), so members of one seed see the same
    batches. Returns {"train_loss": float64 [evals, members] (mean since the previous evaluation),
    "val_loss": [evals, members] on the same `val_windows` windows for everyone, "steps": eval_steps,
    "diverged": bool [members] (a non-finite loss; such a member gets zero gradients from then on)}."""
    if steps < 1 or batch_size < 1 or val_windows < 1:
        raise ValueError(f"steps={steps!r}, batch_size={batch_size!r}, val_windows={val_windows!r}: must be >= 1")
    if len(member_seeds) != model.members or len(opt.specs) != model.members:
        raise ValueError(f"{len(member_seeds)} seeds and {len(opt.specs)} specs for {model.members} members")
    bad = [s for s in eval_steps if not 1 <= s <= steps]
    if bad:
        raise ValueError(f"eval_steps {bad}: must lie in 1..{steps}")
    k = model.context
    seeds = list(dict.fromkeys(int(s) for s in member_seeds))
    row = torch.tensor([seeds.index(int(s)) for s in member_seeds])
    streams = [torch.Generator().manual_seed(s + 10**6) for s in seeds]
    val_starts = torch.randint(len(val) - k - 1, (val_windows,), generator=torch.Generator().manual_seed(12345))
    diverged = torch.zeros(model.members, dtype=torch.bool)
    acc, since, train_hist, val_hist = torch.zeros(model.members, dtype=torch.float64), 0, [], []
    eval_set = set(eval_steps)
    it = range(1, steps + 1) if progress is None else progress(range(1, steps + 1))
    for step in it:
        starts = torch.stack([torch.randint(len(train) - k - 1, (batch_size,), generator=g) for g in streams])
        x, y = ngram_windows(train, starts[row], k)                     # [members, B, k], [members, B]
        loss = model.member_loss(x, y)
        diverged |= ~torch.isfinite(loss.detach())
        opt.zero_grad()
        torch.where(diverged, torch.zeros_like(loss), loss).sum().backward()
        if diverged.any():                                              # members share no parameter, but
            for p in model.parameters():                                # 0 * inf is NaN: zero theirs outright
                if p.grad is not None:
                    p.grad[diverged] = 0.0
        opt.step(lr_schedule(step))
        acc += torch.where(diverged, torch.full_like(acc, float("nan")), loss.detach().double())
        since += 1
        if step in eval_set:
            train_hist.append(acc / since)
            val_hist.append(lm_eval(model, val, val_starts))
            acc, since = torch.zeros_like(acc), 0
    return {"train_loss": torch.stack(train_hist).numpy(), "val_loss": torch.stack(val_hist).numpy(),
            "steps": list(eval_steps), "diverged": diverged.numpy()}


# The optimizers of section 7, each with the weight decays of its joint lr x weight-decay sweep. A weight decay
# of 0 is the same optimizer coupled or decoupled, so Adam and AdamW (AdaX and AdaX-W) share that member.
LM_FAMILIES = {"SGD+momentum": "sgd", "Adam": "adam", "AdamW": "adam", "AdaX": "adax", "AdaX-W": "adax"}
LM_DECOUPLED = {"AdamW", "AdaX-W"}
LM_SEED_OFFSET = 1000                   # kexue.verify reruns a chapter at seed + 1000


def lm_arm_configs(cfg: dict) -> dict[str, list[tuple[float, float, bool]]]:
    """Each optimizer's sweep, {name: [(lr, weight decay, decoupled), ...]}: `lm_lr_points` learning rates
    `lm_lr_factor` apart around `lm_lr` (`lm_sgd_lr` for SGD+momentum) times weight decay 0 and the
    optimizer's own (`lm_weight_decay` coupled, `lm_decoupled_weight_decay` for AdamW and AdaX-W)."""
    out = {}
    n, f = cfg["lm_lr_points"], cfg["lm_lr_factor"]
    for name, kind in LM_FAMILIES.items():
        centre = cfg["lm_sgd_lr"] if kind == "sgd" else cfg["lm_lr"]
        lrs = [centre * f ** (k - (n - 1) / 2) for k in range(n)]
        decoupled = name in LM_DECOUPLED
        wd = cfg["lm_decoupled_weight_decay"] if decoupled else cfg["lm_weight_decay"]
        out[name] = [(lr, w, decoupled and w > 0) for lr in lrs for w in (0.0, wd)]
    return out


def lm_members(cfg: dict, base: int) -> tuple[list[dict], dict[str, list[int]]]:
    """The distinct members of one seed set (seeds base .. base + lm_seeds - 1), as
    [{"kind", "lr", "weight_decay", "decoupled", "seed"}], and {optimizer: member indices of its sweep}."""
    members, index, arms = [], {}, {}
    for name, configs in lm_arm_configs(cfg).items():
        kind = LM_FAMILIES[name]
        arms[name] = []
        for lr, wd, dec in configs:
            for s in range(cfg["lm_seeds"]):
                key = (kind, lr, wd, dec, base + s)
                if key not in index:
                    index[key] = len(members)
                    members.append({"kind": kind, "lr": lr, "weight_decay": wd, "decoupled": dec, "seed": base + s})
                arms[name].append(index[key])
    return members, arms


def lm_eval_steps(cfg: dict) -> list[int]:
    """Evaluation updates: `lm_eval_points` evenly spaced, plus 1/beta2 when the run passes it."""
    steps = cfg["lm_steps"]
    pts = {int(round(steps * (i + 1) / cfg["lm_eval_points"])) for i in range(cfg["lm_eval_points"])}
    t_mem = int(round(1 / cfg["beta2"]))
    return sorted(pts | ({t_mem} if t_mem < steps else set()))


def lm_seed_set(base: int, cfg: dict, streams: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Section 7's sweep for one seed set in one batched model: (record for runs.json, arrays)."""
    import time
    t0 = time.perf_counter()
    members, arms = lm_members(cfg, base)
    seeds = [m["seed"] for m in members]
    model = NgramLM(cfg["lm_vocab"], seeds, context=cfg["lm_context"], d=cfg["lm_width"], hidden=cfg["lm_hidden"])
    specs = [MemberSpec(m["kind"], m["lr"], weight_decay=m["weight_decay"], decoupled=m["decoupled"])
             for m in members]
    opt = BatchedAdaptive(list(model.parameters()), specs, beta1=cfg["beta1"], beta2_adam=0.999,
                          beta2_adax=cfg["beta2"])
    steps = cfg["lm_steps"]
    schedule = lambda s: warmup_constant_decay(s, steps, cfg["lm_warmup"], cfg["lm_decay_from"], cfg["lm_lr_final"])  # noqa: E731
    evals = lm_eval_steps(cfg)
    hist = train_lm(model, opt, streams["train"], streams["val"], seeds, steps, cfg["lm_batch"], schedule,
                    evals, cfg["lm_val_windows"])
    final = {}
    for split in ("val", "test"):           # the final numbers on more windows than the curve's
        g = torch.Generator().manual_seed({"val": 54321, "test": 98765}[split])
        starts = torch.randint(len(streams[split]) - cfg["lm_context"] - 1, (cfg["lm_final_windows"],), generator=g)
        final[split] = lm_eval(model, streams[split], starts).numpy()
    record = {"base": base, "members": members, "arms": arms, "eval_steps": evals,
              "diverged": [bool(x) for x in hist["diverged"]], "seconds": round(time.perf_counter() - t0, 1)}
    arrays = {"train_loss": hist["train_loss"], "val_loss": hist["val_loss"],
              "final_val_loss": final["val"], "final_test_loss": final["test"]}
    return record, arrays


def lm_selection(record: dict, arrays: dict, base: int | str) -> dict[str, dict]:
    """Each optimizer's validation-best configuration in one seed set of the training stage (`record` =
    sets[str(base)], `arrays` as `load_lm_runs` gives them): {name: {"lr", "weight_decay", "members" (indices,
    by seed), "val_loss", "test_loss" (float64 [seeds])}}, the lowest mean final validation loss over seeds;
    a configuration with a diverged seed never wins (ties: the first in sweep order)."""
    val, test = arrays[f"{base}/final_val_loss"], arrays[f"{base}/final_test_loss"]
    diverged, members = record["diverged"], record["members"]
    out = {}
    for name, idx in record["arms"].items():
        groups: dict[tuple, list[int]] = {}
        for i in idx:
            groups.setdefault((members[i]["lr"], members[i]["weight_decay"]), []).append(i)
        score = lambda ms: math.inf if any(diverged[i] for i in ms) else float(np.mean(val[ms]))  # noqa: E731
        (lr, wd), ms = min(groups.items(), key=lambda kv: score(kv[1]))
        ms = sorted(ms, key=lambda i: members[i]["seed"])
        out[name] = {"lr": lr, "weight_decay": wd, "members": ms,
                     "val_loss": np.asarray(val[ms], dtype=float), "test_loss": np.asarray(test[ms], dtype=float)}
    return out


_LM_WORKER: dict = {}


def kjv_lm_streams(vocab_size: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Section 7's data: the KJV's three splits as token-id streams over the training split's `vocab_size`
    most frequent tokens (with <unk>), and that vocabulary."""
    from .data import load_bible_pairs
    tokens = kjv_word_splits([r["kjv"] for r in load_bible_pairs()])
    vocab = word_vocabulary(tokens["train"], vocab_size)
    return {k: encode_words(v, vocab) for k, v in tokens.items()}, vocab


def _lm_worker_init(cfg: dict) -> None:
    """The KJV streams once per worker process, one thread each (a set's numbers do not depend on its neighbours)."""
    torch.set_num_threads(1)
    streams, vocab = kjv_lm_streams(cfg["lm_vocab"])
    _LM_WORKER.update(cfg=cfg, vocab=vocab, streams=streams)


def _lm_worker_run(base: int) -> tuple[int, dict, dict]:
    w = _LM_WORKER
    return (base, *lm_seed_set(base, w["cfg"], w["streams"]))


LM_KEYS = ("seed", "beta1", "beta2")


def train_lm_sets(cfg: dict, log: Callable[[str], None] = print) -> dict:
    """Section 7 for the chapter's seed set and its rerun's (`seed`, `seed + 1000`), each in its own process of
    one thread (`lm_workers` at a time)."""
    import multiprocessing as mp
    import time
    warmup_constant_decay(1, cfg["lm_steps"], cfg["lm_warmup"], cfg["lm_decay_from"], cfg["lm_lr_final"])  # fails now
    bases = [int(cfg["seed"]), int(cfg["seed"]) + LM_SEED_OFFSET]
    t0 = time.perf_counter()
    if cfg["lm_workers"] == 1:
        _lm_worker_init(cfg)
        results = list(map(_lm_worker_run, bases))
        vocab = _LM_WORKER["vocab"]
    else:
        with mp.get_context("spawn").Pool(min(cfg["lm_workers"], len(bases)), _lm_worker_init, (cfg,)) as pool:
            results = pool.map(_lm_worker_run, bases)
        vocab = kjv_lm_streams(cfg["lm_vocab"])[1]
    sets, arrays = {}, {}
    for base, record, arr in results:
        sets[str(base)] = record
        arrays.update({f"{base}/{k}": v for k, v in arr.items()})
        log(f"seeds {base}..{base + cfg['lm_seeds'] - 1}: {len(record['members'])} members in "
            f"{record['seconds']:.0f} s, best final validation loss {np.nanmin(arr['final_val_loss']):.3f} nats/word")
    config = {**{k: cfg[k] for k in LM_KEYS}, **{k: cfg[k] for k in cfg if k.startswith("lm_")},
              "vocab": vocab, "threads_per_set": 1, "torch": torch.__version__,
              "stage_seconds": round(time.perf_counter() - t0)}
    return {"config": config, "sets": sets, "arrays": arrays}


LM_RUNS_DIR = ROOT / "data" / "adax_lm_runs"


def save_lm_runs(result: dict, folder=LM_RUNS_DIR):
    """runs.json (config, per-set members and sweeps) and arrays.npz (loss curves, final losses), checksummed."""
    from .data import save_checked_runs
    return save_checked_runs(folder, {"config": result["config"], "sets": result["sets"]}, "arrays.npz",
                             result["arrays"])


def load_lm_runs(folder=LM_RUNS_DIR) -> tuple[dict, dict, dict]:
    """(config, sets, arrays) of the committed `04_adax_train` stage, checksums checked."""
    from .data import load_checked_runs
    data, arrays = load_checked_runs(folder, "arrays.npz", "04_adax_train", "python -m kexue.optim train")
    return data["config"], data["sets"], arrays


def main(argv: list[str] | None = None) -> int:
    """`python -m kexue.optim train`: chapter 04's language-model training stage (params.yaml `adax`, keys lm_*)."""
    import argparse
    from pathlib import Path
    from .config import chapter_params
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("command", choices=["train"])
    ap.add_argument("--out", default=str(LM_RUNS_DIR))
    ap.add_argument("--scale", choices=["smoke", "default", "gpu"], help="override common.scale")
    args = ap.parse_args(argv)
    cfg = chapter_params("adax", overrides={"common": {"scale": args.scale}} if args.scale else None)
    result = train_lm_sets(cfg, log=lambda m: print(m, flush=True))
    folder = save_lm_runs(result, Path(args.out))
    print(f"trained {len(result['sets'])} seed sets in {result['config']['stage_seconds']} s -> {folder}")
    return 0


# --- chapter 04 experiment parameters (params.yaml `adax`) ---

@dataclass
class AdaxParams:
    """params.yaml `adax`: the chapter-04 experiments (validated by kexue.config)."""

    lr: float = param(1.5e-3, lo=0.0, hi=1.0, doc="AdaX learning rate (article default 1.5e-3): centre of the lr sweep")
    beta1: float = param(0.9, lo=0.0, hi=0.999999)
    beta2: float = param(1e-4, lo=1e-12, hi=0.5, doc="AdaX beta2 (article default 1e-4)")
    adam_lr: float = param(1e-3, lo=0.0, hi=1.0, doc="Adam's lr on the long-term-memory problem")
    weight_decay: float = param(1e-4, lo=0.0, hi=1.0, doc="coupled: AdaX, Adam, AdaFactor schedule, ablation")
    decoupled_weight_decay: float = param(1e-2, lo=0.0, hi=1.0, doc="decoupled: AdaX-W and AdamW")
    adafactor_c: float = param(0.8, lo=0.0, hi=2.0, doc="AdaFactor schedule exponent, 1 - t^-c")
    n_seeds: int = param(5, lo=2, hi=100, doc="seeds of the long run (paired across optimizers and lrs)")
    epochs: int = param(12, lo=1, hi=1000, doc="long run: passes over the training split")
    train_size: int = param(55000, lo=64, hi=59936, doc="Fashion-MNIST training images (the rest: validation)")
    val_size: int = param(5000, lo=64, hi=10000, doc="held-out training images that pick each optimizer's lr")
    test_size: int = param(10000, lo=64, hi=10000)
    batch_size: int = param(32, lo=1, hi=60000)
    width: int = param(32, lo=1, hi=4096, doc="hidden units of the MLP (14x14 pooled images, one hidden layer)")
    lr_sweep_points: int = param(5, lo=1, hi=15, doc="learning rates per optimizer, log-spaced around lr")
    lr_sweep_factor: float = param(3.0, lo=1.0, hi=100.0, doc="ratio of neighbouring learning rates in the sweep")
    lr_final: float = param(0.01, lo=0.0, hi=1.0, doc="cosine schedule: final lr as a fraction of the initial")
    sgd_lr: float = param(0.05, lo=0.0, hi=10.0, doc="centre of SGD+momentum's lr sweep (same ratios as the others)")
    eval_points: int = param(10, lo=1, hi=1000, doc="evaluations along the long run")
    memory_steps: int = param(24000, lo=200, hi=10**7, doc="steps of the long-term-memory problem")
    memory_seeds: int = param(6, lo=2, hi=100, doc="seeds of the long-term-memory problem")
    memory_factor: float = param(10.0, lo=1.0, hi=1e6, doc="gradient scale change in that problem")
    counterexample_steps: int = param(100000, lo=100, hi=10**8, doc="steps of Reddi et al.'s counterexample")
    counterexample_seeds: int = param(16, lo=2, hi=1000, doc="gradient streams of its stochastic form")
    lm_steps: int = param(12000, lo=2, hi=10**7, doc="section 7: updates of the word-level language model")
    lm_warmup: int = param(200, lo=0, hi=10**6, doc="linear warm-up of the lr over the first updates")
    lm_decay_from: int = param(9600, lo=1, hi=10**7, doc="the lr is constant until this update, then a cosine")
    lm_lr_final: float = param(0.01, lo=0.0, hi=1.0, doc="final lr as a fraction of the initial")
    lm_batch: int = param(64, lo=1, hi=4096, doc="next-word predictions per mini-batch")
    lm_vocab: int = param(2048, lo=2, hi=10**6, doc="most frequent training tokens kept (with <unk>)")
    lm_context: int = param(3, lo=1, hi=64, doc="previous tokens the model sees")
    lm_width: int = param(32, lo=1, hi=4096, doc="embedding width d")
    lm_hidden: int = param(32, lo=1, hi=4096, doc="hidden ReLU units")
    lm_seeds: int = param(3, lo=2, hi=100, doc="seeds per set, paired across optimizers and configurations")
    lm_lr: float = param(3e-3, lo=0.0, hi=1.0, doc="centre of the adaptive optimizers' lr sweep")
    lm_sgd_lr: float = param(0.1, lo=0.0, hi=100.0, doc="centre of SGD+momentum's lr sweep")
    lm_lr_points: int = param(3, lo=1, hi=15)
    lm_lr_factor: float = param(3.0, lo=1.0, hi=100.0)
    lm_weight_decay: float = param(5e-4, lo=0.0, hi=1.0, doc="coupled (Adam, AdaX, SGD); the AdaX reference default")
    lm_decoupled_weight_decay: float = param(0.05, lo=0.0, hi=1.0, doc="decoupled (AdamW, AdaX-W); AdaX-W's default")
    lm_eval_points: int = param(8, lo=1, hi=1000, doc="validation evaluations along the run")
    lm_val_windows: int = param(4096, lo=1, hi=10**6, doc="validation windows of each curve point")
    lm_final_windows: int = param(16384, lo=1, hi=10**6, doc="validation and test windows of the final numbers")
    lm_workers: int = param(2, lo=1, hi=64, doc="processes (one thread each) of the training stage")


if __name__ == "__main__":
    raise SystemExit(main())
