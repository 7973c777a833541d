r"""A GAN trained with one loss through stop-gradient (chapter 01).

Derived in `notebooks/01_single_loss_gan.py`; seed article kexue.fm/archives/6387.

Hinge GAN in the article's sign convention (D is *low* on real data):

$$L_D = \mathbb E_x[\max(0, 1 + D(x))] + \mathbb E_z[\max(0, 1 - D(G(z)))],\qquad
  L_G = \mathbb E_z[D(G(z))].$$

The single loss (notebook section 2), with $\mathrm{sg}$ = stop-gradient (`detach`):

$$L = \mathbb E_x[\max(0, 1 + D(x))] + \mathbb E_z[\max(0, 1 - D(\mathrm{sg}\,G(z)))]
      + \lambda\,\mathbb E_z[D(G(z)) - D(\mathrm{sg}\,G(z))],$$

whose value is $L_D$ and whose gradient is $(\nabla_D L_D,\ \lambda\nabla_G L_G)$.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ROOT, param
from .toy2d import mode_reverse_kl, mode_stats  # noqa: F401  (part of this module's API, DESIGN.md)
from .fmt import fmt
from .verdicts import CONTRADICTED, INCONCLUSIVE, SUPPORTED, Verdict

METHODS = ("single", "alternating", "simultaneous", "single_frozen_d")


# --- losses (notebook section 1) ---

def hinge_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """$L_D$: mean relu(1 + D(x)) + mean relu(1 - D(G(z)))."""
    return F.relu(1 + d_real).mean() + F.relu(1 - d_fake).mean()


def hinge_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """$L_G$: mean D(G(z))."""
    return d_fake.mean()


def lsgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN in the same convention (real -> 0, fake -> 1): mean D(x)^2 + mean (D(G(z)) - 1)^2."""
    return d_real.pow(2).mean() + (d_fake - 1).pow(2).mean()


def lsgan_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """G pulls D(G(z)) towards the real label 0: mean D(G(z))^2."""
    return d_fake.pow(2).mean()


def wgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """A single min-max objective: mean D(x) - mean D(G(z)); G's loss is its negative's fake part."""
    return d_real.mean() - d_fake.mean()


LOSSES = {  # name -> (D loss, G loss)
    "hinge": (hinge_d_loss, hinge_g_loss),
    "lsgan": (lsgan_d_loss, lsgan_g_loss),
    "wgan": (wgan_d_loss, hinge_g_loss),   # L_G = mean D(G(z)) = -(fake part of L_D)
}


def reversed_vs_g_step(discriminator: nn.Module, generator: nn.Module, x_real: torch.Tensor,
                       z: torch.Tensor, loss: str) -> dict[str, float]:
    """Compare G's true step gradient grad_G L_G with the reader's shortcut -grad_G L_D
    (differentiate D's loss once and flip the sign of G's part). Returns cosine and norm ratio."""
    d_loss_fn, g_loss_fn = LOSSES[loss]
    params = list(generator.parameters())
    fake = generator(z)
    d_real, d_fake = discriminator(x_real).reshape(-1), discriminator(fake).reshape(-1)
    flipped = torch.autograd.grad(-d_loss_fn(d_real, d_fake), params, retain_graph=True)
    true = torch.autograd.grad(g_loss_fn(d_fake), params)
    a = torch.cat([g.flatten() for g in flipped])
    b = torch.cat([g.flatten() for g in true])
    return {"cosine": float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300)),
            "norm_ratio": float(a.norm() / b.norm().clamp_min(1e-300))}


def hinge_single_loss(discriminator: nn.Module, generator: nn.Module, x_real: torch.Tensor,
                      z: torch.Tensor, lam: float = 1.0, batched: bool = True) -> torch.Tensor:
    r"""The single loss of notebook section 2 (DESIGN.md contract).

    `batched=True` evaluates D once on `[x_real, sg(G(z)), G(z)]`: exact when D
    treats samples independently (no BatchNorm in training mode), and one
    forward instead of three. `batched=False` runs three separate forwards.
    """
    fake = generator(z)                                   # [B, ...]
    fake_sg = fake.detach()                               # sg(G(z)): same values, no path to G
    if batched:
        d = discriminator(torch.cat([x_real, fake_sg, fake])).reshape(-1)   # [n_real + 2B]
        d_real, d_fake_sg, d_fake = d.split([len(x_real), len(fake), len(fake)])
    else:
        d_real, d_fake_sg, d_fake = (discriminator(t).reshape(-1) for t in (x_real, fake_sg, fake))
    # lam * (D(G) - D(sg G)) is 0 in value; its gradient is (0, lam * grad_G L_G).
    return hinge_d_loss(d_real, d_fake_sg) + lam * (d_fake.mean() - d_fake_sg.mean())


