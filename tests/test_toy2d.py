"""kexue.toy2d: benchmark layouts and mode statistics on hand-built samples."""
import math

import numpy as np
import pytest
import torch

from kexue.gan import mode_stats as gan_mode_stats
from kexue.toy2d import (GRID_STD, RING_STD, grid_centres, mode_reverse_kl, mode_stats, ring_centres,
                         sample_mixture, toy_dataset)


def test_layouts():
    g = grid_centres()
    assert g.shape == (25, 2)
    assert sorted(set(g[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    r = ring_centres()
    torch.testing.assert_close(r.norm(dim=1), torch.full((8,), 2.0))
    assert toy_dataset("grid")[1] == GRID_STD and toy_dataset("ring")[1] == RING_STD
    with pytest.raises(ValueError, match="unknown 2-D dataset 'moons'"):
        toy_dataset("moons")


def test_mode_stats_exact_on_hand_built_samples():
    c = grid_centres()
    std = 0.05
    samples = torch.stack([
        c[0] + torch.tensor([0.10, 0.0]),    # 2 std from mode 0: high quality
        c[0] + torch.tensor([0.0, -0.149]),  # just inside 3 std: high quality, mode 0 again
        c[3] + torch.tensor([0.151, 0.0]),   # just outside 3 std: low quality
        c[7],                                # exactly on mode 7
        torch.tensor([1.0, 1.0]),            # between modes: low quality
    ])
    s = mode_stats(samples, c, std)
    assert s == {"modes": 2, "high_quality": 3 / 5}
    assert gan_mode_stats is mode_stats                      # the contract's name, one implementation
    assert mode_stats(samples, c, std, threshold=4.0)["modes"] == 3


def test_true_samples_cover_everything_and_collapsed_do_not():
    g = torch.Generator().manual_seed(0)
    c, std = toy_dataset("grid")
    x = sample_mixture(c, std, 5000, g)
    s = mode_stats(x, c, std)
    assert s["modes"] == 25
    # P(|N(0, I_2)| <= 3) = 1 - exp(-4.5) = 0.9889
    assert s["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.005)
    assert mode_reverse_kl(x, c, std) < 0.01
    collapsed = c[4] + std * torch.randn(1000, 2, generator=g)
    assert mode_stats(collapsed, c, std)["modes"] == 1
    assert mode_reverse_kl(collapsed, c, std) == pytest.approx(math.log(25), rel=1e-9)


def test_reverse_kl_by_hand():
    c = ring_centres()
    # 3 samples on mode 0, 1 on mode 1: q = (3/4, 1/4) against uniform 1/8.
    x = torch.stack([c[0], c[0], c[0], c[1]])
    expected = 0.75 * math.log(0.75 * 8) + 0.25 * math.log(0.25 * 8)
    assert mode_reverse_kl(x, c, RING_STD) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(mode_reverse_kl(torch.zeros(3, 2), c, RING_STD))


def test_miller_madow_removes_the_small_sample_bias_of_the_reverse_kl():
    # Exactly uniform use of 8 modes has KL 0; with n samples the plug-in estimate averages about 7 / (2n)
    # (brute force over 200 draws), the corrected one about 0; by hand, it subtracts (m - 1) / (2n).
    c, std = ring_centres(), RING_STD
    g = torch.Generator().manual_seed(0)
    for n in (40, 400):
        draws = [sample_mixture(c, std, n, g) for _ in range(200)]
        hq = [int(mode_stats(x, c, std)["high_quality"] * n) for x in draws]
        plug = np.mean([mode_reverse_kl(x, c, std) for x in draws])
        mm = np.mean([mode_reverse_kl(x, c, std, miller_madow=True) for x in draws])
        assert plug == pytest.approx(7 / (2 * np.mean(hq)), rel=0.25)
        assert abs(mm) < 0.2 * plug
    x = torch.stack([c[0], c[0], c[0], c[1]])
    expected = 0.75 * math.log(0.75 * 8) + 0.25 * math.log(0.25 * 8) - (2 - 1) / (2 * 4)
    assert mode_reverse_kl(x, c, std, miller_madow=True) == pytest.approx(expected, rel=1e-12)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"samples must be \[N, 2\], got \(4, 3\)"):
        mode_stats(torch.zeros(4, 3), grid_centres(), 0.05)


# --- densities (chapter 02) ---

from kexue.toy2d import (checkerboard_log_density, checkerboard_sample, kl_on_grid, mesh,  # noqa: E402
                         mixture_log_density, toy_sampler)


def test_checkerboard_samples_lie_on_dark_cells_and_density_integrates_to_one():
    x = checkerboard_sample(5000, torch.Generator().manual_seed(0))
    assert torch.isfinite(checkerboard_log_density(x)).all()
    xy, area = mesh(4.0, 400)
    assert float(checkerboard_log_density(xy).exp().sum() * area) == pytest.approx(1.0, abs=1e-9)
    light = torch.tensor([[-3.0, -1.0], [3.0, -3.0], [5.0, 0.0]])          # light cells (i + j odd), outside
    assert torch.isinf(checkerboard_log_density(light)).all()


def test_mixture_log_density_matches_brute_force_and_integrates_to_one():
    c, std = grid_centres(), 0.3
    xy = torch.randn(50, 2, dtype=torch.float64) * 3
    brute = sum(torch.exp(-((xy - ck) ** 2).sum(1) / (2 * std ** 2)) / (2 * math.pi * std ** 2) for ck in c.double()) / 25
    torch.testing.assert_close(mixture_log_density(xy, c, std), brute.log())
    grid, area = mesh(6.0, 600)
    assert float(mixture_log_density(grid, c, std).exp().sum() * area) == pytest.approx(1.0, abs=1e-6)


def test_kl_on_grid_against_the_gaussian_closed_form():
    xy, _ = mesh(8.0, 800)
    log_p = -(xy ** 2).sum(1) / 2                                      # N(0, I)
    log_q = -((xy - torch.tensor([0.5, 0.0], dtype=torch.float64)) ** 2).sum(1) / (2 * 1.5 ** 2)  # N((.5,0), 1.5^2 I)
    expected = 2 * (math.log(1.5) + 1 / (2 * 1.5 ** 2) - 0.5) + 0.5 ** 2 / (2 * 1.5 ** 2)
    assert kl_on_grid(log_p, log_q) == pytest.approx(expected, rel=1e-4)
    assert kl_on_grid(log_p, log_p + 3.0) == pytest.approx(0.0, abs=1e-12)     # normalisation removes constants
    with pytest.raises(ValueError, match="same shape"):
        kl_on_grid(log_p, log_q[:-1])


def test_toy_sampler_names_and_std():
    sample, log_density, half = toy_sampler("ring", 0.1)
    x = sample(10, torch.Generator().manual_seed(0))
    assert x.shape == (10, 2) and half == 3.0 and torch.isfinite(log_density(x)).all()
    with pytest.raises(ValueError, match="std=0.1"):
        toy_sampler("checkerboard", 0.1)
    with pytest.raises(ValueError, match="std=-1"):
        toy_sampler("grid", -1)
