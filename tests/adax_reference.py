"""AdaX exactly as it was before issue 21 (commit 2a7e52c, kexue/optim.py), kept verbatim as the
reference the default path must match bit for bit: the committed reports ran this code."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable

import torch
from torch.optim import Optimizer

from kexue.optim import adax_log_c


def _check(name: str, value: float, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"invalid {name}={value!r}: must be {rule}")


class ReferenceAdaX(Optimizer):
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