def hinge_single_loss_frozen_d(discriminator: nn.Module, generator: nn.Module, x_real: torch.Tensor,
                               z: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    r"""The same value and gradient as `hinge_single_loss`, without the cancelling work.

    PyTorch can stop the gradient of D's *weights* for one call
    (`torch.func.functional_call` with detached parameters): the generator term
    becomes $\lambda(D_{\mathrm{sg}}(G(z)) - \mathrm{sg}[D(G(z))])$, which reaches G only, so
    autograd never computes the two D-weight gradients that cancel in the original.
    (The article's Keras setting had no such operation; notebook section 10.)
    """
    fake = generator(z)                                                          # [B, ...]
    d = discriminator(torch.cat([x_real, fake.detach()])).reshape(-1)            # [n_real + B]
    d_real, d_fake_sg = d.split([len(x_real), len(fake)])
    frozen = {k: v.detach() for k, v in discriminator.named_parameters()}
    d_fake = torch.func.functional_call(discriminator, frozen, (fake,)).reshape(-1)  # grad to G only
    return hinge_d_loss(d_real, d_fake_sg) + lam * (d_fake.mean() - d_fake.mean().detach())


# --- one training step, four ways (notebook section 3) ---

class GANTrainer:
    r"""One D+G update per `step(x_real, z)`, by one of three methods.

    * `single`: one optimizer over D and G, one backward of `hinge_single_loss`.
      Simultaneous: both gradients at the same (D, G).
    * `simultaneous`: two optimizers; $\nabla_D L_D$ and $\nabla_G L_G$ at the same
      (D, G), G's learning rate `lam` times D's (the single loss's SGD equivalent).
    * `alternating`: two optimizers; a D step, then a G step against the *updated* D
      (1:1, the usual GAN loop), G's learning rate `lam` times D's.
    * `single_frozen_d`: as `single`, with `hinge_single_loss_frozen_d` (same update).

    `make_optimizer(params, lr)` builds an optimizer (e.g. Adam with fixed betas).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, method: str,
                 make_optimizer: Callable[[list, float], torch.optim.Optimizer], lr: float,
                 lam: float = 1.0, batched: bool = True):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {list(METHODS)}")
        if not lam > 0:
            raise ValueError(f"invalid lam={lam!r}: must be > 0")
        self.G, self.D, self.method, self.lam, self.batched = generator, discriminator, method, lam, batched
        self.lr = lr
        self.d_params, self.g_params = list(discriminator.parameters()), list(generator.parameters())
        if method.startswith("single"):
            self.opt = make_optimizer(self.d_params + self.g_params, lr)
        else:
            self.opt_d = make_optimizer(self.d_params, lr)
            self.opt_g = make_optimizer(self.g_params, lam * lr)

    def step(self, x_real: torch.Tensor, z: torch.Tensor) -> dict[str, float]:
        return getattr(self, f"_{self.method}")(x_real, z)

    def _single(self, x_real, z):
        self.opt.zero_grad(set_to_none=True)
        loss = hinge_single_loss(self.D, self.G, x_real, z, self.lam, self.batched)
        loss.backward()
        self.opt.step()
        return {"d_loss": loss.item()}

    def _single_frozen_d(self, x_real, z):
        self.opt.zero_grad(set_to_none=True)
        loss = hinge_single_loss_frozen_d(self.D, self.G, x_real, z, self.lam)
        loss.backward()
        self.opt.step()
        return {"d_loss": loss.item()}

    def _simultaneous(self, x_real, z):
        fake = self.G(z)
        d_real, d_fake = self.D(torch.cat([x_real, fake])).reshape(-1).split([len(x_real), len(fake)])
        d_loss, g_loss = hinge_d_loss(d_real, d_fake), hinge_g_loss(d_fake)
        # Gradients w.r.t. D's weights do not depend on whether G(z) is detached.
        d_grads = torch.autograd.grad(d_loss, self.d_params, retain_graph=True)
        g_grads = torch.autograd.grad(g_loss, self.g_params)
        for p, g in zip(self.d_params + self.g_params, d_grads + g_grads):
            p.grad = g
        self.opt_d.step()
        self.opt_g.step()
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

    def _alternating(self, x_real, z):
        # D step: G's output is a constant.
        with torch.no_grad():
            fake = self.G(z)
        self.opt_d.zero_grad(set_to_none=True)
        d_real, d_fake = self.D(torch.cat([x_real, fake])).reshape(-1).split([len(x_real), len(fake)])
        d_loss = hinge_d_loss(d_real, d_fake)
        d_loss.backward()
        self.opt_d.step()
        # G step against the updated D; D's weights need no gradient here.
        for p in self.d_params:
            p.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss = hinge_g_loss(self.D(self.G(z)).reshape(-1))
        g_loss.backward()
        self.opt_g.step()
        for p in self.d_params:
            p.requires_grad_(True)
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}


# --- networks ---

class MLPGenerator(nn.Module):
    """z [B, z_dim] -> x [B, 2]; for the 2-D benchmarks."""

    def __init__(self, z_dim: int = 2, hidden: int = 128, out_dim: int = 2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, z):
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """x [B, 2] -> score [B, 1]; no batch coupling, so the batched single loss is exact."""

    def __init__(self, in_dim: int = 2, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x)


class DCGenerator(nn.Module):
    """DCGAN-style generator for 28x28 grey images in [-1, 1] (BatchNorm in G only)."""

    def __init__(self, z_dim: int = 64, width: int = 64):
        super().__init__()
        self.width = width
        self.fc = nn.Sequential(nn.Linear(z_dim, 2 * width * 7 * 7), nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),   # [B, w, 14, 14]
            nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh())                                  # [B, 1, 28, 28]

    def forward(self, z):
        return self.net(self.fc(z).view(len(z), 2 * self.width, 7, 7))


class DCDiscriminator(nn.Module):
    """DCGAN-style discriminator without BatchNorm (samples stay independent)."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2),              # [B, w, 14, 14]
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),      # [B, 2w, 7, 7]
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 1))

    def forward(self, x):
        return self.net(x)


