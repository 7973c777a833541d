r"""An energy-based model trained with Langevin dynamics and a replay buffer (chapter 02).

Derived in `notebooks/02_energy_based_model.py`; seed article kexue.fm/archives/6612
(on Du & Mordatch, *Implicit Generation and Generalization in Energy-Based Models*, 2019).

The model is the Boltzmann distribution of an energy $U_\theta$ (notebook section 1):

$$q_\theta(x) = e^{-U_\theta(x)} / Z_\theta,\qquad Z_\theta = \int e^{-U_\theta(x)}\,dx,$$

and the gradient of the negative log-likelihood $L_\theta = \mathbb E_{p}[-\log q_\theta]$ is

$$\nabla_\theta L_\theta = \mathbb E_{x\sim p}[\nabla_\theta U_\theta(x)] - \mathbb E_{x\sim q_\theta}[\nabla_\theta U_\theta(x)].$$

Samples of $q_\theta$ come from the Langevin chain (section 2), whose stationary
distribution is $q_\theta$ as $\varepsilon \to 0$ (section 3 measures the bias at finite $\varepsilon$):

$$x_{t+1} = x_t - \tfrac{\varepsilon}{2}\nabla_x U(x_t) + \sqrt{\varepsilon}\,s\,\xi_t,\qquad \xi_t\sim\mathcal N(0, I),$$

with noise scale $s = 1$ for the equation itself; $s < 1$ samples $e^{-U/s^2}$ instead.
Chains start from a replay buffer (section 4) and the loss (section 5) is the
contrastive estimate of $\nabla_\theta L_\theta$ plus a squared-energy term.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import param

REG_FORMS = ("paper", "article")


def _progress(iterable, desc: str | None, total: int):
    """`iterable` with a terminal progress bar (`kexue.report.progress`) when `desc` is given."""
    if not desc:
        return iterable
    from .report import progress
    return progress(iterable, desc=desc, total=total)


# --- Langevin dynamics (notebook section 2) ---

def langevin(energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_steps: int, step_size: float,
             noise_scale: float | torch.Tensor = 1.0, clamp: tuple[float, float] | None = None,
             generator: torch.Generator | None = None, desc: str | None = None) -> torch.Tensor:
    r"""Run `n_steps` of $x \leftarrow x - \frac{\varepsilon}{2}\nabla U(x) + \sqrt{\varepsilon}\,s\,\xi$ from `x`.

    `energy(x)` returns one energy per sample: shape `x.shape[:k]` for a k-dim batch
    ([N] for x [N, ...]; [S, N] for an ensemble's x [S, N, ...]). `noise_scale` may be a
    tensor broadcasting against x (one s per ensemble member). Gradients are taken with
    `torch.autograd.grad` with respect to x only, so no `.grad` is left on the energy's
    parameters. `clamp=(lo, hi)` projects onto the data box after each step (images).
    `desc` draws a progress bar on the terminal. Returns a detached tensor shaped like `x`.
    """
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 0:
        raise ValueError(f"n_steps={n_steps!r} must be an integer >= 0")
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size={step_size!r} must be a finite number > 0")
    s = torch.as_tensor(noise_scale, dtype=torch.float64)
    if not (torch.isfinite(s).all() and (s >= 0).all()):
        raise ValueError(f"noise_scale={noise_scale!r} must be finite and >= 0")
    noise_std = math.sqrt(step_size) * (noise_scale.to(x) if torch.is_tensor(noise_scale) else noise_scale)
    x = x.detach().clone()
    for _ in _progress(range(n_steps), desc, n_steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            e = energy(x)
            if e.ndim == 0 or e.shape != x.shape[:e.ndim]:
                raise ValueError(f"energy must return one value per sample: x has shape {tuple(x.shape)}, "
                                 f"energy {tuple(e.shape)}")
            (grad,) = torch.autograd.grad(e.sum(), x)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = x.detach() - 0.5 * step_size * grad + noise_std * noise
        if clamp is not None:
            x = x.clamp(*clamp)
    return x.detach()


def reference_sampler_scales(grad_step: float, noise_std: float) -> tuple[float, float]:
    r"""(step_size, noise_scale) of `langevin` equal to the update $x \leftarrow x - \lambda\nabla U + \sigma\xi$.

    Matching the drift gives $\varepsilon = 2\lambda$, matching the noise
    $\sqrt{\varepsilon}\,s = \sigma$ gives $s = \sigma/\sqrt{2\lambda}$. The chain then samples
    $e^{-U/T}$ with temperature $T = s^2 = \sigma^2/(2\lambda)$ (notebook section 6).
    """
    if not (grad_step > 0 and noise_std >= 0):
        raise ValueError(f"grad_step={grad_step!r} must be > 0 and noise_std={noise_std!r} >= 0")
    return 2.0 * grad_step, noise_std / math.sqrt(2.0 * grad_step)


def gaussian_chain_variance(step_size: float, variance: float = 1.0, noise_scale: float = 1.0) -> float:
    r"""Stationary variance of the Langevin chain on $U(x) = x^2/(2\sigma^2)$ (notebook section 3).

    The chain is $x' = (1 - \frac{\varepsilon}{2\sigma^2})x + \sqrt\varepsilon\,s\,\xi$, an AR(1) process with
    stationary variance $\varepsilon s^2 / (1 - (1-\frac{\varepsilon}{2\sigma^2})^2)
    = s^2\sigma^2 / (1 - \frac{\varepsilon}{4\sigma^2})$; it exists only for $\varepsilon < 4\sigma^2$.
    """
    if not 0 < step_size < 4 * variance:
        raise ValueError(f"step_size={step_size!r}: the chain is stable only for 0 < step_size < 4*variance "
                         f"= {4 * variance!r}")
    return noise_scale ** 2 * variance / (1 - step_size / (4 * variance))


# --- the replay buffer (notebook section 4) ---

class ReplayBuffer:
    """A fixed-size store of past chain ends, from which new chains start.

    `sample(n)` returns n starting points: each one, independently, is a fresh `init_fn`
    sample with probability `reinit_prob` (always while the buffer is empty) and
    otherwise a uniformly drawn stored sample. `push(x)` stores samples, overwriting
    the oldest once `capacity` is reached (a ring). `last_reinit` counts the fresh
    starts of the latest `sample` call.
    """

    def __init__(self, capacity: int, reinit_prob: float = 0.05,
                 init_fn: Callable[[int], torch.Tensor] | None = None, generator: torch.Generator | None = None):
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity={capacity!r} must be an integer >= 1")
        if not (isinstance(reinit_prob, (int, float)) and 0.0 <= reinit_prob <= 1.0):
            raise ValueError(f"reinit_prob={reinit_prob!r} must be in [0, 1]")
        if not callable(init_fn):
            raise ValueError(f"init_fn={init_fn!r} must be a callable n -> n fresh samples")
        self.capacity, self.reinit_prob, self.init_fn, self.generator = capacity, float(reinit_prob), init_fn, generator
        self.storage: torch.Tensor | None = None
        self.size = 0          # filled slots
        self.next = 0          # slot the next pushed sample goes to
        self.last_reinit = 0

    def __len__(self) -> int:
        return self.size

    def sample(self, n: int) -> torch.Tensor:
        fresh = self.init_fn(n)
        if self.size == 0:
            self.last_reinit = n
            return fresh
        reinit = torch.rand(n, generator=self.generator) < self.reinit_prob          # [n]
        idx = torch.randint(self.size, (n,), generator=self.generator)
        out = self.storage[idx.to(self.storage.device)].to(fresh.device).clone()
        mask = reinit.to(fresh.device)
        out[mask] = fresh[mask]
        self.last_reinit = int(reinit.sum())
        return out

    def push(self, x: torch.Tensor) -> None:
        x = x.detach()
        if self.storage is None:
            self.storage = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype, device=x.device)
        elif x.shape[1:] != self.storage.shape[1:]:
            raise ValueError(f"pushed samples of shape {tuple(x.shape[1:])}, buffer holds {tuple(self.storage.shape[1:])}")
        x = x[-self.capacity:]
        slots = (self.next + torch.arange(len(x))) % self.capacity
        self.storage[slots.to(self.storage.device)] = x.to(self.storage.device)
        self.next = int((self.next + len(x)) % self.capacity)
        self.size = min(self.capacity, self.size + len(x))


# --- the loss (notebook section 5) ---

def contrastive_divergence(e_real: torch.Tensor, e_fake: torch.Tensor) -> torch.Tensor:
    r"""$\frac1N\sum U(x_r) - \frac1M\sum U(x_f)$ (means over the last dim, one value per ensemble member).

    Its parameter gradient is the estimator of $\nabla_\theta L_\theta$ when the fake samples are held
    fixed (they are: `langevin` returns detached tensors)."""
    return e_real.mean(-1) - e_fake.mean(-1)


def ebm_loss(e_real: torch.Tensor, e_fake: torch.Tensor, alpha: float | torch.Tensor = 0.0,
             form: str | list[str] = "paper") -> torch.Tensor:
    r"""Contrastive divergence plus a squared-energy term of weight $\alpha$.

    * `paper` (Du & Mordatch's paper and code): $+\alpha\,(\overline{U_r^2} + \overline{U_f^2})$, an L2
      penalty that pulls both energies towards 0;
    * `article` (the formula in kexue.fm/archives/6612): $+\alpha\,(\overline{U_r^2} - \overline{U_f^2})$,
      the contrastive divergence of the energy $U + \alpha U^2$, which does not bound $|U|$.

    Means over the last dim: a scalar for [N] energies, one loss per member for [S, N]
    (then `alpha` and `form` may be given per member).
    """
    forms = form if isinstance(form, (list, tuple)) else [form]
    if any(f not in REG_FORMS for f in forms):
        raise ValueError(f"form={form!r}: must be one of {REG_FORMS}")
    sign = (torch.tensor([1.0 if f == "paper" else -1.0 for f in forms], dtype=e_real.dtype, device=e_real.device)
            if isinstance(form, (list, tuple)) else (1.0 if form == "paper" else -1.0))
    return contrastive_divergence(e_real, e_fake) + alpha * (e_real.pow(2).mean(-1) + sign * e_fake.pow(2).mean(-1))


def per_sample_grads(energy: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U(x_i) [N], flattened parameter gradients of U(x_i) [N, P]): the per-sample terms of the
    contrastive estimator (notebook sections 5 and 10), one backward pass per sample."""
    params = list(energy.parameters())
    energies, grads = [], []
    for xi in x:
        e = energy(xi[None])[0]
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(e, params)]))
        energies.append(e.detach())
    return torch.stack(energies), torch.stack(grads)


