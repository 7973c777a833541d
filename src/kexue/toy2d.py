"""2-D benchmark distributions and mode statistics, shared by the generative chapters.

The ring and grid protocols are those of VEEGAN (Srivastava et al., 2017) and
PacGAN (Lin et al., 2018): a mixture of equal-weight isotropic Gaussians,

* ring: 8 components on a circle of radius 2, std 0.02;
* grid: 25 components at {-4, -2, 0, 2, 4}^2, std 0.05.

A generated sample is *high quality* when it lies within `threshold * std`
(3 std) of its nearest centre; a mode is *covered* when at least one
high-quality sample is nearest to it; the *reverse KL* compares the histogram
of high-quality samples over modes with the true uniform weights:
KL(generated || true) = sum_k q_k log(q_k / (1/K)), 0 log 0 = 0.

For models with a density (the energy model of chapter 02) the densities are
also known in closed form: `mixture_log_density`, and a non-Gaussian shape,
the 4x4 `checkerboard` on [-4, 4]^2 (uniform on the 8 dark cells).
`kl_on_grid` compares two densities evaluated on a `mesh`.
"""
from __future__ import annotations

import math

import torch

RING_STD, GRID_STD = 0.02, 0.05


def ring_centres(n: int = 8, radius: float = 2.0) -> torch.Tensor:
    """[n, 2] centres on a circle, the first at angle 0."""
    angle = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    return (radius * torch.stack([angle.cos(), angle.sin()], 1)).float()


def grid_centres(side: int = 5, spacing: float = 2.0) -> torch.Tensor:
    """[side^2, 2] centres of a square grid centred on 0: {-4,-2,0,2,4}^2 for the defaults."""
    ticks = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], 1)


TOY_DATASETS = {  # name -> (centres, std)
    "ring": (ring_centres, RING_STD),
    "grid": (grid_centres, GRID_STD),
}


def toy_dataset(name: str) -> tuple[torch.Tensor, float]:
    """(centres [K, 2], std) of a named benchmark; a clear error for unknown names."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown 2-D dataset {name!r}; known: {sorted(TOY_DATASETS)}")
    make, std = TOY_DATASETS[name]
    return make(), std


def sample_mixture(centres: torch.Tensor, std: float, n: int, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """n samples [n, 2] from the equal-weight Gaussian mixture."""
    k = torch.randint(len(centres), (n,), generator=generator)
    return centres[k] + std * torch.randn(n, centres.shape[1], generator=generator)


def nearest_centre(samples: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index [N], distance [N]) of each sample's nearest centre."""
    d = torch.cdist(samples.double(), centres.double())     # [N, K]
    dist, idx = d.min(1)
    return idx, dist


def mode_stats(samples: torch.Tensor, centres: torch.Tensor, std: float, threshold: float = 3.0) -> dict:
    """{"modes": covered modes (int), "high_quality": fraction of high-quality samples (float)}."""
    if samples.ndim != 2 or samples.shape[1] != centres.shape[1]:
        raise ValueError(f"samples must be [N, {centres.shape[1]}], got {tuple(samples.shape)}")
    if len(samples) == 0:
        return {"modes": 0, "high_quality": 0.0}
    idx, dist = nearest_centre(samples, centres)
    hq = dist <= threshold * std
    return {"modes": int(torch.unique(idx[hq]).numel()), "high_quality": float(hq.double().mean())}


def mode_reverse_kl(samples: torch.Tensor, centres: torch.Tensor, std: float, threshold: float = 3.0,
                    miller_madow: bool = False) -> float:
    """KL(histogram of high-quality samples over modes || uniform); nan if none is high quality.

    The plug-in value is biased upward by about (m - 1) / (2n) for n high-quality samples in m occupied
    modes (the entropy's Miller-Madow bias), so an arm with fewer high-quality samples looks less even.
    `miller_madow=True` subtracts that term: an estimate whose bias no longer depends on n.
    """
    idx, dist = nearest_centre(samples, centres)
    idx = idx[dist <= threshold * std]
    if len(idx) == 0:
        return float("nan")
    q = torch.bincount(idx, minlength=len(centres)).double() / len(idx)
    q = q[q > 0]
    kl = float((q * (q * len(centres)).log()).sum())
    return kl - (len(q) - 1) / (2 * len(idx)) if miller_madow else kl