# --- the Dirac-GAN (notebook section 4) ---

class DiracGenerator(nn.Module):
    """G(z) = theta for every z: one parameter, outputs [B, 1]."""

    def __init__(self, theta: float):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([theta], dtype=torch.float64))

    def forward(self, z):
        return self.theta.expand(len(z), 1)


class DiracDiscriminator(nn.Module):
    """D(x) = psi * x: one parameter."""

    def __init__(self, psi: float):
        super().__init__()
        self.psi = nn.Parameter(torch.tensor([psi], dtype=torch.float64))

    def forward(self, x):
        return self.psi * x


def dirac_trajectory(method: str, steps: int, lr: float, theta0: float = 0.5, psi0: float = 0.5,
                     optimizer: str = "sgd") -> torch.Tensor:
    """[steps + 1, 2] trajectory of (theta, psi) for the Dirac-GAN (real data at 0)."""
    G, D = DiracGenerator(theta0), DiracDiscriminator(psi0)
    make = {"sgd": lambda ps, lr_: torch.optim.SGD(ps, lr=lr_),
            "adam": lambda ps, lr_: torch.optim.Adam(ps, lr=lr_, betas=(0.5, 0.999))}[optimizer]
    trainer = GANTrainer(G, D, method, make, lr)
    x, z = torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    out = [torch.cat([G.theta, D.psi]).detach().clone()]
    for _ in range(steps):
        trainer.step(x, z)
        out.append(torch.cat([G.theta, D.psi]).detach().clone())
    return torch.stack(out)


# --- many seeds for the price of one: batched ensembles of 2-D GANs (notebook section 6) ---

class EnsembleMLP(nn.Module):
    """S independent MLPs evaluated in one batched matmul: x [S, N, d_in] -> [S, N, d_out].

    Same architecture as `MLPGenerator` / `MLPDiscriminator` (`act` = ReLU or LeakyReLU(0.2)).
    Member s has its own weights and sees only its own slice, so with an element-wise
    optimizer (Adam, SGD) on a loss that is a *sum* over members of per-member losses, each
    member trains exactly as the stand-alone model would (tested against `GANTrainer`).
    """

    def __init__(self, members: int, dims: list[int], act: str = "relu",
                 generator: torch.Generator | None = None):
        super().__init__()
        if act not in ("relu", "leaky_relu"):
            raise ValueError(f"act={act!r}: must be 'relu' or 'leaky_relu'")
        self.members, self.dims, self.act = members, list(dims), act
        # nn.Linear's default initialisation, per member: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        bound = [1 / math.sqrt(a) for a in dims[:-1]]
        self.weights = nn.ParameterList(
            nn.Parameter((torch.rand(members, a, b, generator=generator) * 2 - 1) * r)
            for a, b, r in zip(dims[:-1], dims[1:], bound))
        self.biases = nn.ParameterList(
            nn.Parameter((torch.rand(members, 1, b, generator=generator) * 2 - 1) * r)
            for b, r in zip(dims[1:], bound))

    @classmethod
    def stack(cls, models: list[nn.Module], act: str) -> "EnsembleMLP":
        """An ensemble whose member s is a copy of `models[s]` (an nn.Sequential of Linear layers)."""
        linears = [[m for m in model.modules() if isinstance(m, nn.Linear)] for model in models]
        dims = [linears[0][0].in_features] + [lin.out_features for lin in linears[0]]
        ens = cls(len(models), dims, act).to(linears[0][0].weight)
        with torch.no_grad():
            for i in range(len(dims) - 1):
                ens.weights[i].copy_(torch.stack([ls[i].weight.T for ls in linears]))
                ens.biases[i].copy_(torch.stack([ls[i].bias[None] for ls in linears]))
        return ens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x                                                                  # [S, N, d_in]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)                                         # [S, N, d_i]
            if i < len(self.weights) - 1:
                h = F.relu(h) if self.act == "relu" else F.leaky_relu(h, 0.2)
        return h


