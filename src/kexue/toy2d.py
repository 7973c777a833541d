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


def mode_reverse_kl(samples: torch.Tensor, centres: torch.Tensor, std: float, threshold: float = 3.0) -> float:
    """KL(histogram of high-quality samples over modes || uniform); nan if none is high quality."""
    idx, dist = nearest_centre(samples, centres)
    idx = idx[dist <= threshold * std]
    if len(idx) == 0:
        return float("nan")
    q = torch.bincount(idx, minlength=len(centres)).double() / len(idx)
    q = q[q > 0]
    return float((q * (q * len(centres)).log()).sum())
