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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ROOT, param

REG_FORMS = ("paper", "article")


def _progress(iterable, desc: str | None, total: int):
    """`iterable` with a terminal progress bar (`kexue.report.progress`) when `desc` is given."""
    if not desc:
        return iterable
    from .report import progress
    return progress(iterable, desc=desc, total=total)


# --- Langevin dynamics (notebook section 2) ---

def _noise(x: torch.Tensor, generator: torch.Generator | None, groups: torch.Tensor | None) -> torch.Tensor:
    """N(0, I) shaped like x. With `groups` (member -> seed index, x [S, ...]) one draw per seed is
    shared by every member of that seed: arms compared pairwise see the same noise (common random
    numbers), so their difference is the arm's effect, not the draw's."""
    if groups is None:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    n_groups = int(groups.max()) + 1
    draw = torch.randn((n_groups, *x.shape[1:]), generator=generator, dtype=x.dtype)
    return draw[groups.cpu()].to(x.device)


def _check_groups(groups, x: torch.Tensor):
    if groups is None:
        return None
    groups = torch.as_tensor(groups, dtype=torch.long)
    if groups.ndim != 1 or len(groups) != x.shape[0] or (groups < 0).any():
        raise ValueError(f"groups={groups.tolist()!r}: need one seed index >= 0 per member, "
                         f"{x.shape[0]} members")
    return groups

def langevin(energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_steps: int, step_size: float,
             noise_scale: float | torch.Tensor = 1.0, clamp: tuple[float, float] | None = None,
             generator: torch.Generator | None = None, desc: str | None = None,
             groups: torch.Tensor | None = None) -> torch.Tensor:
    r"""Run `n_steps` of $x \leftarrow x - \frac{\varepsilon}{2}\nabla U(x) + \sqrt{\varepsilon}\,s\,\xi$ from `x`.

    `energy(x)` returns one energy per sample: shape `x.shape[:k]` for a k-dim batch
    ([N] for x [N, ...]; [S, N] for an ensemble's x [S, N, ...]). `noise_scale` may be a
    tensor broadcasting against x (one s per ensemble member). Gradients are taken with
    `torch.autograd.grad` with respect to x only, so no `.grad` is left on the energy's
    parameters. `clamp=(lo, hi)` projects onto the data box after each step (images).
    `desc` draws a progress bar on the terminal. `groups` (ensembles): member -> seed index, the
    noise drawn once per seed (`_noise`). Returns a detached tensor shaped like `x`.
    """
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 0:
        raise ValueError(f"n_steps={n_steps!r} must be an integer >= 0")
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size={step_size!r} must be a finite number > 0")
    s = torch.as_tensor(noise_scale, dtype=torch.float64)
    if not (torch.isfinite(s).all() and (s >= 0).all()):
        raise ValueError(f"noise_scale={noise_scale!r} must be finite and >= 0")
    groups = _check_groups(groups, x)
    noise_std = math.sqrt(step_size) * (noise_scale.to(x) if torch.is_tensor(noise_scale) else noise_scale)
    x = x.detach().clone()
    for _ in _progress(range(n_steps), desc, n_steps):
        grad = _energy_grad(energy, x)
        x = x.detach() - 0.5 * step_size * grad + noise_std * _noise(x, generator, groups)
        if clamp is not None:
            x = x.clamp(*clamp)
    return x.detach()