def ensemble_pair(members: int, hidden: int, seeds: list[int], z_dim: int = 2) -> tuple[EnsembleMLP, EnsembleMLP]:
    """(G, D) ensembles whose member s is initialised from `seeds[s]` alone, so every arm built
    from the same seeds starts from the same weights (paired comparisons are truly paired)."""
    if len(seeds) != members:
        raise ValueError(f"need one seed per member: {members} members, {len(seeds)} seeds")
    gs, ds = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        gs.append(EnsembleMLP(1, [z_dim, hidden, hidden, hidden, 2], "relu", gen))
        ds.append(EnsembleMLP(1, [2, hidden, hidden, hidden, 1], "leaky_relu", gen))

    def cat(parts, act):
        ens = EnsembleMLP(members, parts[0].dims, act)
        with torch.no_grad():
            for i in range(len(ens.weights)):
                ens.weights[i].copy_(torch.cat([p.weights[i] for p in parts]))
                ens.biases[i].copy_(torch.cat([p.biases[i] for p in parts]))
        return ens
    return cat(gs, "relu"), cat(ds, "leaky_relu")


def hinge_d_loss_members(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Sum over members of each member's $L_D$: d_real, d_fake [S, N] -> scalar."""
    return (F.relu(1 + d_real).mean(-1) + F.relu(1 - d_fake).mean(-1)).sum()


class EnsembleGANTrainer:
    """`GANTrainer`'s three methods (single, alternating, simultaneous) for S members at once.

    Each loss is a sum over members of the member's loss, and Adam is element-wise, so member s
    follows the same trajectory as `GANTrainer` on (G_s, D_s) with the same data (up to the
    rounding of batched vs plain matmuls). x_real [S, B, 2], z [S, B, z_dim].
    """

    def __init__(self, generator: EnsembleMLP, discriminator: EnsembleMLP, method: str,
                 make_optimizer: Callable[[list, float], torch.optim.Optimizer], lr: float, lam: float = 1.0):
        if method not in ("single", "alternating", "simultaneous"):
            raise ValueError(f"unknown method {method!r} for an ensemble; known: single, alternating, simultaneous")
        if not lam > 0:
            raise ValueError(f"invalid lam={lam!r}: must be > 0")
        self.G, self.D, self.method, self.lam = generator, discriminator, method, lam
        self.d_params, self.g_params = list(discriminator.parameters()), list(generator.parameters())
        if method == "single":
            self.opt = make_optimizer(self.d_params + self.g_params, lr)
        else:
            self.opt_d = make_optimizer(self.d_params, lr)
            self.opt_g = make_optimizer(self.g_params, lam * lr)

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt] if self.method == "single" else [self.opt_d, self.opt_g]

    def _scores(self, x_real, fake):
        d = self.D(torch.cat([x_real, fake], dim=1)).squeeze(-1)               # [S, B_real + B]
        return d[:, :x_real.shape[1]], d[:, x_real.shape[1]:]

    def step(self, x_real: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """One update of every member; returns each member's D loss [S] (non-finite: diverged)."""
        if self.method == "single":
            self.opt.zero_grad(set_to_none=True)
            fake = self.G(z)
            fake_sg = fake.detach()
            d = self.D(torch.cat([x_real, fake_sg, fake], dim=1)).squeeze(-1)
            b, n = x_real.shape[1], fake.shape[1]
            d_real, d_fake_sg, d_fake = d[:, :b], d[:, b:b + n], d[:, b + n:]
            d_loss = F.relu(1 + d_real).mean(-1) + F.relu(1 - d_fake_sg).mean(-1)          # [S]
            loss = (d_loss + self.lam * (d_fake.mean(-1) - d_fake_sg.mean(-1))).sum()
            loss.backward()
            self.opt.step()
            return d_loss.detach()
        if self.method == "simultaneous":
            d_real, d_fake = self._scores(x_real, self.G(z))
            d_loss = F.relu(1 + d_real).mean(-1) + F.relu(1 - d_fake).mean(-1)
            g_loss = d_fake.mean(-1).sum()
            d_grads = torch.autograd.grad(d_loss.sum(), self.d_params, retain_graph=True)
            g_grads = torch.autograd.grad(g_loss, self.g_params)
            for p, g in zip(self.d_params + self.g_params, d_grads + g_grads):
                p.grad = g
            self.opt_d.step()
            self.opt_g.step()
            return d_loss.detach()
        with torch.no_grad():                                                   # alternating
            fake = self.G(z)
        self.opt_d.zero_grad(set_to_none=True)
        d_real, d_fake = self._scores(x_real, fake)
        d_loss = F.relu(1 + d_real).mean(-1) + F.relu(1 - d_fake).mean(-1)
        d_loss.sum().backward()
        self.opt_d.step()
        for p in self.d_params:
            p.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        self.D(self.G(z)).squeeze(-1).mean(-1).sum().backward()
        self.opt_g.step()
        for p in self.d_params:
            p.requires_grad_(True)
        return d_loss.detach()


def lr_factor(step: int, steps: int, decay_frac: float, final: float = 0.1) -> float:
    r"""Learning-rate multiplier at update `step` (1-based) of `steps`: 1, then a geometric decay
    over the last `decay_frac` of training down to `final` at the last update,

    $$f(s) = \text{final}^{\,\max(0,\ s/\text{steps} - (1 - \text{decay\_frac})) / \text{decay\_frac}}.$$

    `decay_frac = 0` is a constant learning rate (f = 1 throughout).
    """
    if not 0 <= decay_frac <= 1:
        raise ValueError(f"decay_frac={decay_frac!r}: must be in [0, 1]")
    if decay_frac == 0:
        return 1.0
    into = step / steps - (1 - decay_frac)
    return final ** (max(into, 0.0) / decay_frac)


def fit_ensemble(trainer: EnsembleGANTrainer, centres: torch.Tensor, std: float, steps: int, batch: int,
                 generator: torch.Generator, z_dim: int = 2, desc: str = "GAN ensemble",
                 lr_decay_frac: float = 0.0, evaluate: Callable[[int], None] | None = None,
                 eval_every: int = 0, lr_final: float = 0.1) -> torch.Tensor:
    """Train every member `steps` updates on the Gaussian mixture (`centres`, `std`).

    Data and noise for all members come from `generator` in a fixed order, so ensembles of
    different methods built from the same seeds see the same stream. With `lr_decay_frac` > 0
    every optimizer's learning rate follows `lr_factor` (geometric, down to `lr_final` times the
    base rate over that last fraction of the updates); 0 keeps it constant. `evaluate(step)` is called every
    `eval_every` updates and after the last. Returns the step at which each member diverged
    (non-finite D loss) or 0. A diverged member's weights stay non-finite; the other members
    are unaffected (each member's gradient depends on its own loss only).
    """
    from .report import progress
    from .toy2d import sample_mixture
    S = trainer.G.members
    device = trainer.G.weights[0].device
    diverged = torch.zeros(S, dtype=torch.long)
    groups = [g for opt in trainer.optimizers for g in opt.param_groups]
    base_lr = [g["lr"] for g in groups]
    for step in progress(range(1, steps + 1), desc=desc):
        if lr_decay_frac:
            f = lr_factor(step, steps, lr_decay_frac, lr_final)
            for g, lr0 in zip(groups, base_lr):
                g["lr"] = lr0 * f
        x = sample_mixture(centres, std, S * batch, generator).reshape(S, batch, -1)   # [S, B, 2]
        z = torch.randn(S, batch, z_dim, generator=generator)
        d_loss = trainer.step(x.to(device), z.to(device)).cpu()
        bad = ~torch.isfinite(d_loss) & (diverged == 0)
        if bad.any():
            diverged[bad] = step
        if evaluate is not None and ((eval_every and step % eval_every == 0) or step == steps):
            evaluate(step)
    for g, lr0 in zip(groups, base_lr):          # leave the optimizers as they came
        g["lr"] = lr0
    return diverged


# --- a training loop shared by the experiments ---

def fit(trainer: GANTrainer, sample_real: Callable[[int, torch.Generator], torch.Tensor], z_dim: int,
        steps: int, batch: int, generator: torch.Generator, device: torch.device | str = "cpu",
        evaluate: Callable[[int], dict] | None = None, eval_every: int = 0, desc: str = "GAN updates"
        ) -> list[dict]:
    """Run `steps` updates; data and noise drawn from `generator` (reproducible).

    Stops early, marking `diverged`, when a loss becomes non-finite. Returns the
    history: one dict per evaluation (`evaluate(step)`), plus the final one.
    `desc` labels the progress bar drawn on the terminal (never in a notebook's outputs).
    """
    from .report import progress   # here, not at import: kexue.report sets matplotlib's backend

    history = []
    for step in progress(range(1, steps + 1), desc=desc):
        x = sample_real(batch, generator).to(device)
        z = torch.randn(batch, z_dim, generator=generator).to(device)
        losses = trainer.step(x, z)
        if not all(torch.isfinite(torch.tensor(v)) for v in losses.values()):
            history.append({"step": step, "diverged": True, **losses})
            return history
        if evaluate is not None and eval_every and (step % eval_every == 0 or step == steps):
            history.append({"step": step, "diverged": False, **losses, **evaluate(step)})
    if evaluate is not None and not eval_every:
        history.append({"step": steps, "diverged": False, **evaluate(steps)})
    return history


def gan_adam(beta1: float = 0.5, beta2: float = 0.999) -> Callable[[list, float], torch.optim.Optimizer]:
    """Adam with GAN betas, as a `make_optimizer(params, lr)` for GANTrainer."""
    return lambda params, lr: torch.optim.Adam(params, lr=lr, betas=(beta1, beta2))


def gan_sgd(momentum: float = 0.0) -> Callable[[list, float], torch.optim.Optimizer]:
    return lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=momentum)


