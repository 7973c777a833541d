r"""EDM diffusion and Skip-Tuning (chapter 03).

Derived in `notebooks/03_skip_tuning.py`; seed article kexue.fm/archives/10077.

**EDM** (Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", arXiv:2206.00364). Data $y$ with per-pixel
std $\sigma_d$, noised as $x = y + n$, $n\sim\mathcal N(0,\sigma^2 I)$. The denoiser
is a preconditioned network (eq. 7, Table 1):

$$D_\theta(x;\sigma) = c_\text{skip}(\sigma)\,x + c_\text{out}(\sigma)\,F_\theta\big(c_\text{in}(\sigma)\,x;\ c_\text{noise}(\sigma)\big),$$
$$c_\text{skip} = \frac{\sigma_d^2}{\sigma^2+\sigma_d^2},\quad
  c_\text{out} = \frac{\sigma\,\sigma_d}{\sqrt{\sigma^2+\sigma_d^2}},\quad
  c_\text{in} = \frac{1}{\sqrt{\sigma^2+\sigma_d^2}},\quad
  c_\text{noise} = \tfrac14\ln\sigma .$$

Training (eq. 2 and 8): $\ln\sigma\sim\mathcal N(P_\text{mean}, P_\text{std}^2)$ and
$\mathbb E\,\lambda(\sigma)\,\lVert D_\theta(y+n;\sigma)-y\rVert^2$ with
$\lambda(\sigma) = (\sigma^2+\sigma_d^2)/(\sigma\sigma_d)^2 = 1/c_\text{out}^2$, so that the
network's effective target $(y - c_\text{skip}x)/c_\text{out}$ has unit variance and unit weight.

Sampling follows the probability-flow ODE $\mathrm dx/\mathrm d\sigma = (x - D(x;\sigma))/\sigma$
(eq. 1 with $\sigma(t)=t$) on the noise levels of eq. 5,

$$\sigma_i = \Big(\sigma_\max^{1/\rho} + \tfrac{i}{N-1}\big(\sigma_\min^{1/\rho}-\sigma_\max^{1/\rho}\big)\Big)^{\rho},
  \quad i<N,\qquad \sigma_N = 0,$$

with Euler steps, Heun steps (Algorithm 1: $2N-1$ evaluations, no correction on the step to 0),
or EDM's stochastic sampler (Algorithm 2: "churn" $\gamma_i$ adds noise before each step).

**Skip-Tuning** (Ma, Zhang, Xue, Huang 2024, arXiv:2402.15170): multiply the U-Net's
encoder skip features, before they are concatenated into the decoder, by
$\rho_\text{top}$ (outermost skip) ... $\rho_\text{bottom}$ (innermost), linearly spaced
(`skip_scales`). `SkipUNet.skip_scales` holds one factor per skip; `None` (or all
1.0) is the untouched network, bit for bit. The paper's Appendix C: a GroupNorm right
after the concatenation normalises the scale away, so a scaled skip acts only through
the block's residual 1x1 path (and through groups that straddle the boundary; here
none do). The article's DiT remark (no U-Net skips): scale the residual blocks'
identity branch instead (`SkipUNet.residual_scales`).

**FreeU** (Si et al. 2023, arXiv:2309.11497), the related baseline: in the decoder,
multiply the first half of the backbone channels by $b$ and scale the low
frequencies of the skip feature by $s$ (`fourier_filter`, `freeu_scales`).

`python -m kexue.diffusion train` is the training stage (params.yaml `skip_tuning`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ROOT, param

UNET_PATH = ROOT / "data" / "skip_tuning_unet.pt"
TRAIN_REPORT = ROOT / "reports" / "skip_tuning_train"

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # D(x [B, ...], sigma [B]) -> [B, ...]

__all__ = [
    "CountingDenoiser", "EDMPrecond", "ResBlock", "SkipConnection", "SkipTuningParams", "SkipUNet",
    "classifier_fd", "edm_loss", "edm_loss_weight", "edm_precondition", "edm_sigmas", "ema_beta", "euler_sample",
    "argmin_per_set", "denoising_errors", "fourier_filter", "freeu_scales", "gaussian_denoiser",
    "generate", "heun_sample", "load_unet", "map_nonlinearity", "save_unet", "skip_scales", "stochastic_sample",
    "speedup_rule", "train_unet",
]


def _check(name: str, value, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r}: {rule}")


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, 1, ...] broadcastable against x."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def _sigma_vector(sigma, x: torch.Tensor) -> torch.Tensor:
    """A float, 0-d or [B] sigma -> [B] on x's device and dtype."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
    return sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma


def _randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws from `generator` (on its own device), moved to `like`'s device."""
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)


# --- preconditioning and loss (notebook section 1; EDM Table 1, eqs. 2, 7, 8) ---