def _energy_grad(energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """grad_x sum U(x), checking that `energy` gives one value per sample; no parameter grads kept."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        e = energy(x)
        if e.ndim == 0 or e.shape != x.shape[:e.ndim]:
            raise ValueError(f"energy must return one value per sample: x has shape {tuple(x.shape)}, "
                             f"energy {tuple(e.shape)}")
        (grad,) = torch.autograd.grad(e.sum(), x)
    return grad


def igebm_langevin(energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_steps: int,
                   step_size: float = 10.0, noise_std: float = 0.005, grad_clip: float | None = 0.01,
                   clamp: tuple[float, float] | None = (0.0, 1.0), generator: torch.Generator | None = None,
                   desc: str | None = None, groups: torch.Tensor | None = None) -> torch.Tensor:
    r"""The sampler of Du & Mordatch's released code (`train.py`, `langevin_step`; notebook section 6):

    $$\tilde x = x_t + \sigma\xi_t,\qquad x_{t+1} = \mathrm{clip}_{[0,1]}\big(\tilde x - \lambda\,
      \mathrm{clip}_{[-c, c]}\nabla U(\tilde x)\big),$$

    noise first, the gradient taken at the *noised* point, each gradient component clipped to
    $\pm c$ (`proj_norm`, 0.01 in the published commands, `proj_norm_type='li'`), then the step
    $\lambda$ (`step_lr`, 10) and the projection onto the image box. `grad_clip=None` skips the
    clip, `clamp=None` the projection. Shapes, `groups`, `desc` as in `langevin`.
    """
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 0:
        raise ValueError(f"n_steps={n_steps!r} must be an integer >= 0")
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size={step_size!r} must be a finite number > 0")
    if not (isinstance(noise_std, (int, float)) and math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std={noise_std!r} must be a finite number >= 0")
    if grad_clip is not None and not (math.isfinite(grad_clip) and grad_clip > 0):
        raise ValueError(f"grad_clip={grad_clip!r} must be None or a finite number > 0")
    groups = _check_groups(groups, x)
    x = x.detach().clone()
    for _ in _progress(range(n_steps), desc, n_steps):
        x = x + noise_std * _noise(x, generator, groups)                     # noise first
        grad = _energy_grad(energy, x)                                      # at the noised point
        if grad_clip is not None:
            grad = grad.clamp(-grad_clip, grad_clip)
        x = x.detach() - step_size * grad
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

    Each stored sample carries its *age*: how many chain runs (training updates) it has been through
    since its chain started from `init_fn`. `sample` keeps the ages of the starts it returns in
    `last_ages` (0 for a fresh start), and `push(x, ages)` stores new ones; `push(x)` after `sample`
    stores `last_ages + 1` (the chain just ran once more), as a training step does.

    Each stored sample also carries its *lineage*: the id of the fresh start its chain descends from
    (`sample` draws stored samples with replacement, so one start can have many descendants). Ids cost
    no random numbers, so tracking them changes no sample. `last_lineage` holds the ids of the latest
    `sample`; `push(x)` after it stores them (new ids otherwise). `effective_lineages` counts how many
    independent chains a set of stored samples amounts to.
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
        self.ages = torch.zeros(capacity, dtype=torch.long)     # chain runs behind each stored sample
        self.last_ages: torch.Tensor | None = None
        self.lineage = torch.zeros(capacity, dtype=torch.long)  # id of the fresh start behind each stored sample
        self.last_lineage: torch.Tensor | None = None
        self.next_lineage = 0                                   # next unused id
        self.size = 0          # filled slots
        self.next = 0          # slot the next pushed sample goes to
        self.last_reinit = 0

    def __len__(self) -> int:
        return self.size

    def sample(self, n: int, fresh: torch.Tensor | None = None) -> torch.Tensor:
        """n chain starts; `fresh` (n fresh samples, e.g. shared by paired arms) replaces `init_fn(n)`."""
        fresh = self.init_fn(n) if fresh is None else fresh
        if len(fresh) != n:
            raise ValueError(f"fresh has {len(fresh)} samples, need n={n}")
        if self.size == 0:
            self.last_reinit = n
            self.last_ages = torch.zeros(n, dtype=torch.long)
            self.last_lineage = self._new_lineages(n)
            return fresh
        reinit = torch.rand(n, generator=self.generator) < self.reinit_prob          # [n]
        idx = torch.randint(self.size, (n,), generator=self.generator)
        out = self.storage[idx.to(self.storage.device)].to(fresh.device).clone()
        mask = reinit.to(fresh.device)
        out[mask] = fresh[mask]
        self.last_reinit = int(reinit.sum())
        self.last_ages = torch.where(reinit, 0, self.ages[idx])
        self.last_lineage = self.lineage[idx].clone()
        self.last_lineage[reinit] = self._new_lineages(int(reinit.sum()))
        return out

    def _new_lineages(self, n: int) -> torch.Tensor:
        ids = torch.arange(self.next_lineage, self.next_lineage + n, dtype=torch.long)
        self.next_lineage += n
        return ids

    def push(self, x: torch.Tensor, ages: torch.Tensor | None = None) -> None:
        """Store x ([n, ...]); `ages` [n] defaults to the latest `sample`'s ages + 1 when it drew n starts,
        else to 1 (samples of one chain run)."""
        x = x.detach()
        if ages is None:
            same = self.last_ages is not None and len(self.last_ages) == len(x)
            ages = self.last_ages + 1 if same else torch.ones(len(x), dtype=torch.long)
        ages = torch.as_tensor(ages, dtype=torch.long).cpu()
        if ages.shape != (len(x),):
            raise ValueError(f"ages has shape {tuple(ages.shape)}, need ({len(x)},)")
        if self.storage is None:
            self.storage = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype, device=x.device)
        elif x.shape[1:] != self.storage.shape[1:]:
            raise ValueError(f"pushed samples of shape {tuple(x.shape[1:])}, buffer holds {tuple(self.storage.shape[1:])}")
        same = self.last_lineage is not None and len(self.last_lineage) == len(x)
        lineage = self.last_lineage if same else self._new_lineages(len(x))
        x, ages, lineage = x[-self.capacity:], ages[-self.capacity:], lineage[-self.capacity:]
        slots = (self.next + torch.arange(len(x))) % self.capacity
        self.storage[slots.to(self.storage.device)] = x.to(self.storage.device)
        self.ages[slots] = ages
        self.lineage[slots] = lineage
        self.next = int((self.next + len(x)) % self.capacity)
        self.size = min(self.capacity, self.size + len(x))


def effective_lineages(lineage: torch.Tensor) -> float:
    r"""How many independent chains the samples with these lineage ids amount to: the inverse Simpson
    index $n^2/\sum_k c_k^2$ of the counts $c_k$ per id ($n$ when every id is distinct, 1 when all share
    one). It is the $n$ of independent draws whose chance that two picks share a chain is the same.
    Samples of one lineage diverged after they split, so this is a lower bound on the independent ones."""
    ids = torch.as_tensor(lineage).reshape(-1)
    if ids.numel() == 0:
        raise ValueError("effective_lineages: no samples")
    counts = torch.unique(ids, return_counts=True)[1].double()
    return float(counts.sum() ** 2 / (counts ** 2).sum())


def lineage_reverse_kl(samples: torch.Tensor, lineage: torch.Tensor, centres: torch.Tensor, std: float,
                       threshold: float = 3.0) -> tuple[float, float]:
    r"""The mode histogram's Miller–Madow reverse KL (`kexue.toy2d.mode_reverse_kl`) with the bias term
    $(m-1)/2n$ taken at the *effective* number of independent chains among the high-quality samples
    (`effective_lineages`) instead of their count $n$: the correction a histogram of clustered samples
    needs, since samples of one lineage fall in one mode more often than independent ones would.
    Returns (reverse KL, effective number of lineages among the high-quality samples); nan if none."""
    from .toy2d import mode_reverse_kl, nearest_centre
    if len(samples) != len(lineage):
        raise ValueError(f"{len(samples)} samples but {len(lineage)} lineage ids")
    _, dist = nearest_centre(samples, centres)
    hq = dist <= threshold * std
    if not bool(hq.any()):
        return float("nan"), 0.0
    idx = nearest_centre(samples[hq], centres)[0]
    m, n = int(torch.unique(idx).numel()), int(hq.sum())
    n_eff = effective_lineages(torch.as_tensor(lineage)[hq.cpu()])
    plug_in = mode_reverse_kl(samples, centres, std, threshold)
    return plug_in - (m - 1) / (2 * n_eff), n_eff


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

    def __init__(self, in_dim: int = 2, hidden: int = 64, layers: int = 3, members: int = 1,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.members = members
        dims = [in_dim] + [hidden] * layers + [1]
        # nn.Linear's default initialisation, per member: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        self.weights = nn.ParameterList(
            nn.Parameter((torch.rand(members, a, b, generator=generator) * 2 - 1) / math.sqrt(a))
            for a, b in zip(dims[:-1], dims[1:]))
        self.biases = nn.ParameterList(
            nn.Parameter((torch.rand(members, 1, b, generator=generator) * 2 - 1) / math.sqrt(a))
            for a, b in zip(dims[:-1], dims[1:]))

    @classmethod
    def from_seeds(cls, seeds: list[int], in_dim: int = 2, hidden: int = 64, layers: int = 3) -> "MLPEnergy":
        """An ensemble whose member s is initialised from `seeds[s]` alone: members of different arms
        that share a seed start from the same weights (paired comparisons are truly paired)."""
        parts = [cls(in_dim, hidden, layers, 1, torch.Generator().manual_seed(int(sd))) for sd in seeds]
        ens = cls(in_dim, hidden, layers, len(seeds))
        with torch.no_grad():
            for mine, *theirs in zip(ens.parameters(), *(p.parameters() for p in parts)):
                mine.copy_(torch.cat(theirs))
        return ens

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


CONV_LAYERS = ((4, 2, 1), (4, 2, 1), (3, 2, 1), (4, 1, 0))   # (kernel, stride, padding): 28 -> 14 -> 7 -> 4 -> 1


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class ConvEnergy(nn.Module):
    r"""U(x) for 28x28 grey images in [0, 1], IGEBM-like and small enough for a CPU (notebook section 11):
    strided convolutions 1 -> w -> 2w -> 4w channels (28 -> 14 -> 7 -> 4 pixels), Swish (SiLU)
    between them, and a last 4x4 convolution to one number; every layer spectrally normalised.

    With `members=S > 1` it is S independent energies in one grouped convolution (`groups=S`):
    x [S, N, 1, 28, 28] -> [S, N]; a single model maps x [N, 1, 28, 28] -> [N]. `seeds` gives
    each member its own initialisation (members of different arms with the same seed start
    equal: paired comparisons are truly paired).

    Spectral normalisation per member (Miyato et al. 2018, as `torch.nn.utils.parametrizations.
    spectral_norm`): the weight of layer l viewed as a matrix $W_s$ [out, in*k*k] is divided by
    $\sigma_s = u_s^\top W_s v_s$, with $u_s, v_s$ from one power iteration per training forward
    (15 at initialisation) and held fixed in eval mode. `frozen()` computes the normalised weights
    once for a whole Langevin chain (they do not change while sampling).

    `normalise_output=False` leaves the last layer (the 4x4 convolution to one number) unnormalised,
    as IGEBM's MNIST network leaves its last dense layer (`fc5`, `spec_norm=False`): the hidden
    layers stay 1-Lipschitz, while the energy's scale, and so its gradient and its contrast
    between data and noise, is learned.
    """

    def __init__(self, width: int = 16, members: int = 1, seeds: list[int] | None = None,
                 normalise_output: bool = True):
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width={width!r} must be an integer >= 1")
        seeds = list(range(members)) if seeds is None else list(seeds)
        if len(seeds) != members:
            raise ValueError(f"need one seed per member: {members} members, {len(seeds)} seeds")
        self.members, self.width, self.normalise_output = members, width, bool(normalise_output)
        self.layers = CONV_LAYERS
        chans = [1, width, 2 * width, 4 * width, 1]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        gens = [torch.Generator().manual_seed(int(sd)) for sd in seeds]
        for i, (k, _, _) in enumerate(self.layers):
            c_in, c_out = chans[i], chans[i + 1]
            bound = 1 / math.sqrt(c_in * k * k)                      # nn.Conv2d's default initialisation
            w = torch.stack([(torch.rand(c_out, c_in, k, k, generator=g) * 2 - 1) * bound for g in gens])
            b = torch.stack([(torch.rand(c_out, generator=g) * 2 - 1) * bound for g in gens])
            self.weights.append(nn.Parameter(w))                     # [S, out, in, k, k]
            self.biases.append(nn.Parameter(b))                      # [S, out]
            u = torch.stack([_unit(torch.randn(c_out, generator=g)) for g in gens])
            self.register_buffer(f"u{i}", u)                          # [S, out]
            self.register_buffer(f"v{i}", torch.zeros(members, c_in * k * k))
            self._power_iteration(i, 15)
        self._frozen: list[torch.Tensor] | None = None

    @torch.no_grad()
    def _power_iteration(self, i: int, n: int) -> None:
        mat = self.weights[i].flatten(2)                                     # [S, out, in*k*k]
        u = getattr(self, f"u{i}")
        for _ in range(n):
            v = _unit(torch.einsum("so,soi->si", u, mat))
            u = _unit(torch.einsum("soi,si->so", mat, v))
        getattr(self, f"u{i}").copy_(u)
        getattr(self, f"v{i}").copy_(v)

    def normalised_weights(self) -> list[torch.Tensor]:
        """W / sigma per layer and member ([S, out, in, k, k]); one power iteration first in training mode."""
        out = []
        for i, w in enumerate(self.weights):
            if i == len(self.weights) - 1 and not self.normalise_output:
                out.append(w)
                continue
            if self.training:
                self._power_iteration(i, 1)
            u, v = getattr(self, f"u{i}"), getattr(self, f"v{i}")
            sigma = torch.einsum("so,soi,si->s", u, w.flatten(2), v)         # [S]
            out.append(w / sigma.reshape(-1, 1, 1, 1, 1))
        return out

    def subset(self, members: list[int]) -> "ConvEnergy":
        """A new ensemble holding copies of the listed members (weights and power-iteration state)."""
        if not members or any(not 0 <= m < self.members for m in members):
            raise ValueError(f"members={members!r}: this ensemble has members 0..{self.members - 1}")
        out = ConvEnergy(self.width, len(members), normalise_output=self.normalise_output).to(self.weights[0])
        idx = torch.tensor(members, device=self.weights[0].device)
        with torch.no_grad():
            for mine, theirs in zip(out.parameters(), self.parameters()):
                mine.copy_(theirs[idx])
            for (_, mine), (_, theirs) in zip(out.named_buffers(), self.named_buffers()):
                mine.copy_(theirs[idx])
        return out.train(self.training)

    @contextmanager
    def frozen(self):
        """Normalised weights computed once (detached) for the duration: one Langevin chain."""
        with torch.no_grad():
            self._frozen = [w.detach() for w in self.normalised_weights()]
        try:
            yield self
        finally:
            self._frozen = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = x.ndim == 4
        if single and self.members != 1:
            raise ValueError(f"an ensemble of {self.members} needs x [S, N, 1, 28, 28], got {tuple(x.shape)}")
        x = x.unsqueeze(0) if single else x                                  # [S, N, 1, 28, 28]
        S, N = x.shape[:2]
        h = x.transpose(0, 1).reshape(N, S, 28, 28)                          # [N, S*1, 28, 28]
        weights = self._frozen if self._frozen is not None else self.normalised_weights()
        for i, ((_, stride, pad), w, b) in enumerate(zip(self.layers, weights, self.biases)):
            h = F.conv2d(h, w.flatten(0, 1), b.flatten(), stride, pad, groups=S)   # [N, S*out, h', w']
            if i < len(self.layers) - 1:
                h = F.silu(h)
        e = h.reshape(N, S).T                                                # [S, N]
        return e[0] if single else e


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


SAMPLERS = ("langevin", "igebm")


class EBMTrainer:
    """One update = sample fake data with K steps of the sampler (from the buffer, or from noise when
    `use_buffer` is False: short-run chains), push them to the buffer, one optimizer step on `ebm_loss`.

    `sampler`: `langevin` (the equation, step `step_size` = epsilon, noise scale `noise_scale`) or
    `igebm` (the released code's update, `igebm_langevin`: step `step_size` = lambda, noise std
    `noise_scale` = sigma, gradient clip `grad_clip`).

    For an ensemble energy (`energy.members = S > 1`, data [S, N, ...]) `noise_scale`, `alpha`,
    `form` and `use_buffer` may be lists, one value per member; each member has its own buffer.
    `groups` (member -> seed index) pairs the members: those with the same seed index get the same
    data batches (`fit`), the same fresh chain starts and Langevin noise, and buffers whose random
    draws come from the same generator (`buffer_seeds`, one per member). Sampling runs with the
    energy in eval mode (spectral norm's power iteration then runs once per update, in the loss's
    forward) and, where the energy has one, inside its `frozen()` context.
    """

    def __init__(self, energy: nn.Module, optimizer: torch.optim.Optimizer, init_fn: Callable[[int], torch.Tensor],
                 n_steps: int, step_size: float, noise_scale=1.0, alpha=0.1, form: str = "paper",
                 use_buffer=True, buffer_size: int = 10000, reinit_prob: float = 0.05,
                 clamp: tuple[float, float] | None = None, generator: torch.Generator | None = None,
                 sampler: str = "langevin", grad_clip: float | None = None, groups: list[int] | None = None,
                 buffer_seeds: list[int] | None = None):
        self.members = getattr(energy, "members", 1)
        forms = _per_member(form, self.members, "form")
        if any(f not in REG_FORMS for f in forms):
            raise ValueError(f"form={form!r}: must be one of {REG_FORMS}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r}: must be one of {SAMPLERS}")
        if groups is not None:
            groups = torch.as_tensor(groups, dtype=torch.long)
            if groups.shape != (self.members,) or (groups < 0).any():
                raise ValueError(f"groups={groups.tolist()!r}: need one seed index >= 0 per member "
                                 f"({self.members} members)")
        self.energy, self.optimizer, self.init_fn = energy, optimizer, init_fn
        self.n_steps, self.step_size, self.clamp, self.generator = n_steps, step_size, clamp, generator
        self.sampler, self.grad_clip, self.groups = sampler, grad_clip, groups
        self.form = forms[0] if self.members == 1 or len(set(forms)) == 1 else forms
        scales = _per_member(noise_scale, self.members, "noise_scale")
        alphas = _per_member(alpha, self.members, "alpha")
        if sampler == "igebm" and len(set(scales)) != 1:
            raise ValueError(f"noise_scale={noise_scale!r}: the igebm sampler takes one noise std for all members")
        if self.members == 1 or sampler == "igebm":
            self.noise_scale = scales[0]
        else:
            self.noise_scale = torch.tensor(scales, dtype=torch.float32)                    # [S], one per member
        self.alpha = alphas[0] if self.members == 1 else torch.tensor(alphas, dtype=torch.float32)
        bseeds = _per_member(buffer_seeds, self.members, "buffer_seeds") if buffer_seeds is not None else None
        self.buffers = [ReplayBuffer(buffer_size, reinit_prob, init_fn,
                                     generator if bseeds is None else torch.Generator().manual_seed(int(bseeds[s])))
                        if b else None for s, b in enumerate(_per_member(use_buffer, self.members, "use_buffer"))]

    @property
    def buffer(self) -> ReplayBuffer | None:
        return self.buffers[0]

    def fresh(self, n: int) -> torch.Tensor:
        """n fresh starts per member ([S, n, ...]); with `groups`, one draw per seed shared by its members."""
        if self.members == 1:
            return self.init_fn(n)
        if self.groups is None:
            return torch.stack([self.init_fn(n) for _ in range(self.members)])
        n_groups = int(self.groups.max()) + 1
        draws = torch.stack([self.init_fn(n) for _ in range(n_groups)])
        return draws[self.groups.to(draws.device)]

    def chain_starts(self, n: int) -> torch.Tensor:
        fresh = self.fresh(n)
        if self.members == 1:
            return self.buffers[0].sample(n, fresh) if self.buffers[0] is not None else fresh
        return torch.stack([b.sample(n, fresh[s]) if b is not None else fresh[s] for s, b in enumerate(self.buffers)])

    def sample(self, x0: torch.Tensor, n_steps: int | None = None, desc: str | None = None) -> torch.Tensor:
        was_training = self.energy.training
        self.energy.eval()
        k = self.n_steps if n_steps is None else n_steps
        groups = self.groups if self.members > 1 else None
        with getattr(self.energy, "frozen", nullcontext)():
            if self.sampler == "igebm":
                x = igebm_langevin(self.energy, x0, k, self.step_size, self.noise_scale, self.grad_clip, self.clamp,
                                   self.generator, desc, groups)
            else:
                scale = (self.noise_scale.to(x0.device).reshape(-1, *[1] * (x0.ndim - 1))     # over [S, N, ...]
                         if torch.is_tensor(self.noise_scale) else self.noise_scale)
                x = langevin(self.energy, x0, k, self.step_size, scale, self.clamp, self.generator, desc, groups)
        self.energy.train(was_training)
        return x

    def step(self, x_real: torch.Tensor, n_fake: int | None = None) -> dict[str, torch.Tensor]:
        """One update; returns per-member statistics ([S] tensors, scalars for a single model)."""
        axis = 0 if self.members == 1 else 1                          # the sample axis
        n_real = x_real.shape[axis]
        x_fake = self.sample(self.chain_starts(n_real if n_fake is None else n_fake))
        self.last_fake = x_fake
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
        log_every: int = 0, desc: str | None = None,
        callback: Callable[[int], None] | None = None) -> list[dict]:
    """Run `steps` updates on real batches drawn with `generator` (one batch per member, or one per
    seed shared by its members when the trainer has `groups`).

    Returns one record every `log_every` steps and the last one, each with per-member lists and
    `diverged` (per member: the loss has been non-finite at some step). A single model stops at
    its first non-finite loss. `desc` draws a progress bar on the terminal; `callback(step)` runs
    after each update (e.g. to keep snapshots of the buffer).
    """
    history, diverged = [], torch.zeros(trainer.members, dtype=torch.bool)
    bar = _progress(range(1, steps + 1), desc, steps)
    for step in bar:
        if trainer.members == 1:
            x = sample_real(batch, generator)
        elif trainer.groups is not None:
            draws = torch.stack([sample_real(batch, generator) for _ in range(int(trainer.groups.max()) + 1)])
            x = draws[trainer.groups]
        else:
            x = torch.stack([sample_real(batch, generator) for _ in range(trainer.members)])
        stats = trainer.step(x.to(device), n_fake)
        diverged |= ~torch.isfinite(stats["loss"].reshape(-1))
        if callback is not None:
            callback(step)
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


# --- measures and verdict rules (notebook sections 7-13) ---

def ring_gap_contrast(energy: Callable[[torch.Tensor], torch.Tensor], n_modes: int = 8, radius: float = 2.0,
                      band: float = 0.5, n_radii: int = 101) -> torch.Tensor:
    r"""How deep the learned energy's valleys between neighbouring ring modes are [nats]: a ring of
    $n$ modes learned as $n$ modes, not as an annulus (notebook section 7).

    Along the ridge $E(\theta) = \min_{|r - \text{radius}| \le \text{band}} U(r\cos\theta, r\sin\theta)$ (the
    lowest energy on each ray, so a mode a little off its centre still counts), gap $k$ between
    the modes at angles $\theta_k = 2\pi k/n$ and $\theta_{k+1}$ has contrast
    $E(\tfrac{\theta_k + \theta_{k+1}}{2}) - \max(E(\theta_k), E(\theta_{k+1}))$: how many nats the density at
    mid-gap lies below the *lower* of its two neighbouring modes. `energy` maps [N, 2] -> [N] (one
    model) or [S, N, 2] -> [S, N] (an ensemble, given the points expanded per member is not needed:
    pass a callable that does it). Returns [n] contrasts (or [S, n] for an ensemble's callable).
    """
    if n_modes < 2 or radius <= 0 or not 0 < band < radius:
        raise ValueError(f"n_modes={n_modes!r}, radius={radius!r}, band={band!r}: need n_modes >= 2, "
                         "radius > 0 and 0 < band < radius")
    angles = torch.arange(2 * n_modes, dtype=torch.float64) * math.pi / n_modes      # modes and mid-gaps
    radii = torch.linspace(radius - band, radius + band, n_radii, dtype=torch.float64)
    pts = torch.stack([radii[:, None] * angles.cos(), radii[:, None] * angles.sin()], -1)   # [R, 2n, 2]
    with torch.no_grad():
        u = energy(pts.reshape(-1, 2).float()).double()                                  # [..., R*2n]
    ridge = u.reshape(*u.shape[:-1], n_radii, 2 * n_modes).amin(-2)                      # [..., 2n]
    modes, mids = ridge[..., 0::2], ridge[..., 1::2]
    return mids - torch.maximum(modes, modes.roll(-1, -1))


def allocation_variance_ratio(var_p: float, var_q: float, cost_q: float = 1.0) -> float:
    r"""Variance of a 1:1 split of real and model samples over the optimal split, at equal compute
    (notebook section 10). A real sample costs 1, a model sample `cost_q`; for a budget $C = N + c M$,
    $\mathrm{Var} = \sigma_p^2/N + \sigma_q^2/M$ is minimal at $N/M = (\sigma_p/\sigma_q)\sqrt{c}$ with value
    $(\sigma_p + \sigma_q\sqrt{c})^2/C$, and the 1:1 split ($N = M = C/(1 + c)$) has $(\sigma_p^2 + \sigma_q^2)(1 + c)/C$."""
    if not (var_p > 0 and var_q > 0 and math.isfinite(var_p) and math.isfinite(var_q)):
        raise ValueError(f"var_p={var_p!r}, var_q={var_q!r}: need finite variances > 0")
    if not (cost_q > 0 and math.isfinite(cost_q)):
        raise ValueError(f"cost_q={cost_q!r}: need a finite cost > 0")
    return (var_p + var_q) * (1 + cost_q) / (math.sqrt(var_p) + math.sqrt(var_q * cost_q)) ** 2


def allocation_rule(variance_ratios: dict, tol: float = 1.1, alpha: float = 0.05) -> "Verdict":
    """Reader's claim that N = M is the fair choice (notebook section 10). `variance_ratios`: target ->
    per-seed ratios (variance of a 1:1 split of real and model samples / the optimal split's, each
    >= 1). On each target, the one-sided (1 - alpha) t bounds of the mean ratio over seeds: supported
    when every target's upper bound is at most `tol`; contradicted when some target's lower bound
    is above `tol`; inconclusive otherwise (a ratio near `tol` is not decided by its point estimate)."""
    from scipy import stats
    from .verdicts import CONTRADICTED, INCONCLUSIVE, SUPPORTED, Verdict
    if not isinstance(variance_ratios, dict) or not variance_ratios or not tol >= 1:
        raise ValueError(f"variance_ratios={variance_ratios!r} must map targets to per-seed ratios, tol={tol!r} >= 1")
    bounds = {}
    for target, ratios in variance_ratios.items():
        r = np.asarray([float(v) for v in ratios])
        if len(r) < 2 or not np.all(np.isfinite(r)) or np.any(r < 1 - 1e-9):
            raise ValueError(f"variance_ratios[{target!r}]={ratios!r}: need >= 2 finite ratios >= 1 (one per seed)")
        half = stats.t.ppf(1 - alpha, len(r) - 1) * r.std(ddof=1) / math.sqrt(len(r))
        bounds[target] = (r.mean(), r.mean() - half, r.mean() + half)
    ev = "; ".join(f"{t}: mean variance of 1:1 / optimal {m:.3f} [{lo:.3f}, {hi:.3f}] (one-sided {1 - alpha:.0%} "
                   f"bounds, n = {len(variance_ratios[t])} seeds)" for t, (m, lo, hi) in bounds.items())
    if all(hi <= tol for _, _, hi in bounds.values()):
        return Verdict(SUPPORTED, "equivalent", ev + f"; every upper bound ≤ {tol:g}", margin=tol)
    if any(lo > tol for _, lo, _ in bounds.values()):
        return Verdict(CONTRADICTED, "outside_margin", ev + f"; a lower bound > {tol:g}", p_against=0.0, margin=tol)
    return Verdict(INCONCLUSIVE, "straddles", ev + f"; the bounds straddle {tol:g}", margin=tol)


def trains_like_rule(log_kl_a, log_kl_b, margin: float, alpha: float = 0.05,
                     names: tuple[str, str] = ("a", "b")) -> "Verdict":
    """Claim: objective `a` trains the model as well as `b` (notebook section 8), per paired seed.

    A run whose KL is non-finite (the energies overflowed) did not train: when `a` has such runs
    significantly more often than `b` (Fisher's exact test at `alpha`) the claim is contradicted;
    otherwise TOST on the finite pairs against `margin` (`verdicts.equivalence`).
    """
    from .verdicts import CONTRADICTED, Verdict, divergence, equivalence
    a, b = np.asarray(log_kl_a, dtype=float), np.asarray(log_kl_b, dtype=float)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two paired sequences of equal length >= 2, got {len(a)} and {len(b)}")
    bad_a, bad_b = int((~np.isfinite(a)).sum()), int((~np.isfinite(b)).sum())
    p = divergence(bad_a, len(a), bad_b, len(b))
    if bad_a > bad_b and p < alpha:
        return Verdict(CONTRADICTED, "other_way", f"{names[0]}: {bad_a} of {len(a)} runs non-finite against {bad_b} for "
                                      f"{names[1]} (Fisher p = {p:.2g})", p_against=p, margin=margin)
    return equivalence(a, b, margin, paired=True, alpha=alpha, names=names)


def feature_spread(feats: torch.Tensor) -> float:
    """Diversity of a sample in classifier-feature space: the mean distance between two members,
    $\\sqrt{2\\,\\mathrm{tr}\\,\\Sigma}$ for the root-mean-square pairwise distance (notebook section 11)."""
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"feats must be [N >= 2, d], got {tuple(feats.shape)}")
    return float((2 * feats.double().var(0, unbiased=True).sum()).sqrt())


def classes_at_least(preds: torch.Tensor, share: float = 0.05, n_classes: int = 10) -> int:
    """Number of classes that receive at least `share` of the predicted labels."""
    if not 0 < share <= 1:
        raise ValueError(f"share={share!r} must be in (0, 1]")
    hist = torch.bincount(preds.reshape(-1).long(), minlength=n_classes).double() / max(preds.numel(), 1)
    return int((hist >= share).sum())


# --- chapter 02's Fashion-MNIST energies: trained once in their own stage (`python -m kexue.ebm train`) ---

IMAGE_BUFFER, IMAGE_SHORT_RUN = "buffer", "short_run"      # the two arms of notebook section 11
GARMENT_CLASS_SHARE = 0.05     # a class counts when it holds at least this share of the predictions (section 0)
IMAGE_KEEP = 16                # final samples kept per seed and arm for the figures (uint8)
SNAPSHOT_KEEP = 8              # chain ends kept per seed at each snapshot (uint8)
SEED_OFFSET = 1000             # kexue.verify reruns a chapter at seed + 1000


def image_seed_list(seed: int, n: int) -> list[int]:
    """The paired seeds one study run judges: `n` from `seed` (chapter: 0..n-1; rerun: 1000..1000+n-1)."""
    return [int(seed) + k for k in range(n)]


def image_arm_plans(cfg: dict) -> dict[str, dict]:
    """Both arms at equal compute: the buffer arm runs `image_steps` updates of `image_chain_steps`
    sampler steps; the short-run arm's chains start from noise and run `short_run_steps`, for
    `image_steps * (K + 1) / (K_sr + 1)` updates (K chain steps plus the loss per sample and update)."""
    k, k_sr = cfg["image_chain_steps"], cfg["short_run_steps"]
    return {IMAGE_BUFFER: {"buffer": True, "k": k, "updates": cfg["image_steps"]},
            IMAGE_SHORT_RUN: {"buffer": False, "k": k_sr,
                              "updates": max(1, cfg["image_steps"] * (k + 1) // (k_sr + 1))}}


class GarmentScorer:
    """Scores a set of images in [0, 1] against Fashion-MNIST test images in the committed classifier's
    feature space: FD (`frechet_distance_active`), classes holding >= 5% / >= 1% of the predictions,
    KL of the class histogram to uniform, and the feature spread (`feature_spread`)."""

    def __init__(self, classifier: nn.Module, test_images: torch.Tensor):
        from .metrics import extract
        self.classifier = classifier
        self.test_feats, _ = extract(classifier, test_images * 2 - 1)

    def __call__(self, images: torch.Tensor) -> dict:
        from .metrics import class_coverage, extract, frechet_distance_active
        f, pred = extract(self.classifier, images.cpu() * 2 - 1)
        cov = class_coverage(pred)
        return {"FD": frechet_distance_active(f, self.test_feats),
                "classes ≥5%": classes_at_least(pred, GARMENT_CLASS_SHARE), "classes ≥1%": int(cov["classes"]),
                "class KL to uniform [nats]": float(cov["kl_to_uniform"]), "feature spread": feature_spread(f)}


def _uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def train_image_arm(arm: str, seeds: list[int], cfg: dict, x_train: torch.Tensor, score: GarmentScorer,
                    device: torch.device | str = "cpu") -> dict:
    """One arm of section 11 as a grouped-convolution ensemble, one member per seed (`ConvEnergy` seeded
    by it: the arms start from equal weights); data, fresh starts and noise from `seeds[0] + 1`.

    Keeps the first chain ends at `image_snapshots` evenly spaced updates, and the FD over training of
    `image_eval_samples` samples per seed: random buffer contents, or (no buffer) the chain ends of the
    latest updates, which span a stretch of training like the buffer's."""
    plan = image_arm_plans(cfg)[arm]
    S, n_eval_cfg, batch = len(seeds), cfg["image_eval_samples"], cfg["image_batch"]
    g = torch.Generator().manual_seed(seeds[0] + 1)
    energy = ConvEnergy(cfg["image_width"], S, seeds, normalise_output=False).to(device)
    trainer = EBMTrainer(energy, ebm_adam(energy.parameters(), cfg["image_lr"]),
                         uniform_init((1, 28, 28), 0.0, 1.0, g, device), plan["k"], cfg["igebm_step"],
                         cfg["igebm_noise"], cfg["image_alpha"], "paper", plan["buffer"], cfg["image_buffer"],
                         cfg["reinit_prob"], clamp=(0.0, 1.0), generator=g, sampler="igebm",
                         grad_clip=cfg["igebm_clip"], groups=list(range(S)), buffer_seeds=seeds)
    steps = plan["updates"]
    snap_at = sorted({int(round(steps * (i + 1) / cfg["image_snapshots"])) for i in range(cfg["image_snapshots"])})
    snaps, snap_fd, recent = [], [], []
    n_recent = math.ceil(n_eval_cfg / batch)          # updates whose chain ends make n_eval samples

    def keep_snapshot(step: int) -> None:
        if not plan["buffer"] and any(0 <= st - step < n_recent for st in snap_at):
            recent.append(trainer.last_fake.cpu())
        if step not in snap_at:
            return
        snaps.append(_uint8(trainer.last_fake[:, :SNAPSHOT_KEEP, 0]))          # [S, 8, 28, 28]
        for m, b in enumerate(trainer.buffers):
            if b is not None and len(b) >= n_eval_cfg:
                idx = torch.randperm(len(b), generator=torch.Generator().manual_seed(step))[:n_eval_cfg]
                snap_fd.append({"step": step, "seed": m, "FD": score(b.storage[idx.to(b.storage.device)])["FD"]})
            elif b is None and recent:
                ends = torch.cat([r[m] for r in recent])[-n_eval_cfg:]
                snap_fd.append({"step": step, "seed": m, "FD": score(ends)["FD"]})
        recent.clear()

    hist = fit(trainer, lambda n, gen: x_train[torch.randint(len(x_train), (n,), generator=gen)], steps, batch,
               g, device, log_every=max(1, steps // 50), callback=keep_snapshot)
    return {"energy": energy, "trainer": trainer, "hist": hist, "snap_at": snap_at,
            "snaps": np.stack(snaps), "snap_fd": snap_fd}


def fashion_ebm_set(seed: int, cfg: dict, x_train: torch.Tensor, score: GarmentScorer,
                    device: torch.device | str = "cpu") -> tuple[dict, dict]:
    """Section 11's training and everything that needs the final buffers, for the `image_seeds` seeds
    from `seed`: both arms, then per seed the scores of `n_eval` buffer samples, of short-run chains
    from noise, of buffer chains at least as old as a short-run chain, and of the buffer-trained energy
    sampled from noise as the short-run arm is; the buffer's ages and lineages; and `long_chains` buffer
    samples continued for `long_chain_steps` IGEBM steps. Returns (record, arrays): the json-able
    results, and the buffer arm's weights and uint8 samples for the figures."""
    import time
    t0 = time.perf_counter()
    seeds = image_seed_list(seed, cfg["image_seeds"])
    plans = image_arm_plans(cfg)
    runs = {arm: train_image_arm(arm, seeds, cfg, x_train, score, device) for arm in plans}
    buf, sr = runs[IMAGE_BUFFER]["trainer"], runs[IMAGE_SHORT_RUN]["trainer"]
    n_eval = min(cfg["image_eval_samples"], min(len(b) for b in buf.buffers))
    short_run_imgs = sr.sample(sr.fresh(n_eval)).cpu()
    from_noise = buf.sample(buf.fresh(n_eval), cfg["short_run_steps"]).cpu()
    min_age = math.ceil(cfg["short_run_steps"] / cfg["image_chain_steps"])     # as many chain steps as short-run
    rows, age_rows, picks = [], [], []
    for s in range(len(seeds)):
        b = buf.buffers[s]
        pick = torch.randperm(len(b), generator=torch.Generator().manual_seed(seeds[s]))[:n_eval]
        ages = b.ages[:len(b)]
        old = torch.nonzero(ages >= min_age).squeeze(1)
        old = old[torch.randperm(len(old), generator=torch.Generator().manual_seed(seeds[s]))[:n_eval]]
        picks.append(b.storage[pick.to(b.storage.device)].cpu())
        age_rows.append({"seed": s, "young share (buffer)": float((ages < min_age).double().mean()),
                         "young share (scored)": float((ages[pick] < min_age).double().mean()),
                         "median age [updates]": float(ages.double().median()), "old samples scored": len(old),
                         "effective lineages (buffer)": effective_lineages(b.lineage[:len(b)]),
                         "effective lineages (scored)": effective_lineages(b.lineage[pick])})
        rows.append({"arm": IMAGE_BUFFER, "seed": s, **score(picks[s])})
        rows.append({"arm": IMAGE_SHORT_RUN, "seed": s, **score(short_run_imgs[s])})
        rows.append({"arm": "buffer_old", "seed": s, **score(b.storage[old.to(b.storage.device)].cpu())})
        rows.append({"arm": "buffer_from_noise", "seed": s, **score(from_noise[s])})

    # Long chains: buffer samples continued with the sampler the energy was trained with.
    energy = runs[IMAGE_BUFFER]["energy"].eval()
    n_var = min(cfg["long_chains"], n_eval)
    g_long = torch.Generator().manual_seed(seeds[0] + 4)
    start = torch.stack([p[:n_var] for p in picks]).to(device)                    # [S, n_var, 1, 28, 28]
    checkpoints = sorted({0, cfg["long_chain_steps"] // 4, cfg["long_chain_steps"] // 2, cfg["long_chain_steps"]})
    chain, done, long_rows = start.clone(), 0, []
    with energy.frozen():
        for c in checkpoints:
            if c > done:
                chain = igebm_langevin(energy, chain, c - done, cfg["igebm_step"], cfg["igebm_noise"],
                                       cfg["igebm_clip"], (0.0, 1.0), g_long)
            done = c
            with torch.no_grad():
                e_mean = energy(chain).mean(1).cpu()
            for s in range(len(seeds)):
                long_rows.append({"steps": c, "seed": s, "mean energy": float(e_mean[s]),
                                  "mean |x − start|": float((chain[s] - start[s]).abs().mean()),
                                  **score(chain[s].cpu())})
    record = {"seeds": seeds, "n_eval": n_eval, "n_var": n_var, "min_age": min_age,
              "buffer_sizes": [len(b) for b in buf.buffers],
              "arms": {arm: {**plans[arm], "snap_at": runs[arm]["snap_at"], "snap_fd": runs[arm]["snap_fd"],
                             "hist": runs[arm]["hist"]} for arm in plans},
              "rows": rows, "age_rows": age_rows, "long_rows": long_rows,
              "seconds": round(time.perf_counter() - t0, 1)}
    arrays = {f"energy/{k}": v.detach().cpu().numpy() for k, v in energy.state_dict().items()}
    arrays.update({f"{arm}/snapshots": runs[arm]["snaps"] for arm in plans})
    arrays[f"{IMAGE_BUFFER}/final"] = _uint8(torch.stack([p[:IMAGE_KEEP, 0] for p in picks]))
    arrays[f"{IMAGE_SHORT_RUN}/final"] = _uint8(short_run_imgs[:, :IMAGE_KEEP, 0])
    return record, arrays


_IMAGE_WORKER: dict = {}


def _image_worker_init(cfg: dict) -> None:
    """Data, classifier and test features once per worker process (one thread each)."""
    from .data import load_fashion_mnist
    from .metrics import load_classifier
    torch.set_num_threads(1)
    x_train, _ = load_fashion_mnist(train=True)
    x_test, _ = load_fashion_mnist(train=False)
    _IMAGE_WORKER.update(cfg=cfg, x_train=x_train, score=GarmentScorer(load_classifier(device="cpu"),
                                                                        x_test[:max(cfg["image_eval_samples"], 1000)]))


def _image_worker_run(seed: int) -> tuple[int, dict, dict]:
    w = _IMAGE_WORKER
    return (seed, *fashion_ebm_set(seed, w["cfg"], w["x_train"], w["score"]))


def train_fashion_ebm(cfg: dict, log: Callable[[str], None] = print) -> dict:
    """Section 11 for the chapter's seeds (from `seed`) and its rerun's (from `seed + SEED_OFFSET`), each
    set in its own process of one thread (`image_workers` at a time): a set's numbers do not depend on
    how many run beside it."""
    import multiprocessing as mp
    import time
    bases = [int(cfg["seed"]), int(cfg["seed"]) + SEED_OFFSET]
    t0 = time.perf_counter()
    if cfg["image_workers"] == 1:
        _image_worker_init(cfg)
        results = list(map(_image_worker_run, bases))
    else:
        with mp.get_context("spawn").Pool(min(cfg["image_workers"], len(bases)), _image_worker_init, (cfg,)) as pool:
            results = pool.map(_image_worker_run, bases)
    sets, arrays = {}, {}
    for base, record, arr in results:
        sets[str(base)] = record
        arrays.update({f"{base}/{k}": v for k, v in arr.items()})
        fd = [r["FD"] for r in record["rows"] if r["arm"] == IMAGE_BUFFER]
        log(f"seeds {record['seeds'][0]}..{record['seeds'][-1]}: buffer FD {np.mean(fd):.1f} "
            f"({record['seconds']:.0f} s)")
    keys = ("seed", "reinit_prob", "igebm_step", "igebm_noise", "igebm_clip", "short_run_steps", "long_chain_steps",
            "long_chains") + tuple(k for k in cfg if k.startswith("image_"))
    config = {**{k: cfg[k] for k in keys}, "threads_per_set": 1, "torch": torch.__version__,
              "stage_seconds": round(time.perf_counter() - t0)}
    return {"config": config, "sets": sets, "arrays": arrays}


EBM_RUNS_DIR = ROOT / "data" / "ebm_fashion_runs"


def save_fashion_ebm(result: dict, folder=EBM_RUNS_DIR):
    """runs.json (config, per-set results) and arrays.npz (weights, samples), SHA-256 in checksums.json."""
    from .data import save_checked_runs
    return save_checked_runs(folder, {"config": result["config"], "sets": result["sets"]},
                             "arrays.npz", result["arrays"])


def load_fashion_ebm(folder=EBM_RUNS_DIR) -> tuple[dict, dict, dict]:
    """(config, sets, arrays) of the committed `02_energy_based_model_train` stage, checksums checked."""
    from .data import load_checked_runs
    data, arrays = load_checked_runs(folder, "arrays.npz", "02_energy_based_model_train",
                                     "python -m kexue.ebm train")
    return data["config"], data["sets"], arrays


def fashion_energy(config: dict, arrays: dict, base: int, members: int | None = None,
                   device: torch.device | str = "cpu") -> ConvEnergy:
    """The buffer arm's trained energies of the set from `base` (the first `members` of them), in eval mode."""
    prefix = f"{base}/energy/"
    state = {k[len(prefix):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"no trained energies for seeds from {base}: the stage trained "
                         f"{sorted({k.split('/')[0] for k in arrays})}")
    n = int(state["weights.0"].shape[0])
    energy = ConvEnergy(config["image_width"], n, image_seed_list(base, n), normalise_output=False)
    energy.load_state_dict(state)
    if members is not None and members != n:
        energy = energy.subset(list(range(members)))
    return energy.to(device).eval()


# --- chapter 02 experiment parameters (params.yaml `ebm`) ---

@dataclass
class EbmParams:
    """params.yaml `ebm`: the chapter-02 experiments (validated by kexue.config)."""

    step_size: float = param(0.005, lo=1e-8, hi=1.0, doc="Langevin step epsilon, 2-D (article reference 1/200)")
    chain_steps: int = param(20, lo=1, hi=10**5, doc="Langevin steps K per update (article 20-50)")
    alpha: float = param(0.1, lo=0.0, hi=100.0, doc="weight of the squared-energy term, 2-D")
    reinit_prob: float = param(0.05, lo=0.0, hi=1.0, doc="fraction of chains restarted from noise")
    igebm_step: float = param(10.0, lo=1e-8, hi=1e6, doc="IGEBM sampler's gradient step lambda (step_lr)")
    igebm_noise: float = param(0.005, lo=0.0, hi=10.0, doc="IGEBM sampler's noise std sigma")
    igebm_clip: float = param(0.01, lo=1e-8, hi=1e6, doc="IGEBM sampler's gradient clip (proj_norm)")
    toy_std: float = param(0.1, lo=1e-3, hi=1.0, doc="component std of the ring and grid")
    toy_steps: int = param(1000, lo=1, hi=10**7)
    toy_batch: int = param(64, lo=2, hi=10**6)
    toy_hidden: int = param(64, lo=1, hi=4096)
    toy_lr: float = param(1e-2, lo=0.0, hi=1.0)
    toy_buffer: int = param(10000, lo=1, hi=10**8)
    toy_seeds: int = param(10, lo=2, hi=100, doc="seeds per arm, paired across arms")
    toy_eval_samples: int = param(2000, lo=10, hi=10**7)
    toy_grid: int = param(200, lo=10, hi=4000, doc="grid cells per side for the KL to the true density")
    stationary_steps: int = param(300, lo=1, hi=10**7, doc="long-chain steps on a learned 2-D energy")
    image_steps: int = param(3500, lo=1, hi=10**7, doc="buffer-arm updates")
    image_batch: int = param(32, lo=2, hi=4096)
    image_width: int = param(16, lo=1, hi=1024)
    image_lr: float = param(1e-3, lo=0.0, hi=1.0)
    image_alpha: float = param(0.03, lo=0.0, hi=100.0, doc="squared-energy weight on images (reference code: 1; notebook section 0)")
    image_chain_steps: int = param(5, lo=1, hi=10**5, doc="buffer arm: sampler steps per update")
    short_run_steps: int = param(20, lo=1, hi=10**5, doc="no-buffer arm: steps from noise (equal-compute updates)")
    image_buffer: int = param(1000, lo=1, hi=10**7)
    image_seeds: int = param(8, lo=2, hi=100, doc="seeds per arm (buffer, short-run), paired, per study run")
    image_eval_samples: int = param(500, lo=10, hi=10000)
    image_snapshots: int = param(5, lo=2, hi=50, doc="buffer snapshots over training for the sample grids")
    fresh_chain_steps: int = param(40, lo=1, hi=10**6, doc="steps of the chains started from noise after training")
    long_chain_steps: int = param(100, lo=1, hi=10**6)
    long_chains: int = param(200, lo=2, hi=10**5, doc="chains per seed continued from the buffer")
    ood_samples: int = param(1000, lo=10, hi=5000, doc="Fashion test images and MNIST digits for the AUROC")
    image_workers: int = param(2, lo=1, hi=64, doc="training stage: seed sets in parallel, one thread each")


def main(argv: list[str] | None = None) -> int:
    """`python -m kexue.ebm train`: chapter 02's Fashion-MNIST training stage (params.yaml `ebm`)."""
    import argparse
    from pathlib import Path
    from .config import chapter_params
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("command", choices=["train"])
    ap.add_argument("--out", default=str(EBM_RUNS_DIR))
    ap.add_argument("--scale", choices=["smoke", "default", "gpu"], help="override common.scale")
    args = ap.parse_args(argv)
    cfg = chapter_params("ebm", overrides={"common": {"scale": args.scale}} if args.scale else None)
    result = train_fashion_ebm(cfg, log=lambda m: print(m, flush=True))
    folder = save_fashion_ebm(result, Path(args.out))
    print(f"trained {len(result['sets'])} seed sets in {result['config']['stage_seconds']} s -> {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