# --- the chapter's verdict rules (notebook section 11), on top of kexue.verdicts ---

def dirac_rule(single_final: float, alternating_final: float, close: float, apart: float) -> Verdict:
    """Claim: on the Dirac-GAN the single loss behaves like 1:1 alternating.

    r = (single's final distance to equilibrium) / (alternating's), a deterministic run.
    supported when max(r, 1/r) <= `close`; contradicted when max(r, 1/r) >= `apart`;
    inconclusive in between. Thresholds are stated before the run (1 < close < apart).
    """
    if not 1 < close < apart:
        raise ValueError(f"need 1 < close < apart, got close={close!r}, apart={apart!r}")
    r = single_final / alternating_final
    fold = max(r, 1 / r) if r > 0 else float("inf")
    ev = (f"final distance to equilibrium, single {fmt(single_final)} / alternating {fmt(alternating_final)} = "
          f"{fmt(r)}; close if within ×{fmt(close)} either way, apart if beyond ×{fmt(apart)}")
    if fold <= close:
        return Verdict(SUPPORTED, "within_tolerance", ev + ": close", margin=close)
    if fold >= apart:
        return Verdict(CONTRADICTED, "exceeds_tolerance", ev + ": apart", p_against=0.0, margin=close)
    return Verdict(INCONCLUSIVE, "straddles", ev + ": in between", margin=close)