def edm_precondition(sigma, sigma_data: float = 0.5):
    r"""$(c_\text{skip}, c_\text{out}, c_\text{in}, c_\text{noise})$ at noise level(s) `sigma` (EDM Table 1).

    `sigma` is a float or a tensor (any shape); floats give float64 tensors. $c_\text{noise}$ is
    $-\infty$ at $\sigma=0$, where no sampler evaluates the network.
    """
    _check("sigma_data", sigma_data, sigma_data > 0 and math.isfinite(sigma_data), "must be positive and finite")
    sigma = sigma if torch.is_tensor(sigma) else torch.tensor(sigma, dtype=torch.float64)
    total = sigma ** 2 + sigma_data ** 2                 # variance of x = y + n
    c_skip = sigma_data ** 2 / total
    c_out = sigma * sigma_data / total.sqrt()
    c_in = 1 / total.sqrt()                               # c_in x has unit variance
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def edm_loss_weight(sigma, sigma_data: float = 0.5):
    r"""$\lambda(\sigma) = (\sigma^2+\sigma_d^2)/(\sigma\sigma_d)^2 = 1/c_\text{out}(\sigma)^2$ (EDM Table 1)."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def edm_loss(denoiser: Denoiser, x: torch.Tensor, generator: torch.Generator | None = None,
             p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5) -> torch.Tensor:
    r"""EDM training loss (eq. 2 with Table 1's choices), mean over batch and pixels:

    $\ln\sigma\sim\mathcal N(P_\text{mean},P_\text{std}^2)$, $n\sim\mathcal N(0,\sigma^2 I)$,
    $\lambda(\sigma)\,(D(x+n;\sigma) - x)^2$.

    Draw order (so a test can repeat it): first the [B] normals of $\ln\sigma$, then the
    noise, both from `generator` (on its own device).
    """
    log_sigma = _randn((x.shape[0],), generator, x) * p_std + p_mean       # [B]
    sigma = log_sigma.exp()                                                 # [B]
    noise = _randn(x.shape, generator, x) * _per_sample(sigma, x)           # [B, C, H, W]
    denoised = denoiser(x + noise, sigma)                                   # [B, C, H, W]
    weight = _per_sample(edm_loss_weight(sigma, sigma_data), x)             # [B, 1, 1, 1]
    return (weight * (denoised - x) ** 2).mean()


class EDMPrecond(nn.Module):
    r"""$D(x;\sigma) = c_\text{skip}x + c_\text{out}F(c_\text{in}x;\,c_\text{noise})$ around a network
    `net(x, c_noise [B])` (EDM eq. 7). Call as `denoiser(x, sigma)` with sigma a float or [B]."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = _sigma_vector(sigma, x)                                                 # [B]
        c_skip, c_out, c_in, c_noise = edm_precondition(sigma, self.sigma_data)         # each [B]
        f = self.net(_per_sample(c_in, x) * x, c_noise)                                 # [B, C, H, W]
        return _per_sample(c_skip, x) * x + _per_sample(c_out, x) * f


def gaussian_denoiser(sigma_data: float = 0.5) -> Denoiser:
    r"""The exact denoiser of data $\mathcal N(0,\sigma_d^2 I)$: $D(x;\sigma) = \frac{\sigma_d^2}{\sigma^2+\sigma_d^2}x$.

    Its probability-flow ODE $\mathrm dx/\mathrm d\sigma = \sigma x/(\sigma^2+\sigma_d^2)$ has the solution
    $x(\sigma)\propto\sqrt{\sigma^2+\sigma_d^2}$: each sample is scaled, exactly, by
    $\sqrt{\sigma_b^2+\sigma_d^2}/\sqrt{\sigma_a^2+\sigma_d^2}$ from level $\sigma_a$ to $\sigma_b$.
    """
    def denoise(x: torch.Tensor, sigma) -> torch.Tensor:
        s = _per_sample(_sigma_vector(sigma, x), x)
        return sigma_data ** 2 / (s ** 2 + sigma_data ** 2) * x
    return denoise


class CountingDenoiser:
    """Wraps a denoiser and counts its calls (`calls`: network function evaluations, NFE)."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        self.calls += 1
        return self.denoiser(x, sigma)


# --- noise levels and samplers (notebook section 2; EDM eq. 5, Algorithms 1 and 2) ---

def edm_sigmas(n_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    r"""The $N$ = `n_steps` noise levels of EDM eq. 5 followed by $\sigma_N=0$: float64 [n_steps + 1].

    With one step the single level is $\sigma_\max$ (eq. 5 divides by $N-1$).
    """
    _check("n_steps", n_steps, isinstance(n_steps, int) and not isinstance(n_steps, bool) and n_steps >= 1,
           "must be an int >= 1")
    _check("sigma_min", sigma_min, 0 < sigma_min < math.inf, "must be positive and finite")
    _check("sigma_max", sigma_max, sigma_min <= sigma_max < math.inf, f"must be finite and >= sigma_min={sigma_min}")
    _check("rho", rho, 0 < rho < math.inf, "must be positive and finite")
    if n_steps == 1:
        levels = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        ramp = torch.arange(n_steps, dtype=torch.float64) / (n_steps - 1)                # i / (N - 1)
        hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        levels = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([levels, torch.zeros(1, dtype=torch.float64)])


def _check_sigmas(sigmas) -> list[float]:
    s = [float(v) for v in torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)]
    _check("len(sigmas)", len(s), len(s) >= 2, "need at least two noise levels (one step)")
    ok = all(math.isfinite(v) and v >= 0 for v in s) and all(a > b for a, b in zip(s, s[1:]))
    _check("sigmas", s, ok, "must be finite, >= 0 and strictly decreasing")
    return s


@torch.no_grad()
def euler_sample(denoiser: Denoiser, x: torch.Tensor, sigmas) -> torch.Tensor:
    r"""Euler's method on the probability-flow ODE: $x \leftarrow x + (\sigma_{i+1}-\sigma_i)\,d_i$ with
    $d_i = (x - D(x;\sigma_i))/\sigma_i$. N steps, N denoiser calls. `x` starts at level `sigmas[0]`
    (e.g. `sigmas[0] * randn`)."""
    s = _check_sigmas(sigmas)
    for t_cur, t_next in zip(s[:-1], s[1:]):
        d = (x - denoiser(x, _sigma_vector(t_cur, x))) / t_cur                      # dx/dsigma at t_cur
        x = x + (t_next - t_cur) * d
    return x


@torch.no_grad()
def stochastic_sample(denoiser: Denoiser, x: torch.Tensor, sigmas, s_churn: float = 0.0, s_tmin: float = 0.0,
                      s_tmax: float = math.inf, s_noise: float = 1.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    r"""EDM Algorithm 2: before step $i$ raise the noise level from $t_i$ to
    $\hat t_i = t_i(1+\gamma_i)$ by adding $\sqrt{\hat t_i^2 - t_i^2}\,S_\text{noise}\,\epsilon$,
    $\gamma_i = \min(S_\text{churn}/N, \sqrt2-1)$ for $t_i\in[S_{t\min}, S_{t\max}]$ (else 0),
    then one Heun step from $\hat t_i$ to $t_{i+1}$ (no correction when $t_{i+1}=0$).
    With `s_churn=0` this is Algorithm 1 (`heun_sample`), and no noise is drawn.
    """
    s = _check_sigmas(sigmas)
    _check("s_churn", s_churn, 0 <= s_churn < math.inf, "must be >= 0 and finite")
    _check("s_noise", s_noise, 0 <= s_noise < math.inf, "must be >= 0 and finite")
    n = len(s) - 1
    for t_cur, t_next in zip(s[:-1], s[1:]):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= t_cur <= s_tmax else 0.0
        t_hat = t_cur * (1 + gamma)
        x_hat = x
        if gamma > 0:                                                                  # churn: add fresh noise
            x_hat = x + math.sqrt(t_hat ** 2 - t_cur ** 2) * s_noise * _randn(x.shape, generator, x)
        d_cur = (x_hat - denoiser(x_hat, _sigma_vector(t_hat, x))) / t_hat            # Euler slope at t_hat
        x = x_hat + (t_next - t_hat) * d_cur
        if t_next > 0:                                                                 # Heun (2nd-order) correction
            d_next = (x - denoiser(x, _sigma_vector(t_next, x))) / t_next
            x = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_next)
    return x


def heun_sample(denoiser: Denoiser, x: torch.Tensor, sigmas) -> torch.Tensor:
    r"""EDM Algorithm 1 (deterministic, 2nd order): an Euler step, then the trapezoidal (Heun)
    correction except on the step to $\sigma=0$; $2N-1$ denoiser calls for `sigmas` of length
    $N+1$ ending in 0 ($2N$ when it does not end in 0). `x` starts at level `sigmas[0]`."""
    return stochastic_sample(denoiser, x, sigmas, s_churn=0.0)


# --- Skip-Tuning and FreeU scales (notebook section 3) ---

def skip_scales(n_skips: int, rho_top: float, rho_bottom: float) -> list[float]:
    r"""Skip-Tuning's factors, outermost skip (nearest input and output) first:
    $\rho_k = \rho_\text{top} + \frac{k}{K-1}(\rho_\text{bottom}-\rho_\text{top})$, $k=0..K-1$
    (one skip: $[\rho_\text{top}]$)."""
    _check("n_skips", n_skips, isinstance(n_skips, int) and not isinstance(n_skips, bool) and n_skips >= 1,
           "must be an int >= 1")
    for name, v in (("rho_top", rho_top), ("rho_bottom", rho_bottom)):
        _check(name, v, isinstance(v, (int, float)) and 0 <= v <= 10, "must be in [0, 10]")
    if n_skips == 1:
        return [float(rho_top)]
    return [float(rho_top + (rho_bottom - rho_top) * k / (n_skips - 1)) for k in range(n_skips)]


def freeu_scales(n_skips: int, b1: float = 1.2, b2: float = 1.4, s1: float = 0.9, s2: float = 0.2,
                 stages: Sequence[int] | None = None) -> tuple[list[float], list[float]]:
    """FreeU's factors as (backbone_scales, skip_lowfreq_scales), outermost skip first: every decoder
    block of the innermost (lowest-resolution) stage gets (b1, s1), every block of the next stage out
    (b2, s2), the rest 1.0, as FreeU v1 does on the two lowest-resolution decoder stages; defaults are
    its Stable Diffusion 1.x values. `stages[k]`: the resolution stage of skip k (higher = coarser;
    `SkipUNet.skip_stages`); None: one skip per stage."""
    _check("n_skips", n_skips, isinstance(n_skips, int) and n_skips >= 2, "must be an int >= 2")
    stages = list(range(n_skips)) if stages is None else [int(v) for v in stages]
    _check("stages", stages, len(stages) == n_skips and len(set(stages)) >= 2 and stages == sorted(stages),
           f"need one non-decreasing stage per skip ({n_skips}) and at least two stages")
    inner, next_out = sorted(set(stages))[-1], sorted(set(stages))[-2]
    b = [b1 if st == inner else b2 if st == next_out else 1.0 for st in stages]
    s = [s1 if st == inner else s2 if st == next_out else 1.0 for st in stages]
    return b, s


def fourier_filter(x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
    """FreeU's skip filter: multiply the 2-D Fourier coefficients of [B, C, H, W] within `threshold`
    frequency bins of zero (the centred square of side 2*threshold) by `scale`."""
    _check("threshold", threshold, isinstance(threshold, int) and threshold >= 1, "must be an int >= 1")
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.double(), dim=(-2, -1)), dim=(-2, -1))   # [B, C, H, W] complex
    h, w = x.shape[-2:]
    mask = torch.ones(h, w, dtype=torch.float64, device=x.device)
    ch, cw = h // 2, w // 2                                                                  # zero frequency after shift
    mask[ch - threshold:ch + threshold, cw - threshold:cw + threshold] = scale
    spectrum = torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))
    return torch.fft.ifftn(spectrum, dim=(-2, -1)).real.to(x.dtype)


# --- the U-Net (notebook section 3) ---

GROUP_SIZE = 8   # channels per GroupNorm group; every width is a multiple, so no group straddles a concatenation


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(channels // GROUP_SIZE, channels)


class ResBlock(nn.Module):
    r"""GroupNorm -> SiLU -> 3x3 conv -> + embedding -> GroupNorm -> SiLU -> 3x3 conv, plus the residual
    branch: the identity when channel counts agree, else a 1x1 conv (`residual=False`: none).
    `identity_scale` (None = 1) multiplies the residual branch (the article's DiT remark)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, residual: bool = True):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2, self.conv2 = group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = None if not residual else (nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1))
        self.identity_scale: float | None = None
        nn.init.zeros_(self.conv2.weight)          # each block starts as its residual branch (EDM's init_zero)
        nn.init.zeros_(self.conv2.bias)

    def branches(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(main branch, residual branch or None): the two terms `forward` adds. The main branch starts
        with a GroupNorm; only the residual branch sees the input's scale (notebook section 3)."""
        h = self.conv1(F.silu(self.norm1(x)))                   # [B, out, H, W]
        h = h + self.emb(emb)[:, :, None, None]                 # noise level as a per-channel bias
        h = self.conv2(F.silu(self.norm2(h)))                   # [B, out, H, W]
        if self.shortcut is None:
            return h, None
        r = self.shortcut(x)
        return h, (r if self.identity_scale is None else r * self.identity_scale)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h, r = self.branches(x, emb)
        return h if r is None else h + r


class SkipConnection(nn.Module):
    """One U-Net skip: the encoder feature, FreeU-filtered (`lowfreq_scale`, None = off) then multiplied
    by `scale` (None = untouched), on its way to the decoder concatenation. A module so hooks can see it."""

    def __init__(self):
        super().__init__()
        self.scale: float | None = None
        self.lowfreq_scale: float | None = None
        self.threshold = 1

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.lowfreq_scale is not None:
            s = fourier_filter(s, self.threshold, self.lowfreq_scale)
        return s if self.scale is None else s * self.scale


class NoiseEmbedding(nn.Module):
    r"""c_noise [B] -> sinusoids at geometric frequencies `min_freq`..`max_freq` (cycles per unit of c_noise)
    -> 2-layer MLP -> [B, emb_dim]. With EDM's $c_\text{noise} = \tfrac14\ln\sigma$ the sampling range
    $\sigma\in[0.002, 80]$ spans 2.65 units, so `max_freq` 2 gives at most about 5 periods over it: the
    embedding, and so $D(x;\sigma)$, stays smooth in $\sigma$ (the first networks used 100, about 265 periods)."""

    def __init__(self, emb_dim: int, n_freqs: int = 16, min_freq: float = 0.1, max_freq: float = 100.0):
        super().__init__()
        _check("max_freq", max_freq, 0 < min_freq < max_freq < math.inf, f"must exceed min_freq ({min_freq}) > 0")
        freqs = torch.logspace(math.log10(min_freq), math.log10(max_freq), n_freqs)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim), nn.SiLU())

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angle = 2 * math.pi * c_noise[:, None].to(self.freqs.dtype) * self.freqs       # [B, n_freqs]
        return self.mlp(torch.cat([angle.cos(), angle.sin()], 1).to(self.mlp[0].weight.dtype))


class SkipUNet(nn.Module):
    r"""A small U-Net $F(x; c_\text{noise})$ whose skips each carry a scale.

    Encoder: `conv_in` (skip 0, the outermost), then `blocks` ResBlocks per level (each one a skip,
    as in EDM's networks), with 2x average pooling before each level after the first; a middle
    ResBlock; decoder block `dec[k]` takes `cat([backbone, skip k])` (the GroupNorm follows the
    concatenation, the 1x1 residual conv sees the raw concatenation) and 2x nearest upsampling where
    the resolution grows. No attention (CPU budget). For `channels=(32, 64, 64)`, `blocks=1` on 28x28:
    skips at 28, 28, 14, 7 pixels with 32, 32, 64, 64 channels; `blocks=2`: 7 skips (28 x3, 14 x2, 7 x2).
    `max_freq`: the noise embedding's highest frequency (`NoiseEmbedding`).

    Knobs (all None = the trained network, bit for bit):
    `skip_scales` (one per skip, outermost first), `backbone_scales` and `skip_lowfreq_scales`
    (FreeU, per decoder block = per skip), `residual_scales` (one per ResBlock, in `res_blocks()` order).
    """

    def __init__(self, in_ch: int = 1, channels: Sequence[int] = (32, 64, 64), emb_dim: int = 128, blocks: int = 1,
                 max_freq: float = 100.0):
        super().__init__()
        channels = [int(c) for c in channels]
        _check("channels", channels, len(channels) >= 1 and all(c >= GROUP_SIZE and c % GROUP_SIZE == 0 for c in channels),
               f"need at least one level, each a positive multiple of {GROUP_SIZE}")
        _check("blocks", blocks, int(blocks) == blocks and blocks >= 1, "need at least one ResBlock per level")
        self.config = {"in_ch": in_ch, "channels": channels, "emb_dim": emb_dim, "blocks": int(blocks),
                       "max_freq": float(max_freq)}
        self.embed = NoiseEmbedding(emb_dim, max_freq=max_freq)
        self.conv_in = nn.Conv2d(in_ch, channels[0], 3, padding=1)
        self.levels = [lv for lv in range(len(channels)) for _ in range(int(blocks))]   # level of encoder block i
        skip_ch = [channels[0]] + [channels[lv] for lv in self.levels]               # channels of skip k
        self.enc = nn.ModuleList(ResBlock(skip_ch[i], skip_ch[i + 1], emb_dim) for i in range(len(self.levels)))
        self.mid = ResBlock(channels[-1], channels[-1], emb_dim)
        # dec[k] follows dec[k + 1] (whose output has skip k+1's channels); the innermost follows `mid`
        dec_in = skip_ch[1:] + [channels[-1]]
        self.dec = nn.ModuleList(ResBlock(dec_in[k] + skip_ch[k], skip_ch[k], emb_dim) for k in range(len(skip_ch)))
        self.skips = nn.ModuleList(SkipConnection() for _ in skip_ch)
        self.norm_out, self.conv_out = group_norm(channels[0]), nn.Conv2d(channels[0], in_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.backbone_scales: list[float] | None = None

    @property
    def n_skips(self) -> int:
        return len(self.skips)

    @property
    def skip_stages(self) -> list[int]:
        """Resolution stage of each skip, outermost first (0 = full resolution; `conv_in` is stage 0)."""
        return [0] + list(self.levels)

    def _per_skip(self, name: str, values) -> list | None:
        if values is None:
            return None
        values = [float(v) for v in values]
        _check(f"len({name})", len(values), len(values) == self.n_skips, f"need one value per skip ({self.n_skips})")
        return values

    @property
    def skip_scales(self) -> list[float] | None:
        scales = [m.scale for m in self.skips]
        return None if all(s is None for s in scales) else [1.0 if s is None else s for s in scales]

    @skip_scales.setter
    def skip_scales(self, values: Sequence[float] | None) -> None:
        values = self._per_skip("skip_scales", values)
        for k, m in enumerate(self.skips):
            m.scale = None if values is None else values[k]

    @property
    def skip_lowfreq_scales(self) -> list[float] | None:
        scales = [m.lowfreq_scale for m in self.skips]
        return None if all(s is None for s in scales) else [1.0 if s is None else s for s in scales]

    @skip_lowfreq_scales.setter
    def skip_lowfreq_scales(self, values: Sequence[float] | None) -> None:
        values = self._per_skip("skip_lowfreq_scales", values)
        for k, m in enumerate(self.skips):         # 1.0 means off: no FFT round trip, bit-identical
            m.lowfreq_scale = None if values is None or values[k] == 1.0 else values[k]

    def res_blocks(self) -> list[ResBlock]:
        """Every ResBlock in execution order: encoder, middle, decoder (innermost first)."""
        return list(self.enc) + [self.mid] + [self.dec[k] for k in reversed(range(self.n_skips))]

    @property
    def residual_scales(self) -> list[float] | None:
        scales = [b.identity_scale for b in self.res_blocks()]
        return None if all(s is None for s in scales) else [1.0 if s is None else s for s in scales]

    @residual_scales.setter
    def residual_scales(self, values: Sequence[float] | None) -> None:
        blocks = self.res_blocks()
        if values is not None:
            values = [float(v) for v in values]
            _check("len(residual_scales)", len(values), len(values) == len(blocks),
                   f"need one value per ResBlock ({len(blocks)})")
        for i, b in enumerate(blocks):
            b.identity_scale = None if values is None else values[i]

    def set_backbone_scales(self, values: Sequence[float] | None) -> None:
        self.backbone_scales = self._per_skip("backbone_scales", values)

    def reset_knobs(self) -> None:
        """Back to the trained network: no skip, FreeU or residual scaling."""
        self.skip_scales = self.skip_lowfreq_scales = self.residual_scales = None
        self.backbone_scales = None

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.embed(c_noise)                                   # [B, emb_dim]
        h = self.conv_in(x)                                         # [B, c0, H, W]
        feats = [h]                                                 # encoder features, outermost first
        for i, block in enumerate(self.enc):
            if i > 0 and self.levels[i] > self.levels[i - 1]:
                h = F.avg_pool2d(h, 2)                              # [B, c, H/2, W/2]
            h = block(h, emb)
            feats.append(h)
        h = self.mid(h, emb)
        for k in reversed(range(self.n_skips)):                     # innermost skip first
            s = self.skips[k](feats[k])                             # the scaled skip feature
            if h.shape[-2:] != s.shape[-2:]:
                h = F.interpolate(h, size=s.shape[-2:], mode="nearest")
            if self.backbone_scales is not None and self.backbone_scales[k] != 1.0:
                half = h.shape[1] // 2                              # FreeU: first half of the backbone channels
                h = torch.cat([h[:, :half] * self.backbone_scales[k], h[:, half:]], 1)
            h = self.dec[k](torch.cat([h, s], 1), emb)              # [B, c_k, H_k, W_k]
        return self.conv_out(F.silu(self.norm_out(h)))              # [B, in_ch, H, W]


# --- measurements of the chapter (notebook sections 3-8) ---

@torch.no_grad()
def map_nonlinearity(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, eps: float,
                     generator: torch.Generator) -> float:
    r"""How far a map bends along random chords, relative to how far it moves:

    $$\mathrm{NL}(f) = \frac{\mathbb E\,\lVert f(z+\epsilon v) - 2f(z) + f(z-\epsilon v)\rVert}
                            {\mathbb E\,\lVert f(z+\epsilon v) - f(z-\epsilon v)\rVert},$$

    $v\sim\mathcal N(0, I)$ rescaled per sample to $\lVert z\rVert$, so $\epsilon$ is a relative step.
    Zero for an affine map; for small $\epsilon$ it is about $\tfrac{\epsilon}{2}\,
    \lVert v^\top\nabla^2 f\,v\rVert / \lVert J_f v\rVert$. The three points go through `fn` as one
    batch [3B, ...] (a sampler treats samples independently). z: [B, ...]."""
    _check("eps", eps, 0 < eps < math.inf, "must be positive and finite")
    v = _randn(z.shape, generator, z)
    ratio = z.flatten(1).norm(dim=1) / v.flatten(1).norm(dim=1)                       # [B]
    v = v * _per_sample(ratio, z)                                                     # |v| = |z| per sample
    out = fn(torch.cat([z + eps * v, z, z - eps * v]))                               # [3B, ...]
    plus, mid, minus = out.chunk(3)
    bend = (plus - 2 * mid + minus).flatten(1).norm(dim=1).mean()
    move = (plus - minus).flatten(1).norm(dim=1).mean()
    return float(bend / move)


@torch.no_grad()
def denoising_errors(denoiser: Denoiser, images: torch.Tensor, sigmas, features: Callable[[torch.Tensor], torch.Tensor],
                     generator: torch.Generator) -> list[dict]:
    r"""Per noise level: the denoiser's pixel error $(D(y+\sigma n;\sigma)-y)^2$ (mean over pixels) and its
    error in a feature space, $\lVert \phi(D) - \phi(y)\rVert^2/d$, per clean image y of `images`
    (tensors [B], so two networks can be compared image by image). One noise draw $n$ per image, reused at
    every level (draw it again with the same `generator` seed to compare two networks on the same noise)."""
    noise = _randn(images.shape, generator, images)                                  # [B, C, H, W]
    target = features(images)                                                        # [B, d]
    out = []
    for sigma in [float(v) for v in torch.as_tensor(sigmas).reshape(-1)]:
        _check("sigma", sigma, 0 < sigma < math.inf, "must be positive and finite")
        d = denoiser(images + sigma * noise, sigma)
        out.append({"sigma": sigma, "pixel_mse": ((d - images) ** 2).flatten(1).mean(1),
                    "feature_mse": ((features(d) - target) ** 2).flatten(1).mean(1)})
    return out


def argmin_per_set(fd: dict[float, Sequence[float]]) -> list[float]:
    """For FDs `fd[rho][set]` on shared sample sets: the rho with the lowest FD in each set (ties: the first listed)."""
    rhos = list(fd)
    n = {len(v) for v in fd.values()}
    _check("fd", sorted(n), len(n) == 1, "every rho needs the same number of sample sets")
    return [rhos[min(range(len(rhos)), key=lambda j: (fd[rhos[j]][i], j))] for i in range(n.pop())]


def speedup_rule(tuned_nfe: int | None, untuned_nfe: int | None, baseline_nfe: int, at_match=None,
                 margin: float | None = None):
    """Claim: with Skip-Tuning, fewer NFE match the untuned sampler at `baseline_nfe` than without it.

    `tuned_nfe`, `untuned_nfe`: `first_match` results (None: no NFE below the baseline matched; an untuned
    None counts as `baseline_nfe`). `at_match`: the Verdict of "tuned beats untuned at `tuned_nfe`"
    (`verdicts.superiority` on the judging sets, with the match margin as its margin). When tuned sampling
    matches at no NFE below the baseline, or at no fewer NFE than untuned sampling, the data show no
    saving, but no test rules one out (a first match is a non-inferiority bound, not a test of the
    difference): inconclusive. When it matches earlier, that must not be a coin flip at the margin, so
    `at_match` decides: supported when tuned sampling is significantly better than untuned there,
    contradicted when the difference is shown to be smaller than the margin (or goes the other way),
    inconclusive otherwise. `margin`: the match margin (recorded on every path)."""
    import dataclasses
    from .verdicts import INCONCLUSIVE, Verdict
    untuned = baseline_nfe if untuned_nfe is None else untuned_nfe
    if tuned_nfe is None or tuned_nfe >= baseline_nfe:
        return Verdict(INCONCLUSIVE, "straddles", f"tuned sampling matches {baseline_nfe} NFE at no NFE below it "
                       "(no saving shown; no test rules one out)", margin=margin)
    ev = f"tuned sampling matches at {tuned_nfe} NFE, untuned at {untuned} NFE"
    if tuned_nfe >= untuned:
        return Verdict(INCONCLUSIVE, "straddles", ev + ": tuning saves no steps here (no test rules a saving out)",
                       margin=margin)
    ev += f" (NFE ratio {baseline_nfe / tuned_nfe:.2g}× against {baseline_nfe / untuned:.2g}×)"
    if at_match is None:
        raise ValueError("at_match: the tuned-vs-untuned verdict at the tuned match is needed when tuning matches earlier")
    ev += f"; at {tuned_nfe} NFE, tuned vs untuned: {at_match.evidence}"
    return dataclasses.replace(at_match, evidence=ev, margin=margin if margin is not None else at_match.margin)


# --- chapter 03 parameters (params.yaml `skip_tuning`) ---

@dataclass
class SkipTuningParams:
    """params.yaml `skip_tuning`: the chapter-03 U-Net training and sampling (validated by kexue.config)."""

    train_steps: int = param(11000, lo=1, hi=10**7, doc="Adam updates of the U-Net (the training stage: at most 60 min on 2 CPU cores)")
    train_batch: int = param(64, lo=2, hi=4096)
    train_lr: float = param(2e-3, lo=0.0, hi=1.0, doc="Adam lr after the linear warmup")
    train_warmup: int = param(200, lo=0, hi=10**6, doc="linear lr warmup, in updates")
    ema_halflife: int = param(1000, lo=1, hi=10**7, doc="EMA of the weights: half-life in updates")
    width: int = param(16, lo=8, hi=512, doc="U-Net channels (width, 2 width, 4 width) at 28/14/7 pixels; a multiple of 8")
    blocks: int = param(2, lo=1, hi=8, doc="ResBlocks (= skips) per resolution; EDM's networks have 2 or more")
    emb_max_freq: float = param(2.0, lo=0.01, hi=1000.0, doc="highest noise-embedding frequency, cycles per unit of ln(sigma)/4")
    heldout_every: int = param(500, lo=1, hi=10**7, doc="updates between held-out losses of the EMA network")
    heldout_images: int = param(1000, lo=8, hi=10000, doc="test images of the held-out loss (fixed noise levels and draws)")
    sigma_data: float = param(0.5, lo=1e-3, hi=10.0, doc="EDM sigma_d (data std assumed by the preconditioning)")
    p_mean: float = param(-1.2, lo=-10.0, hi=10.0, doc="training ln sigma ~ N(p_mean, p_std^2)")
    p_std: float = param(1.2, lo=1e-3, hi=10.0)
    sigma_min: float = param(0.002, lo=1e-6, hi=10.0)
    sigma_max: float = param(80.0, lo=1e-3, hi=1e4)
    sigma_rho: float = param(7.0, lo=0.1, hi=100.0, doc="EDM eq. 5 schedule exponent (not a Skip-Tuning rho)")
    baseline_steps: int = param(18, lo=1, hi=1000, doc="Heun steps of the baseline (2N-1 = 35 NFE)")
    eval_samples: int = param(1000, lo=10, hi=50000, doc="samples of the training stage's baseline FD")
    # The sampling study (notebook 03); the training stage does not read these.
    fd_sets: int = param(5, lo=3, hi=100, doc="independent sample sets per cell: set 0 picks rho, the others judge")
    fd_samples: int = param(160, lo=10, hi=50000, doc="samples per set (classifier FD against the test split)")
    compare_nfe: int = param(9, lo=3, hi=1000, doc="NFE of the side-by-side comparisons (residual, FreeU, per-sigma errors)")
    sde_nfe: int = param(13, lo=3, hi=1000, doc="NFE of the stochastic-sampler study (odd: 2N-1 Heun evaluations)")
    sde_churn: float = param(2.0, lo=0.0, hi=1000.0, doc="EDM S_churn of the stochastic sampler (gamma = S_churn / N)")
    nonlin_batch: int = param(16, lo=2, hi=10000, doc="noise draws per set for the nonlinearity of the sampling map")
    nonlin_eps: float = param(0.1, lo=1e-4, hi=1.0, doc="relative chord length of the nonlinearity measure")
    sigma_points: int = param(10, lo=3, hi=100, doc="noise levels of the per-sigma denoising errors")
    sigma_images: int = param(500, lo=10, hi=10000, doc="test images of the per-sigma denoising errors")


# --- training (the `03_skip_tuning_train` stage) ---

def ema_beta(step: int, halflife: int, rampup: float = 0.1) -> float:
    """EMA decay after update `step` (from 1) for a half-life in updates; like EDM's `ema_rampup_ratio`,
    the half-life is at most `rampup * step`, so the random initial weights are forgotten early."""
    return 0.5 ** (1.0 / max(min(halflife, rampup * step), 1e-8))


def sha256_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")


def fashion_train_images() -> torch.Tensor:
    """Fashion-MNIST training images in [-1, 1], [60000, 1, 28, 28]."""
    from .data import load_fashion_mnist
    x, _ = load_fashion_mnist(train=True)
    return x * 2 - 1


@torch.no_grad()
def generate(denoiser: Denoiser, n: int, sigmas, generator: torch.Generator, batch: int = 500,
             shape=(1, 28, 28), device="cpu", sampler: str = "heun", **kw) -> torch.Tensor:
    """`n` samples from `sigmas[0] * N(0, I)` through `sampler` (heun | euler | stochastic), in batches."""
    samplers = {"heun": heun_sample, "euler": euler_sample, "stochastic": stochastic_sample}
    _check("sampler", sampler, sampler in samplers, f"must be one of {sorted(samplers)}")
    s0 = float(torch.as_tensor(sigmas)[0])
    out = []
    for i in range(0, n, batch):
        z = torch.randn((min(batch, n - i), *shape), generator=generator, device=generator.device).to(device)
        if sampler == "stochastic":
            kw.setdefault("generator", generator)
        out.append(samplers[sampler](denoiser, z * s0, sigmas, **kw).cpu())
    return torch.cat(out)


def classifier_fd(images: torch.Tensor, real_feats: torch.Tensor, classifier) -> float:
    """Classifier-feature Fréchet distance (kexue.metrics) of images clamped to [-1, 1]."""
    from .metrics import extract, frechet_distance_active
    feats, _ = extract(classifier, images.clamp(-1, 1))
    return frechet_distance_active(feats, real_feats)


def train_unet(p: dict, device: torch.device | str = "cpu", log=None, callback=None) -> tuple[EDMPrecond, dict]:
    """Train a SkipUNet with the EDM loss on Fashion-MNIST; return the EMA denoiser and a loss summary.

    `p` holds the `skip_tuning` parameters plus `seed` and `threads` (as `chapter_params` gives them).
    Same seed, threads and device = the same weights on CPU. `callback(step, ema)` runs after each
    update (step counted from 1); `log` wraps the step iterator (a progress bar).
    """
    import copy
    from .config import seed_everything
    seed_everything(p["seed"], p["threads"])
    device = torch.device(device)
    x = fashion_train_images()
    gen = torch.Generator().manual_seed(p["seed"])
    net = SkipUNet(channels=(p["width"], 2 * p["width"], 4 * p["width"]), blocks=p["blocks"],
                   max_freq=p["emb_max_freq"]).to(device)
    model = EDMPrecond(net, p["sigma_data"])
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=p["train_lr"])
    from .data import load_fashion_mnist
    x_held = load_fashion_mnist(train=False)[0][:p["heldout_images"]] * 2 - 1              # [N, 1, 28, 28]
    held = []                                                                              # (step, loss)

    @torch.no_grad()
    def heldout_loss(step):
        """EDM loss of the EMA network on test images with the same noise levels and draws every time."""
        parts = [edm_loss(ema, xb.to(device), torch.Generator().manual_seed(10_000 + i), p["p_mean"], p["p_std"],
                          p["sigma_data"]) * len(xb) for i, xb in enumerate(x_held.split(500))]
        held.append((step, float(sum(parts)) / len(x_held)))

    losses, t0 = [], time.time()
    steps = range(p["train_steps"])
    if log is not None:
        steps = log(steps)
    for step in steps:
        lr = p["train_lr"] * min(1.0, (step + 1) / max(p["train_warmup"], 1))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(len(x), (p["train_batch"],), generator=gen)
        loss = edm_loss(model, x[idx].to(device), gen, p["p_mean"], p["p_std"], p["sigma_data"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        beta = ema_beta(step + 1, p["ema_halflife"])
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - beta)
        losses.append(loss.item())
        if (step + 1) % p["heldout_every"] == 0 or step + 1 == p["train_steps"]:
            heldout_loss(step + 1)
        if callback is not None:
            callback(step + 1, ema)
    seconds = time.time() - t0
    chunks = torch.tensor(losses).split(max(1, len(losses) // 20))
    summary = {"steps": p["train_steps"], "loss_first_100": float(torch.tensor(losses[:100]).mean()),
               "loss_last_100": float(torch.tensor(losses[-100:]).mean()),
               "loss_curve": [float(c.mean()) for c in chunks],
               "heldout_steps": [h[0] for h in held], "heldout_loss": [h[1] for h in held],
               "heldout_images": len(x_held)}
    return ema, {**summary, "_seconds": seconds}


def save_unet(denoiser: EDMPrecond, path: Path = UNET_PATH) -> str:
    """Write the network's config and weights, then `NAME.sha256`; return the SHA-256."""
    from .data import file_sha256
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().float().contiguous() for k, v in denoiser.net.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"config": denoiser.net.config, "sigma_data": denoiser.sigma_data, "state_dict": state}, tmp)
    tmp.replace(path)
    digest = file_sha256(path)
    sha256_path(path).write_text(f"{digest}  {path.name}\n")
    return digest


def load_unet(path: Path = UNET_PATH, device: torch.device | str = "cpu") -> EDMPrecond:
    """The committed EMA denoiser, checked against its recorded SHA-256, loaded with `weights_only=True`."""
    from .data import load_checked
    ckpt = load_checked(path, sha256_path(Path(path)), "python -m kexue.diffusion train", device)
    net = SkipUNet(**ckpt["config"]).to(device)
    net.load_state_dict(ckpt["state_dict"])
    return EDMPrecond(net, ckpt["sigma_data"]).eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["train"])
    ap.add_argument("--out", type=Path, default=UNET_PATH, help="checkpoint (and OUT.sha256)")
    ap.add_argument("--metrics", type=Path, default=TRAIN_REPORT / "metrics.json")
    ap.add_argument("--scale", choices=["smoke", "default", "gpu"], default=None, help="override common.scale")
    args = ap.parse_args(argv)
    from .config import chapter_params, pick_device
    from .metrics import extract, load_classifier
    from .report import progress
    p = chapter_params("skip_tuning", overrides={"common": {"scale": args.scale}} if args.scale else None)
    device = pick_device(p["device"])
    den, summary = train_unet(p, device, log=lambda it: progress(it, desc="skip_tuning train"))
    seconds = summary.pop("_seconds")
    out = args.out if args.out.is_absolute() else ROOT / args.out
    digest = save_unet(den, out)
    # Baseline quality: Heun with baseline_steps (2N-1 NFE), classifier FD against the test split.
    from .data import load_fashion_mnist
    classifier = load_classifier(device=device)
    xt, _ = load_fashion_mnist(train=False)
    real_feats, _ = extract(classifier, (xt[:max(p["eval_samples"], 1000)] * 2 - 1).to(device))
    sigmas = edm_sigmas(p["baseline_steps"], p["sigma_min"], p["sigma_max"], p["sigma_rho"])
    imgs = generate(den, p["eval_samples"], sigmas, torch.Generator().manual_seed(p["seed"] + 1), device=device)
    nfe = 2 * p["baseline_steps"] - 1
    metrics = {**summary, "baseline_nfe": nfe, "baseline_fd": classifier_fd(imgs.to(device), real_feats, classifier),
               "eval_samples": p["eval_samples"], "sha256": digest, "train_seconds": round(seconds),
               "device": str(device), "threads": p["threads"], "config": den.net.config}
    metrics_path = args.metrics if args.metrics.is_absolute() else ROOT / args.metrics
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"trained {p['train_steps']} steps in {seconds:.0f} s on {device}; loss {metrics['loss_first_100']:.3f} -> "
          f"{metrics['loss_last_100']:.3f}; classifier FD at {nfe} NFE {metrics['baseline_fd']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