# --- densities (chapter 02: energy models are densities, so compare densities) ---

CHECKER_CELLS, CHECKER_SIZE = 4, 2.0    # 4x4 cells of side 2 on [-4, 4]^2, dark where (i + j) is even


def checkerboard_sample(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n samples [n, 2], uniform on the dark cells of the checkerboard."""
    dark = [(i, j) for i in range(CHECKER_CELLS) for j in range(CHECKER_CELLS) if (i + j) % 2 == 0]
    corner = torch.tensor(dark, dtype=torch.float32) * CHECKER_SIZE - CHECKER_CELLS * CHECKER_SIZE / 2
    k = torch.randint(len(dark), (n,), generator=generator)
    return corner[k] + CHECKER_SIZE * torch.rand(n, 2, generator=generator)


def checkerboard_log_density(xy: torch.Tensor) -> torch.Tensor:
    """log p [N]: -log(area of the dark cells) on them, -inf elsewhere."""
    half = CHECKER_CELLS * CHECKER_SIZE / 2
    cell = torch.floor((xy.double() + half) / CHECKER_SIZE)                 # [N, 2] cell indices
    inside = ((cell >= 0) & (cell < CHECKER_CELLS)).all(1)
    dark = inside & ((cell.sum(1) % 2) == 0)
    n_dark = (CHECKER_CELLS * CHECKER_CELLS + 1) // 2
    log_p = torch.full((len(xy),), -math.inf, dtype=torch.float64)
    log_p[dark] = -math.log(n_dark * CHECKER_SIZE ** 2)
    return log_p


def mixture_log_density(xy: torch.Tensor, centres: torch.Tensor, std: float) -> torch.Tensor:
    """log p [N] of the equal-weight isotropic Gaussian mixture (float64)."""
    d2 = torch.cdist(xy.double(), centres.double()).pow(2)                 # [N, K]
    log_comp = -d2 / (2 * std ** 2) - math.log(2 * math.pi * std ** 2)
    return torch.logsumexp(log_comp, 1) - math.log(len(centres))


def toy_sampler(name: str, std: float | None = None):
    """(sample(n, generator) -> [n, 2], log_density(xy) -> [N], box half-width) of a named 2-D target.

    `std` overrides the mixtures' component std (the checkerboard has none).
    """
    if name == "checkerboard":
        if std is not None:
            raise ValueError(f"std={std!r}: the checkerboard has no component std")
        return checkerboard_sample, checkerboard_log_density, CHECKER_CELLS * CHECKER_SIZE / 2
    centres, default_std = toy_dataset(name)
    s = default_std if std is None else float(std)
    if not s > 0:
        raise ValueError(f"std={std!r} must be > 0")
    half = float(centres.abs().max()) + 1.0
    return (lambda n, generator=None: sample_mixture(centres, s, n, generator),
            lambda xy: mixture_log_density(xy, centres, s), half)


def mesh(half: float, n: int) -> tuple[torch.Tensor, float]:
    """(cell centres [n*n, 2] of an n x n grid on [-half, half]^2, row-major in y then x; cell area)."""
    h = 2 * half / n
    ticks = -half + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    gy, gx = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], 1), h * h


def kl_on_grid(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    """KL(p || q) of two densities given by their (unnormalised) logs on the same grid cells.

    Each is normalised over the grid (a discrete distribution over cells); cells where p = 0 add 0,
    cells where p > 0 = q give +inf.
    """
    if log_p.shape != log_q.shape:
        raise ValueError(f"log_p and log_q must have the same shape, got {tuple(log_p.shape)} and {tuple(log_q.shape)}")
    lp = log_p.double() - torch.logsumexp(log_p.double(), 0)
    lq = log_q.double() - torch.logsumexp(log_q.double(), 0)
    p = lp.exp()
    keep = p > 0
    return float((p[keep] * (lp[keep] - lq[keep])).sum())