# --- energies ---

class MLPEnergy(nn.Module):
    """U(x) for 2-D points, x [N, 2] -> [N]; smooth (SiLU) so that the Langevin drift is too.

    With `members=S > 1` it is S independent MLPs evaluated in one batched matmul,
    x [S, N, 2] -> [S, N]: S seeds or ablation settings train at the cost of about one
    on a CPU, where these small layers are dominated by per-call overhead. Each member
    has its own weights and sees only its own slice, so with an element-wise optimizer
    (Adam) on the summed loss each trains exactly as it would alone.
    """

    def __init__(self, in_dim: int = 2, hidden: int = 64, layers: int = 3, members: int = 1):
        super().__init__()
        self.members = members
        dims = [in_dim] + [hidden] * layers + [1]
        # nn.Linear's default initialisation, per member: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        self.weights = nn.ParameterList(
            nn.Parameter((torch.rand(members, a, b) * 2 - 1) / math.sqrt(a)) for a, b in zip(dims[:-1], dims[1:]))
        self.biases = nn.ParameterList(
            nn.Parameter((torch.rand(members, 1, b) * 2 - 1) / math.sqrt(a)) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = x.ndim == 2
        if single and self.members != 1:
            raise ValueError(f"an ensemble of {self.members} needs x [S, N, d], got {tuple(x.shape)}")
        h = x.unsqueeze(0) if single else x                                   # [S, N, d]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)                                        # [S, N, out]
            if i < len(self.weights) - 1:
                h = F.silu(h)
        e = h.squeeze(-1)                                                     # [S, N]
        return e[0] if single else e

    def member(self, s: int) -> "MLPEnergy":
        """Member s as a stand-alone model (a copy of its weights)."""
        if not 0 <= s < self.members:
            raise ValueError(f"member s={s!r}: this ensemble has members 0..{self.members - 1}")
        dims = [self.weights[0].shape[1]] + [w.shape[2] for w in self.weights]
        one = MLPEnergy(dims[0], dims[1], len(dims) - 2).to(self.weights[0])
        with torch.no_grad():
            for mine, theirs in zip(one.parameters(), self.parameters()):
                mine.copy_(theirs[s:s + 1])
        return one


class ConvEnergy(nn.Module):
    """U(x) for 28x28 grey images: x [N, 1, 28, 28] -> [N], every layer spectrally normalised
    (so U is roughly 1-Lipschitz in x: notebook section 7 measures what that implies)."""

    def __init__(self, width: int = 16):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        w = width
        self.net = nn.Sequential(
            sn(nn.Conv2d(1, w, 3, 1, 1)), nn.SiLU(),                  # [N, w, 28, 28]
            sn(nn.Conv2d(w, 2 * w, 3, 2, 1)), nn.SiLU(),              # [N, 2w, 14, 14]
            sn(nn.Conv2d(2 * w, 4 * w, 3, 2, 1)), nn.SiLU(),          # [N, 4w, 7, 7]
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),                     # [N, 4w]
            sn(nn.Linear(4 * w, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def uniform_init(shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> Callable[[int], torch.Tensor]:
    """init_fn: n -> [n, *shape] uniform on [lo, hi] (the article's 5% fresh starts)."""
    return lambda n: (lo + (hi - lo) * torch.rand((n, *shape), generator=generator)).to(device)


# --- training (notebook section 5) ---

def _per_member(value, members: int, name: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * members
    if len(values) != members:
        raise ValueError(f"{name}={value!r}: need one value or {members} (one per member)")
    return values


class EBMTrainer:
    """One update = sample fake data with K Langevin steps (from the buffer, or from noise when
    `use_buffer` is False), push them to the buffer, one optimizer step on `ebm_loss`.

    For an ensemble energy (`energy.members = S > 1`, data [S, N, ...]) `noise_scale`, `alpha`,
    `form` and `use_buffer` may be lists, one value per member; each member has its own buffer.
    Sampling runs with the energy in eval mode (spectral norm's power iteration then runs once per
    update, in the loss's forward, not once per Langevin step).
    """

    def __init__(self, energy: nn.Module, optimizer: torch.optim.Optimizer, init_fn: Callable[[int], torch.Tensor],
                 n_steps: int, step_size: float, noise_scale=1.0, alpha=0.1, form: str = "paper",
                 use_buffer=True, buffer_size: int = 10000, reinit_prob: float = 0.05,
                 clamp: tuple[float, float] | None = None, generator: torch.Generator | None = None):
        self.members = getattr(energy, "members", 1)
        forms = _per_member(form, self.members, "form")
        if any(f not in REG_FORMS for f in forms):
            raise ValueError(f"form={form!r}: must be one of {REG_FORMS}")
        self.energy, self.optimizer, self.init_fn = energy, optimizer, init_fn
        self.n_steps, self.step_size, self.clamp, self.generator = n_steps, step_size, clamp, generator
        self.form = forms[0] if self.members == 1 or len(set(forms)) == 1 else forms
        scales = _per_member(noise_scale, self.members, "noise_scale")
        alphas = _per_member(alpha, self.members, "alpha")
        if self.members == 1:
            self.noise_scale, self.alpha = scales[0], alphas[0]
        else:
            self.noise_scale = torch.tensor(scales, dtype=torch.float32).reshape(-1, 1, 1)   # over [S, N, d]
            self.alpha = torch.tensor(alphas, dtype=torch.float32)
        self.buffers = [ReplayBuffer(buffer_size, reinit_prob, init_fn, generator) if b else None
                        for b in _per_member(use_buffer, self.members, "use_buffer")]

    @property
    def buffer(self) -> ReplayBuffer | None:
        return self.buffers[0]

    def chain_starts(self, n: int) -> torch.Tensor:
        starts = [b.sample(n) if b is not None else self.init_fn(n) for b in self.buffers]
        return starts[0] if self.members == 1 else torch.stack(starts)

    def sample(self, x0: torch.Tensor, n_steps: int | None = None, desc: str | None = None) -> torch.Tensor:
        was_training = self.energy.training
        self.energy.eval()
        scale = self.noise_scale.to(x0.device) if torch.is_tensor(self.noise_scale) else self.noise_scale
        x = langevin(self.energy, x0, self.n_steps if n_steps is None else n_steps, self.step_size,
                     scale, self.clamp, self.generator, desc)
        self.energy.train(was_training)
        return x

    def step(self, x_real: torch.Tensor, n_fake: int | None = None) -> dict[str, torch.Tensor]:
        """One update; returns per-member statistics ([S] tensors, scalars for a single model)."""
        axis = 0 if self.members == 1 else 1                          # the sample axis
        n_real = x_real.shape[axis]
        x_fake = self.sample(self.chain_starts(n_real if n_fake is None else n_fake))
        for s, b in enumerate(self.buffers):
            if b is not None:
                b.push(x_fake if self.members == 1 else x_fake[s])
        e = self.energy(torch.cat([x_real, x_fake], axis))          # one forward: [N + M] or [S, N + M]
        e_real, e_fake = e.narrow(-1, 0, n_real), e.narrow(-1, n_real, e.shape[-1] - n_real)
        alpha = self.alpha.to(e.device) if torch.is_tensor(self.alpha) else self.alpha
        loss = ebm_loss(e_real, e_fake, alpha, self.form)
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.optimizer.step()
        with torch.no_grad():
            return {"loss": loss.detach().cpu(), "cd": contrastive_divergence(e_real, e_fake).cpu(),
                    "e_real": e_real.mean(-1).cpu(), "e_fake": e_fake.mean(-1).cpu()}


def fit(trainer: EBMTrainer, sample_real: Callable[[int, torch.Generator], torch.Tensor], steps: int, batch: int,
        generator: torch.Generator, device: torch.device | str = "cpu", n_fake: int | None = None,
        log_every: int = 0, desc: str | None = None) -> list[dict]:
    """Run `steps` updates on real batches drawn with `generator` (one batch per member).

    Returns one record every `log_every` steps and the last one, each with per-member lists and
    `diverged` (per member: the loss has been non-finite at some step). A single model stops at
    its first non-finite loss. `desc` draws a progress bar on the terminal.
    """
    history, diverged = [], torch.zeros(trainer.members, dtype=torch.bool)
    bar = _progress(range(1, steps + 1), desc, steps)
    for step in bar:
        if trainer.members == 1:
            x = sample_real(batch, generator)
        else:
            x = torch.stack([sample_real(batch, generator) for _ in range(trainer.members)])
        stats = trainer.step(x.to(device), n_fake)
        diverged |= ~torch.isfinite(stats["loss"].reshape(-1))
        last = step == steps or (trainer.members == 1 and bool(diverged.all()))
        if (log_every and step % log_every == 0) or last:
            history.append({"step": step, "diverged": diverged.tolist(),
                            **{k: v.reshape(-1).tolist() for k, v in stats.items()}})
        if last:
            break
    if hasattr(bar, "close"):      # a progress bar left early (divergence)
        bar.close()
    return history


def ebm_adam(params, lr: float) -> torch.optim.Optimizer:
    """Adam with beta1 = 0, as in Du & Mordatch's code: no momentum on a gradient whose negative
    half changes with every batch of chains."""
    return torch.optim.Adam(params, lr=lr, betas=(0.0, 0.999))


# --- chapter 02 experiment parameters (params.yaml `ebm`) ---

@dataclass
class EbmParams:
    """params.yaml `ebm`: the chapter-02 experiments (validated by kexue.config)."""

    step_size: float = param(0.005, lo=1e-8, hi=1.0, doc="Langevin step epsilon, 2-D (article reference 1/200)")
    chain_steps: int = param(20, lo=1, hi=10**5, doc="Langevin steps K per update (article 20-50)")
    alpha: float = param(0.1, lo=0.0, hi=100.0, doc="weight of the squared-energy term, 2-D")
    reinit_prob: float = param(0.05, lo=0.0, hi=1.0, doc="fraction of chains restarted from noise")
    ref_grad_step: float = param(10.0, lo=1e-8, hi=1e6, doc="reference code's gradient step lambda")
    ref_noise_std: float = param(0.005, lo=0.0, hi=10.0, doc="reference code's noise std sigma")
    toy_std: float = param(0.1, lo=1e-3, hi=1.0, doc="component std of the ring and grid")
    toy_steps: int = param(1000, lo=1, hi=10**7)
    toy_batch: int = param(128, lo=2, hi=10**6)
    toy_hidden: int = param(64, lo=1, hi=4096)
    toy_lr: float = param(3e-3, lo=0.0, hi=1.0)
    toy_buffer: int = param(10000, lo=1, hi=10**8)
    toy_seeds: int = param(3, lo=2, hi=100)
    toy_eval_samples: int = param(2000, lo=10, hi=10**7)
    toy_grid: int = param(200, lo=10, hi=4000, doc="grid cells per side for the KL to the true density")
    stationary_steps: int = param(500, lo=1, hi=10**7, doc="long-chain steps on a learned 2-D energy")
    image_steps: int = param(200, lo=1, hi=10**7)
    image_batch: int = param(64, lo=2, hi=4096)
    image_width: int = param(16, lo=1, hi=1024)
    image_lr: float = param(3e-4, lo=0.0, hi=1.0)
    image_alpha: float = param(1.0, lo=0.0, hi=100.0, doc="squared-energy weight (reference code: 1)")
    image_chain_steps: int = param(20, lo=1, hi=10**5)
    image_buffer: int = param(10000, lo=1, hi=10**7)
    image_eval_samples: int = param(1000, lo=10, hi=10000)
    fresh_chain_steps: int = param(60, lo=1, hi=10**6, doc="steps of the chains started from noise after training")
    long_chain_steps: int = param(1000, lo=1, hi=10**6)
    ood_samples: int = param(2000, lo=10, hi=5000, doc="Fashion test images and MNIST digits for the AUROC")