def lr_ratio_rule(ratios: dict[float, float], tol: float) -> Verdict:
    """Claim: λ in the loss sets G's step to λ times its size at λ = 1 (a D:G learning-rate ratio 1:λ).

    `ratios`: λ -> (G's step at λ) / (G's step at λ = 1), deterministic one-step measurements.
    supported when every ratio is within `tol` (relative) of its λ; contradicted otherwise.
    """
    off = {lam_: ratio / lam_ - 1 for lam_, ratio in ratios.items()}
    ev = ("G step / G step at λ = 1: " + ", ".join(f"{fmt(ratios[l_], 4)} at λ = {l_:g}" for l_ in ratios)
          + f" (rule: within {fmt(100 * tol)}% of λ)")
    if all(abs(v) <= tol for v in off.values()):
        return Verdict(SUPPORTED, "within_tolerance", ev + ": proportional to λ", margin=tol)
    inert = all(abs(ratios[l_] - 1) <= tol for l_ in ratios)
    return Verdict(CONTRADICTED, "exceeds_tolerance", ev + (": λ nearly inert" if inert else ": not proportional to λ"),
                   p_against=0.0, margin=tol)


def gradient_reversal_rule(rows: list[dict], min_max: tuple[str, ...] = ("wgan",), tol: float = 1e-6) -> Verdict:
    """Claim (reader): flipping the sign of G's part of ∇L_D gives G's true step only when D and G
    play one min-max objective.

    `rows`: dicts with `loss`, `cosine`, `norm_ratio` (shortcut against true gradient), several
    conditions per loss. A row *matches* when |cosine - 1| <= tol and |norm_ratio - 1| <= tol.
    supported: every row of a min-max loss matches and every other loss has a row that does not;
    contradicted: a min-max row does not match, or another loss matches in every row.
    """
    def matches(r):
        return abs(r["cosine"] - 1) <= tol and abs(r["norm_ratio"] - 1) <= tol

    losses = list(dict.fromkeys(r["loss"] for r in rows))              # in order of appearance
    by = {k: [r for r in rows if r["loss"] == k] for k in losses}
    ev = "; ".join(f"{k}: cosine " + ", ".join(fmt(r["cosine"], 4) for r in by[k]) + ", norm ratio "
                   + ", ".join(fmt(r["norm_ratio"], 4) for r in by[k]) for k in losses)
    ev += f" (match: both within {fmt(tol)} of 1)"
    exact_ok = all(matches(r) for k in losses if k in min_max for r in by[k])
    others_differ = all(not all(matches(r) for r in by[k]) for k in losses if k not in min_max)
    if exact_ok and others_differ:
        return Verdict(SUPPORTED, "within_tolerance", ev, margin=tol)
    return Verdict(CONTRADICTED, "exceeds_tolerance", ev, p_against=0.0, margin=tol)


# --- chapter 01 experiment parameters (params.yaml `gan`) ---

@dataclass
class GanParams:
    """params.yaml `gan`: the chapter-01 experiments (validated by kexue.config)."""

    lam: float = param(1.0, lo=1e-6, hi=1e6, doc="weight of the generator term of the single loss")
    beta1: float = param(0.5, lo=0.0, hi=0.999999, doc="Adam beta1 (GAN practice)")
    beta2: float = param(0.999, lo=0.0, hi=0.999999)
    dirac_steps: int = param(300, lo=21, hi=10**6)
    dirac_lr: float = param(0.1, lo=1e-6, hi=1.0)
    toy_steps: int = param(15000, lo=1, hi=10**7, doc="updates per grid run")
    toy_ring_steps: int = param(4000, lo=1, hi=10**7, doc="updates per ring run")
    toy_batch: int = param(128, lo=2, hi=10**6, doc="2-D batch (ring, λ sweep, gradient reversal)")
    toy_grid_batch: int = param(64, lo=2, hi=10**6, doc="grid batch: 64 reaches the target regime at half the cost of 128")
    toy_hidden: int = param(64, lo=1, hi=4096)
    toy_grid_hidden: int = param(96, lo=1, hi=4096, doc="hidden width of the grid GANs (25 modes need more than 8)")
    toy_lr: float = param(2e-3, lo=0.0, hi=1.0)
    toy_lr_decay_frac: float = param(0.6, lo=0.0, hi=1.0,
                                     doc="last fraction of the 2-D updates over which lr decays geometrically to 1/10")
    toy_seeds: int = param(20, lo=2, hi=1000, doc="paired seeds per arm (members of each batched ensemble)")
    toy_eval_samples: int = param(2500, lo=10, hi=10**7)
    toy_eval_every: int = param(500, lo=1, hi=10**7, doc="2-D training curves: evaluate every this many updates")
    image_steps: int = param(8500, lo=1, hi=10**7, doc="Fashion-MNIST updates per run (training stage)")
    image_batch: int = param(64, lo=2, hi=4096)
    image_width: int = param(16, lo=1, hi=1024)
    image_z_dim: int = param(64, lo=1, hi=4096)
    image_lr: float = param(2e-3, lo=0.0, hi=1.0)
    image_seeds: int = param(8, lo=2, hi=100, doc="paired seeds per arm judged by one study run")
    image_eval_every: int = param(500, lo=1, hi=10**7)
    image_eval_samples: int = param(1500, lo=10, hi=10000)
    image_simultaneous: bool = param(False, doc="also train the two-optimizer simultaneous arm on Fashion-MNIST")
    image_lr_decay_frac: float = param(0.5, lo=0.0, hi=1.0,
                                       doc="Fashion-MNIST: last fraction of updates over which lr decays geometrically to 1/10")
    image_workers: int = param(2, lo=1, hi=64, doc="training stage: runs in parallel, one thread each")
    sweep_steps: int = param(12000, lo=2, hi=10**7)


# --- chapter 01's Fashion-MNIST runs: trained once in their own stage (`python -m kexue.gan train`) ---

FASHION_METHODS = ("single", "alternating")
FASHION_KEEP = 36                    # final samples kept per run for the notebook's figures (uint8)
SEED_OFFSET = 1000                   # kexue.verify reruns a chapter at seed + 1000


def fashion_seeds(seed: int, n: int) -> list[int]:
    """The paired seeds a study run judges: `n` from `seed` (the chapter's run: 0..n-1; its rerun by
    kexue.verify, at seed + 1000: 1000..1000+n-1)."""
    return [int(seed) + k for k in range(n)]


def fashion_run(method: str, seed: int, cfg: dict, x_train: torch.Tensor, real_feats: torch.Tensor,
                classifier: nn.Module, device: torch.device | str = "cpu") -> dict:
    """One DCGAN run on Fashion-MNIST (images in [-1, 1]) by `method`, Adam(beta1, beta2), lr decaying
    geometrically to 1/10 over the last `image_lr_decay_frac` of `image_steps` (`lr_factor`).

    Seed `seed` fixes the initial weights, data order and noise (the same in every method); the
    evaluation noise is seed + 10**6. Every `image_eval_every` updates (and at 0): classifier-feature
    FD of `image_eval_samples` samples against `real_feats` (`frechet_distance_active`), classes
    covered, KL of the class histogram to uniform. Returns the history, the last `FASHION_KEEP`
    samples as uint8, seconds and whether a loss became non-finite (training stops there).
    """
    import time
    from .metrics import class_coverage, extract, frechet_distance_active
    t0 = time.perf_counter()
    steps, batch, z_dim = cfg["image_steps"], cfg["image_batch"], cfg["image_z_dim"]
    torch.manual_seed(seed)
    G, D = DCGenerator(z_dim, cfg["image_width"]).to(device), DCDiscriminator(cfg["image_width"]).to(device)
    trainer = GANTrainer(G, D, method, gan_adam(cfg["beta1"], cfg["beta2"]), cfg["image_lr"], lam=cfg["lam"])
    opts = [trainer.opt] if method.startswith("single") else [trainer.opt_d, trainer.opt_g]
    base = [[g["lr"] for g in o.param_groups] for o in opts]
    gen = torch.Generator().manual_seed(seed)
    z_eval = torch.randn(cfg["image_eval_samples"], z_dim, generator=torch.Generator().manual_seed(10**6 + seed))

    def evaluate(step: int, losses: dict) -> dict:
        with torch.no_grad():          # BatchNorm in training mode: statistics of each 500-sample chunk
            imgs = torch.cat([G(z_eval[i:i + 500].to(device)).cpu() for i in range(0, len(z_eval), 500)])
        feats, preds = extract(classifier, imgs)
        cov = class_coverage(preds)
        return {"step": step, **losses, "fd": float(frechet_distance_active(feats, real_feats)),
                "classes": int(cov["classes"]), "class_kl": float(cov["kl_to_uniform"]), "_imgs": imgs}

    first = evaluate(0, {})
    history, last_imgs, diverged = [{k: v for k, v in first.items() if k != "_imgs"}], first["_imgs"], False
    for step in range(1, steps + 1):
        f = lr_factor(step, steps, cfg["image_lr_decay_frac"])
        for o, lrs in zip(opts, base):
            for g, lr0 in zip(o.param_groups, lrs):
                g["lr"] = lr0 * f
        x = x_train[torch.randint(len(x_train), (batch,), generator=gen)].to(device)
        z = torch.randn(batch, z_dim, generator=gen).to(device)
        losses = trainer.step(x, z)
        if not all(math.isfinite(v) for v in losses.values()):
            diverged = True
            history.append({"step": step, **losses, "fd": float("nan"), "classes": float("nan"),
                            "class_kl": float("nan")})
            break
        if step % cfg["image_eval_every"] == 0 or step == steps:
            row = evaluate(step, losses)
            last_imgs = row.pop("_imgs")
            history.append(row)
    keep = ((last_imgs[:FASHION_KEEP, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return {"method": method, "seed": int(seed), "history": history, "diverged": diverged,
            "seconds": round(time.perf_counter() - t0, 1), "samples": keep}


_WORKER: dict = {}


def _fashion_worker_init(cfg: dict) -> None:
    """Load data, classifier and the real test features once per worker process (one thread each)."""
    from .data import load_fashion_mnist
    from .metrics import extract, load_classifier
    torch.set_num_threads(1)
    x_train, _ = load_fashion_mnist(train=True)
    x_test, _ = load_fashion_mnist(train=False)
    classifier = load_classifier(device="cpu")
    real_feats, _ = extract(classifier, x_test[:cfg["image_eval_samples"]] * 2 - 1)
    _WORKER.update(cfg=cfg, x_train=x_train * 2 - 1, real_feats=real_feats, classifier=classifier)


def _fashion_worker_run(job: tuple[str, int]) -> dict:
    w = _WORKER
    return fashion_run(job[0], job[1], w["cfg"], w["x_train"], w["real_feats"], w["classifier"])


def train_fashion(cfg: dict, log: Callable[[str], None] = print) -> dict:
    """Every Fashion-MNIST run the chapter and its rerun judge: `FASHION_METHODS` x (`image_seeds`
    seeds from `seed` and from `seed + SEED_OFFSET`), on CPU in `image_workers` processes of one
    thread each (a run's numbers do not depend on how many run beside it)."""
    import multiprocessing as mp
    import time
    seeds = fashion_seeds(cfg["seed"], cfg["image_seeds"]) + fashion_seeds(cfg["seed"] + SEED_OFFSET, cfg["image_seeds"])
    methods = FASHION_METHODS + (("simultaneous",) if cfg["image_simultaneous"] else ())
    jobs = [(m, s) for s in seeds for m in methods]
    t0 = time.perf_counter()
    runs = []
    if cfg["image_workers"] == 1:
        _fashion_worker_init(cfg)
        results = map(_fashion_worker_run, jobs)
    else:
        pool = mp.get_context("spawn").Pool(cfg["image_workers"], _fashion_worker_init, (cfg,))
        results = pool.imap(_fashion_worker_run, jobs)
    for r in results:
        runs.append(r)
        last = r["history"][-1]
        log(f"{r['method']:>12} seed {r['seed']:>4}: FD {last['fd']:.1f}, {last['classes']} classes, "
            f"{r['seconds']:.0f} s ({time.perf_counter() - t0:.0f} s in all)")
    if cfg["image_workers"] != 1:
        pool.close()
        pool.join()
    keys = ("seed", "lam", "beta1", "beta2") + tuple(k for k in cfg if k.startswith("image_"))
    config = {**{k: cfg[k] for k in keys}, "methods": list(methods), "seeds": seeds, "threads_per_run": 1,
              "torch": torch.__version__, "stage_seconds": round(time.perf_counter() - t0)}
    samples = {f"{r['method']}_{r['seed']}": r.pop("samples") for r in runs}
    return {"config": config, "runs": runs, "samples": samples}


FASHION_RUNS_DIR = ROOT / "data" / "gan_fashion_runs"


def save_fashion_runs(result: dict, folder=FASHION_RUNS_DIR) -> "Path":
    """runs.json (config, histories, times) and samples.npz, with their SHA-256 in checksums.json
    (`kexue.data.save_checked_runs`)."""
    from .data import save_checked_runs
    return save_checked_runs(folder, {"config": result["config"], "runs": result["runs"]}, "samples.npz",
                             result["samples"])


def load_fashion_runs(folder=FASHION_RUNS_DIR) -> tuple[dict, list, dict]:
    """(config, runs, samples) of the committed training stage, checked against checksums.json."""
    from .data import load_checked_runs
    data, samples = load_checked_runs(folder, "samples.npz", "01_single_loss_gan_train", "python -m kexue.gan train")
    return data["config"], data["runs"], samples


def main(argv: list[str] | None = None) -> int:
    """`python -m kexue.gan train`: chapter 01's Fashion-MNIST training stage (params.yaml `gan`)."""
    import argparse
    from pathlib import Path
    from .config import chapter_params
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("command", choices=["train"])
    ap.add_argument("--out", default=str(FASHION_RUNS_DIR))
    ap.add_argument("--scale", choices=["smoke", "default", "gpu"], help="override common.scale")
    args = ap.parse_args(argv)
    cfg = chapter_params("gan", overrides={"common": {"scale": args.scale}} if args.scale else None)
    result = train_fashion(cfg, log=lambda m: print(m, flush=True))
    save_fashion_runs(result, Path(args.out))
    print(f"trained {len(result['runs'])} runs in {result['config']['stage_seconds']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
