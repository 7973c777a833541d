"""kexue.diffusion: EDM formulas, samplers and the skip-scaled U-Net against independent computations."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kexue.config import PARAMS_FILE, SCALES_FILE, _check_value, load_yaml
from kexue.data import DataError
from kexue.data import DATA_DIR
from kexue.diffusion import (argmin_per_set, denoising_errors, map_nonlinearity, speedup_rule,
                             CountingDenoiser, EDMPrecond, ResBlock, SkipTuningParams, SkipUNet, edm_loss,
                             edm_loss_weight, edm_precondition, edm_sigmas, ema_beta, euler_sample, fourier_filter,
                             freeu_scales, gaussian_denoiser, generate, heun_sample, load_unet, save_unet,
                             skip_scales, stochastic_sample, train_unet)

SD = 0.5   # sigma_data


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small convolutions: one thread is faster, and immune to a busy machine's oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_unet(seed=0, channels=(8, 16), dtype=torch.float64):
    """A small U-Net with every parameter random (the zero init would hide the skips)."""
    torch.manual_seed(seed)
    net = SkipUNet(channels=channels, emb_dim=16).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    return net.eval()


# --- preconditioning and loss ---

def test_preconditioning_identities():
    sigma = torch.logspace(-3, 2, 41, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_precondition(sigma, SD)
    one = torch.ones_like(sigma)
    # c_in x has unit variance: Var(y + n) = sigma^2 + sigma_d^2.
    torch.testing.assert_close(c_in ** 2 * (sigma ** 2 + SD ** 2), one, rtol=1e-14, atol=0)
    # Effective training target (y - c_skip (y + n)) / c_out has unit variance (EDM eq. 8 -> Table 1) ...
    var_target = ((1 - c_skip) ** 2 * SD ** 2 + c_skip ** 2 * sigma ** 2) / c_out ** 2
    torch.testing.assert_close(var_target, one, rtol=1e-12, atol=0)
    # ... and unit effective weight lambda c_out^2 = 1.
    torch.testing.assert_close(edm_loss_weight(sigma, SD) * c_out ** 2, one, rtol=1e-14, atol=0)
    # c_skip is the variance-minimising choice: d/dc_skip of the target variance vanishes there.
    grad = 2 * (-(1 - c_skip) * SD ** 2 + c_skip * sigma ** 2)
    torch.testing.assert_close(grad, torch.zeros_like(sigma), rtol=0, atol=1e-12)
    torch.testing.assert_close(c_noise, torch.tensor([math.log(s) / 4 for s in sigma.tolist()], dtype=torch.float64))
    # Limits: sigma -> 0 gives D(x) -> x (c_skip -> 1, c_out ~ sigma); sigma -> inf gives c_skip -> 0, c_out -> sigma_d.
    cs0, co0, _, _ = edm_precondition(1e-9, SD)
    assert abs(float(cs0) - 1) < 1e-15 and abs(float(co0) / 1e-9 - 1) < 1e-15
    cs_inf, co_inf, _, _ = edm_precondition(1e9, SD)
    assert float(cs_inf) < 1e-18 and abs(float(co_inf) - SD) < 1e-12


def test_edm_precond_module_is_the_formula():
    seen = {}

    def net(x_in, c_noise):
        seen["x_in"], seen["c_noise"] = x_in, c_noise
        return torch.sin(3 * x_in) + c_noise[:, None, None, None]

    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.3, 1.0, 7.0, 80.0], dtype=torch.float64)
    got = EDMPrecond(net, SD)(x, sigma)
    s = sigma.view(-1, 1, 1, 1)
    total = s ** 2 + SD ** 2
    f = torch.sin(3 * x / total.sqrt()) + (s.log() / 4)
    torch.testing.assert_close(got, SD ** 2 / total * x + s * SD / total.sqrt() * f, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(seen["c_noise"], sigma.log() / 4)
    # A float sigma is broadcast to every sample.
    torch.testing.assert_close(EDMPrecond(net, SD)(x, 0.3), EDMPrecond(net, SD)(x, torch.full((5,), 0.3).double()))


def test_edm_loss_repeats_its_draws_by_hand():
    net = random_unet(1)
    den = EDMPrecond(net, SD)
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = edm_loss(den, x, torch.Generator().manual_seed(3), p_mean=-1.0, p_std=1.5, sigma_data=SD)
    g = torch.Generator().manual_seed(3)
    sigma = (torch.randn(6, generator=g, dtype=torch.float64) * 1.5 - 1.0).exp()
    n = torch.randn(x.shape, generator=g, dtype=torch.float64) * sigma.view(-1, 1, 1, 1)
    lam = ((sigma ** 2 + SD ** 2) / (sigma * SD) ** 2).view(-1, 1, 1, 1)
    expected = (lam * (den(x + n, sigma) - x) ** 2).mean()
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=0)


def test_edm_loss_of_the_exact_denoiser_is_one():
    """For data N(0, sigma_d^2) the exact denoiser's error has variance c_out^2 = 1/lambda: loss = 1 in expectation."""
    g = torch.Generator().manual_seed(4)
    y = torch.randn(4096, 1, 8, 8, generator=g, dtype=torch.float64) * SD
    loss = float(edm_loss(gaussian_denoiser(SD), y, g, sigma_data=SD))
    assert abs(loss - 1) < 0.02          # 262144 chi^2_1 terms: sd of the mean 0.003
    # A worse denoiser (the identity, D(x) = x) is penalised: loss = E lambda sigma^2 > 1.
    assert float(edm_loss(lambda x, s: x, y, torch.Generator().manual_seed(4), sigma_data=SD)) > 1.5


def test_loss_falls_when_overfitting_one_batch():
    torch.manual_seed(0)
    net = SkipUNet(channels=(8, 16), emb_dim=16)
    den = EDMPrecond(net, SD)
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = edm_loss(den, x, torch.Generator().manual_seed(6))     # same sigmas and noise every step
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


# --- noise levels and samplers ---

@pytest.mark.parametrize("n,smin,smax,rho", [(18, 0.002, 80.0, 7.0), (5, 0.01, 10.0, 3.0), (2, 0.1, 1.0, 1.0)])
def test_edm_sigmas_are_eq5(n, smin, smax, rho):
    got = edm_sigmas(n, smin, smax, rho)
    hand = [(smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for i in range(n)]
    assert got.dtype == torch.float64 and got.shape == (n + 1,)
    np.testing.assert_allclose(got[:-1].numpy(), hand, rtol=1e-13)
    assert got[0] == pytest.approx(smax, rel=1e-14) and got[n - 1] == pytest.approx(smin, rel=1e-12)
    assert got[-1] == 0 and bool((got[1:] < got[:-1]).all())
    if rho == 1.0:   # rho = 1: evenly spaced levels
        np.testing.assert_allclose(np.diff(got[:-1].numpy()), (smin - smax) / (n - 1), rtol=1e-12)


def test_edm_sigmas_one_step():
    assert edm_sigmas(1, 0.002, 80.0).tolist() == [80.0, 0.0]


def test_one_heun_and_one_euler_step_by_hand():
    D = gaussian_denoiser(SD)
    x0 = torch.tensor([[1.3], [-0.4]], dtype=torch.float64)

    def d(x, s):
        return (x - SD ** 2 / (s ** 2 + SD ** 2) * x) / s

    # Heun from 2 to 1 (corrected), then Euler from 1 to 0 (no correction): 3 calls.
    x1 = x0 + (1 - 2) * d(x0, 2.0)
    x1 = x0 + (1 - 2) * 0.5 * (d(x0, 2.0) + d(x1, 1.0))
    x2 = x1 + (0 - 1) * d(x1, 1.0)
    torch.testing.assert_close(heun_sample(D, x0, [2.0, 1.0, 0.0]), x2, rtol=1e-15, atol=1e-15)
    e1 = x0 + (1 - 2) * d(x0, 2.0)
    torch.testing.assert_close(euler_sample(D, x0, [2.0, 1.0, 0.0]), e1 + (0 - 1) * d(e1, 1.0), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("n", [1, 2, 3, 18])
def test_nfe_counts(n):
    x = torch.zeros(2, 3)
    sig = edm_sigmas(n)
    counts = {}
    for name, run in {"heun": lambda c: heun_sample(c, x, sig), "euler": lambda c: euler_sample(c, x, sig),
                      "stochastic": lambda c: stochastic_sample(c, x, sig, s_churn=10.0,
                                                                generator=torch.Generator().manual_seed(0)),
                      "heun_to_sigma_min": lambda c: heun_sample(c, x, sig[:-1]) if n > 1 else None}.items():
        c = CountingDenoiser(gaussian_denoiser(SD))
        run(c)
        counts[name] = c.calls
    assert counts["heun"] == 2 * n - 1 and counts["stochastic"] == 2 * n - 1 and counts["euler"] == n
    assert counts["heun_to_sigma_min"] == (2 * (n - 1) if n > 1 else 0)   # no step to 0: every step corrected
    assert counts["heun"] == 35 or n != 18                               # the baseline: 18 steps = 35 NFE


def exact_scale(s_from, s_to):
    """The probability-flow ODE of N(0, sigma_d^2) data scales each sample by this, exactly."""
    return math.sqrt(s_to ** 2 + SD ** 2) / math.sqrt(s_from ** 2 + SD ** 2)


def test_heun_maps_n_sigma_max_to_n_sigma_data():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(20000, 1, dtype=torch.float64, generator=g) * 80.0          # N(0, sigma_max^2)
    out = heun_sample(gaussian_denoiser(SD), x, edm_sigmas(256))
    # Per sample, deterministic: the exact ODE solution, up to Heun's O(N^-2) error (2.1e-4 at N = 256; the
    # last step, Euler from sigma_min = 0.002, adds only about sigma_min^2 / (2 sigma_d^2) = 8e-6).
    torch.testing.assert_close(out, x * exact_scale(80.0, 0.0), rtol=3e-4, atol=0)
    assert float(out.std()) == pytest.approx(SD, rel=0.02)


def test_convergence_orders_heun_2_euler_1():
    """Between sigma_max and sigma_min (no step to 0), doubling N divides the error by ~4 (Heun), ~2 (Euler)."""
    x = torch.tensor([[80.0]], dtype=torch.float64)
    exact = 80.0 * exact_scale(80.0, 0.002)

    def err(sampler, n):
        return abs(float(sampler(gaussian_denoiser(SD), x, edm_sigmas(n)[:-1])) - exact) / exact

    heun = [err(heun_sample, n) for n in (32, 64, 128)]
    euler = [err(euler_sample, n) for n in (32, 64, 128)]
    for a, b in zip(heun, heun[1:]):
        assert 3.6 < a / b < 4.6, heun
    for a, b in zip(euler, euler[1:]):
        assert 1.7 < a / b < 2.3, euler
    assert heun[-1] < 0.05 * euler[-1]


def test_stochastic_sampler():
    D = gaussian_denoiser(SD)
    z = torch.randn(20000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(8)) * 80.0
    sig = edm_sigmas(128)
    # No churn: exactly Algorithm 1, no noise drawn.
    assert torch.equal(stochastic_sample(D, z, sig, s_churn=0.0), heun_sample(D, z, sig))
    # With churn the SDE keeps the marginals: N(0, sigma_max^2) still ends at N(0, sigma_d^2), but not sample by sample.
    out = stochastic_sample(D, z, sig, s_churn=30.0, s_tmin=0.05, s_tmax=50.0, generator=torch.Generator().manual_seed(9))
    assert float(out.std()) == pytest.approx(SD, rel=0.02)             # sd of a 20000-sample std: 0.5%
    assert float((out - heun_sample(D, z, sig)).abs().max()) > 0.1
    again = stochastic_sample(D, z, sig, s_churn=30.0, s_tmin=0.05, s_tmax=50.0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(out, again)
    # Churn only inside [s_tmin, s_tmax]: an empty window is Algorithm 1 again.
    assert torch.equal(stochastic_sample(D, z, sig, s_churn=30.0, s_tmin=100.0, s_tmax=200.0), heun_sample(D, z, sig))


# --- Skip-Tuning scales and the U-Net ---

def test_skip_scales_are_linear_outermost_first():
    assert skip_scales(4, 1.0, 0.4) == pytest.approx(np.linspace(1.0, 0.4, 4).tolist(), abs=1e-15)
    assert skip_scales(7, 0.9, 0.5) == pytest.approx(np.linspace(0.9, 0.5, 7).tolist(), abs=1e-15)
    assert skip_scales(1, 0.8, 0.3) == [0.8]
    assert skip_scales(5, 1, 1) == [1.0] * 5


@pytest.mark.parametrize("call,match", [
    (lambda: edm_sigmas(0), r"n_steps=0"),
    (lambda: edm_sigmas(2.0), r"n_steps=2\.0"),
    (lambda: edm_sigmas(5, sigma_min=0.0), r"sigma_min=0\.0"),
    (lambda: edm_sigmas(5, sigma_min=2.0, sigma_max=1.0), r"sigma_max=1\.0"),
    (lambda: edm_sigmas(5, rho=-1.0), r"rho=-1\.0"),
    (lambda: skip_scales(0, 1.0, 0.5), r"n_skips=0"),
    (lambda: skip_scales(4, -0.1, 0.5), r"rho_top=-0\.1"),
    (lambda: skip_scales(4, 1.0, 11.0), r"rho_bottom=11\.0"),
    (lambda: skip_scales(4, float("nan"), 0.5), r"rho_top=nan"),
    (lambda: heun_sample(gaussian_denoiser(), torch.zeros(1), [1.0, 2.0, 0.0]), r"sigmas=\[1\.0, 2\.0, 0\.0\]"),
    (lambda: heun_sample(gaussian_denoiser(), torch.zeros(1), [1.0]), r"len\(sigmas\)=1"),
    (lambda: stochastic_sample(gaussian_denoiser(), torch.zeros(1), [1.0, 0.0], s_churn=-1.0), r"s_churn=-1\.0"),
    (lambda: fourier_filter(torch.zeros(1, 1, 4, 4), 0, 0.5), r"threshold=0"),
    (lambda: SkipUNet(channels=(12, 16)), r"channels=\[12, 16\]"),
])
def test_bad_inputs_name_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_wrong_number_of_scales_is_named():
    net = random_unet()
    with pytest.raises(ValueError, match=r"len\(skip_scales\)=2"):
        net.skip_scales = [1.0, 0.5]
    with pytest.raises(ValueError, match=r"len\(residual_scales\)=3"):
        net.residual_scales = [1.0] * 3
    with pytest.raises(ValueError, match=r"len\(backbone_scales\)=1"):
        net.set_backbone_scales([1.2])


def test_unet_shapes_and_skips():
    net = SkipUNet(channels=(16, 32, 64), emb_dim=32)
    assert net.n_skips == 4 and len(net.res_blocks()) == 3 + 1 + 4
    feats = {}
    for k, m in enumerate(net.skips):
        m.register_forward_hook(lambda mod, inp, out, k=k: feats.__setitem__(k, tuple(out.shape)))
    with torch.no_grad():
        out = net(torch.randn(3, 1, 28, 28), torch.zeros(3))
    assert out.shape == (3, 1, 28, 28)
    assert feats == {0: (3, 16, 28, 28), 1: (3, 16, 28, 28), 2: (3, 32, 14, 14), 3: (3, 64, 7, 7)}
    # Zero-initialised output layer: F = 0 at init, so D(x; sigma) = c_skip x.
    assert float(out.abs().max()) == 0


def test_unet_with_two_blocks_per_level_has_a_skip_per_block():
    net = SkipUNet(channels=(16, 32, 64), emb_dim=32, blocks=2)
    assert net.n_skips == 7 and len(net.res_blocks()) == 6 + 1 + 7
    assert net.skip_stages == [0, 0, 0, 1, 1, 2, 2]
    feats = {}
    for k, m in enumerate(net.skips):
        m.register_forward_hook(lambda mod, inp, out, k=k: feats.__setitem__(k, tuple(out.shape)))
    with torch.no_grad():
        out = net(torch.randn(2, 1, 28, 28), torch.zeros(2))
    assert out.shape == (2, 1, 28, 28)
    assert feats == {0: (2, 16, 28, 28), 1: (2, 16, 28, 28), 2: (2, 16, 28, 28), 3: (2, 32, 14, 14),
                     4: (2, 32, 14, 14), 5: (2, 64, 7, 7), 6: (2, 64, 7, 7)}
    # The decoder block of each skip works at that skip's resolution.
    assert [net.dec[k].conv2.out_channels for k in range(7)] == [16, 16, 16, 32, 32, 64, 64]
    with pytest.raises(ValueError, match="blocks"):
        SkipUNet(channels=(16, 32), blocks=0)


def test_noise_embedding_frequencies_and_old_checkpoints():
    """The embedding's frequencies run geometrically from 0.1 to max_freq; a config without the new keys (the
    first committed networks) builds the network those were trained as (4 skips, frequencies up to 100)."""
    new = SkipUNet(channels=(8, 16, 32), emb_dim=16, blocks=2, max_freq=2.0)
    old = SkipUNet(**{"in_ch": 1, "channels": [8, 16, 32], "emb_dim": 16})
    f_new, f_old = new.embed.freqs.double(), old.embed.freqs.double()
    torch.testing.assert_close(f_new, torch.logspace(-1, math.log10(2.0), 16, dtype=torch.float64), rtol=1e-6, atol=0)
    assert abs(float(f_old[-1]) - 100) < 1e-3 and old.n_skips == 4 and new.n_skips == 7
    # Smooth in sigma: over EDM's range (c_noise = ln(sigma)/4 for sigma in [0.002, 80]) the fastest sinusoid of the new
    # embedding turns fewer than 6 times, the old one about 265 times.
    span = (math.log(80) - math.log(0.002)) / 4
    assert float(f_new[-1]) * span < 6 < 200 < float(f_old[-1]) * span
    with pytest.raises(ValueError, match="max_freq"):
        SkipUNet(channels=(8, 16), max_freq=0.05)


def test_unit_scales_leave_the_output_unchanged_bit_for_bit():
    net = random_unet(2, dtype=torch.float32)
    den = EDMPrecond(net, SD)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.01, 0.5, 3.0, 40.0])
    ref = den(x, sigma)
    net.skip_scales = skip_scales(net.n_skips, 1.0, 1.0)
    assert torch.equal(den(x, sigma), ref)
    net.residual_scales = [1.0] * len(net.res_blocks())
    net.set_backbone_scales([1.0] * net.n_skips)
    net.skip_lowfreq_scales = [1.0] * net.n_skips
    assert torch.equal(den(x, sigma), ref)
    # ... while a scale below 1 does change it (the knob is connected), and reset restores it.
    net.skip_scales = skip_scales(net.n_skips, 1.0, 0.5)
    assert not torch.allclose(den(x, sigma), ref, rtol=1e-3, atol=1e-3)
    net.reset_knobs()
    assert net.skip_scales is None and torch.equal(den(x, sigma), ref)


def capture(net):
    """Hooks: encoder feature k (what skip k receives) and the input of the decoder block that consumes it."""
    enc, dec_in = {}, {}
    for k, m in enumerate(net.skips):
        m.register_forward_hook(lambda mod, inp, out, k=k: enc.__setitem__(k, inp[0].detach().clone()))
    for k, block in enumerate(net.dec):
        block.register_forward_pre_hook(lambda mod, args, k=k: dec_in.__setitem__(k, args[0].detach().clone()))
    return enc, dec_in


def test_each_scale_multiplies_exactly_the_feature_it_names():
    net = random_unet(3)
    x, c = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([0.1, -0.3], dtype=torch.float64)
    enc, dec_in = capture(net)
    for k in range(net.n_skips):
        scales = [1.0] * net.n_skips
        scales[k] = 0.37
        net.skip_scales = scales
        net(x, c)
        for j in range(net.n_skips):
            cs = enc[j].shape[1]
            skip_part, backbone_part = dec_in[j][:, -cs:], dec_in[j][:, :-cs]
            # The skip half of decoder block j's input is the encoder feature times its own scale, exactly.
            assert torch.equal(skip_part, enc[j] * scales[j])
            assert backbone_part.shape[1] + cs == net.dec[j].norm1.num_channels
    # Scaling skip k leaves everything upstream of decoder block k untouched: the encoder, and the decoder
    # blocks nearer the middle (j > k).
    net.skip_scales = None
    net(x, c)
    enc_ref, dec_ref = dict(enc), dict(dec_in)
    net.skip_scales = [1.0, 0.5, 1.0]
    net(x, c)
    assert all(torch.equal(enc[j], enc_ref[j]) for j in range(3)) and torch.equal(dec_in[2], dec_ref[2])
    assert not torch.equal(dec_in[0], dec_ref[0])


def test_freeu_backbone_and_skip_filter_act_where_named():
    net = random_unet(4)
    x, c = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    enc, dec_in = capture(net)
    net(x, c)
    ref_in = {k: v.clone() for k, v in dec_in.items()}
    b, s = freeu_scales(net.n_skips, b1=1.5, b2=1.2, s1=0.3, s2=0.6)
    assert b == [1.0, 1.2, 1.5] and s == [1.0, 0.6, 0.3]
    # With two blocks per resolution FreeU scales every block of the two innermost stages.
    b7, s7 = freeu_scales(7, b1=1.5, b2=1.2, s1=0.3, s2=0.6, stages=[0, 0, 0, 1, 1, 2, 2])
    assert b7 == [1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5] and s7 == [1.0, 1.0, 1.0, 0.6, 0.6, 0.3, 0.3]
    with pytest.raises(ValueError, match="stages"):
        freeu_scales(3, stages=[0, 0, 0])
    net.set_backbone_scales([1.0, 1.0, 1.5])           # innermost decoder block only
    net(x, c)
    k, cs = 2, enc[2].shape[1]
    backbone = ref_in[k][:, :-cs]
    half = backbone.shape[1] // 2
    torch.testing.assert_close(dec_in[k][:, :half], 1.5 * backbone[:, :half], rtol=1e-15, atol=0)
    assert torch.equal(dec_in[k][:, half:], ref_in[k][:, half:])
    net.set_backbone_scales(None)
    net.skip_lowfreq_scales = [1.0, 0.6, 1.0]
    net(x, c)
    torch.testing.assert_close(dec_in[1][:, -enc[1].shape[1]:], fourier_filter(enc[1], 1, 0.6), rtol=1e-12, atol=1e-12)
    assert torch.equal(dec_in[2], ref_in[2])


def test_fourier_filter_scales_only_low_frequencies():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fourier_filter(x, 2, 1.0), x, rtol=1e-12, atol=1e-12)
    const = torch.full((1, 1, 8, 8), 0.7, dtype=torch.float64)
    torch.testing.assert_close(fourier_filter(const, 1, 0.25), 0.25 * const, rtol=1e-12, atol=1e-14)
    checker = torch.tensor([[(-1.0) ** (i + j) for j in range(8)] for i in range(8)], dtype=torch.float64)[None, None]
    torch.testing.assert_close(fourier_filter(checker, 2, 0.0), checker, rtol=1e-12, atol=1e-12)   # Nyquist: kept
    # Against a dense DFT written out: frequencies |kx|, |ky| <= threshold-ish square after fftshift.
    n, t = 8, 1
    k = np.fft.fftshift(np.fft.fftfreq(n, 1 / n))                      # [-4, ..., 3]
    mask = np.where((k[:, None] >= -t) & (k[:, None] < t) & (k[None, :] >= -t) & (k[None, :] < t), 0.5, 1.0)
    m = np.fft.ifftshift(mask)
    dft = np.exp(-2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n)
    img = x[0, 0].numpy()
    expected = (np.conj(dft) @ (m * (dft @ img @ dft)) @ np.conj(dft)).real / n ** 2
    np.testing.assert_allclose(fourier_filter(x, 1, 0.5)[0, 0].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_groupnorm_after_concatenation_erases_the_skip_scale_except_through_the_1x1_path():
    """Appendix C of the Skip-Tuning paper: GroupNorm normalises each group, and no group mixes backbone and
    skip channels, so the block's main path does not see a positive scale c of the skip (eps = 0). The residual
    1x1 conv sees the raw concatenation: the output moves by exactly (c - 1) W_skip * s."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    h, s = torch.randn(2, 16, 6, 6, generator=g, dtype=torch.float64), torch.randn(2, 8, 6, 6, generator=g, dtype=torch.float64)
    emb = torch.randn(2, 4, generator=g, dtype=torch.float64)
    for residual in (False, True):
        block = ResBlock(24, 16, 4, residual=residual).double()
        with torch.no_grad():
            for p in block.parameters():
                p.normal_(0, 0.3)
        block.norm1.eps = block.norm2.eps = 0.0
        out1 = block(torch.cat([h, s], 1), emb)
        for c in (0.2, 0.7, 3.0):
            out_c = block(torch.cat([h, c * s], 1), emb)
            if not residual:
                torch.testing.assert_close(out_c, out1, rtol=1e-10, atol=1e-12)      # no knob at all
            else:
                w_skip = block.shortcut.weight[:, 16:]                                # the 1x1 weights on skip channels
                torch.testing.assert_close(out_c - out1, (c - 1) * F.conv2d(s, w_skip), rtol=1e-9, atol=1e-11)
                assert float((out_c - out1).detach().abs().max()) > 1e-3
    # With the default eps the invariance is only approximate: the scale leaks through eps / Var.
    block = ResBlock(24, 16, 4, residual=False).double()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
    diff = block(torch.cat([h, 0.5 * s], 1), emb) - block(torch.cat([h, s], 1), emb)
    assert 0 < float(diff.detach().abs().max()) < 1e-3


def test_residual_identity_scale_multiplies_the_identity_branch():
    block = ResBlock(16, 16, 4).double()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    emb = torch.randn(2, 4, dtype=torch.float64)
    ref = block(x, emb)
    block.identity_scale = 0.6
    torch.testing.assert_close(block(x, emb) - ref, (0.6 - 1) * x, rtol=1e-12, atol=1e-12)


# --- EMA, checkpoint, params ---

def test_ema_half_life():
    assert ema_beta(10 ** 6, 500) ** 500 == pytest.approx(0.5, rel=1e-12)
    assert ema_beta(1, 500) < 1e-3            # ramp-up: the first update replaces the random init
    assert ema_beta(1000, 500) ** 100 == pytest.approx(0.5, rel=1e-12)   # half-life 0.1 * step while short


def test_checkpoint_round_trip_and_checksum(tmp_path):
    net = random_unet(5, dtype=torch.float32)
    den = EDMPrecond(net, 0.6)
    path = tmp_path / "unet.pt"
    digest = save_unet(den, path)
    assert (tmp_path / "unet.pt.sha256").read_text().split()[0] == digest
    loaded = load_unet(path)
    x = torch.randn(2, 1, 8, 8)
    assert loaded.sigma_data == 0.6 and torch.equal(loaded(x, 1.0), den(x, 1.0))
    bad, data = tmp_path / "bad.pt", bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                                        # one damaged byte
    bad.write_bytes(bytes(data))
    (tmp_path / "bad.pt.sha256").write_text(f"{digest}  bad.pt\n")
    with pytest.raises(DataError, match="SHA-256"):
        load_unet(bad)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_unet(tmp_path / "absent.pt")


def test_params_yaml_section_holds_the_schema_defaults_and_presets_are_valid():
    fields = {f.name: f for f in dataclasses.fields(SkipTuningParams)}
    assert load_yaml(PARAMS_FILE)["skip_tuning"] == {k: f.default for k, f in fields.items()}
    for scale, preset in load_yaml(SCALES_FILE)["skip_tuning"].items():
        assert scale in ("smoke", "gpu") and set(preset) <= set(fields)
        for k, v in preset.items():
            _check_value("skip_tuning", fields[k], v)
    assert 2 * fields["baseline_steps"].default - 1 == 35


def test_generate_is_batched_heun_from_scaled_noise():
    sig = edm_sigmas(32, sigma_max=10.0)
    got = generate(gaussian_denoiser(SD), 7, sig, torch.Generator().manual_seed(3), batch=3, shape=(1, 2, 2))
    g = torch.Generator().manual_seed(3)
    z = torch.cat([torch.randn(m, 1, 2, 2, generator=g) for m in (3, 3, 1)])
    assert torch.equal(got, heun_sample(gaussian_denoiser(SD), z * 10.0, sig))
    torch.testing.assert_close(got, z * 10.0 * exact_scale(10.0, 0.0), rtol=0.02, atol=0)   # Heun, 32 steps


@pytest.mark.skipif(not (DATA_DIR / "fashion_mnist" / "train_images.npy").exists(), reason="run the data stage")
def test_training_repeats_exactly_and_the_ema_moves():
    p = {f.name: f.default for f in dataclasses.fields(SkipTuningParams)}
    p.update(seed=3, threads=1, train_steps=3, train_batch=4, train_warmup=2, width=8, heldout_every=2,
             heldout_images=6)
    ema_a, summary = train_unet(p)
    ema_b, _ = train_unet(p)
    assert summary["steps"] == 3 and all(math.isfinite(v) for v in summary["loss_curve"])
    # Held-out loss after updates 2 and 3 (the last): the EMA network's EDM loss on the first test images with a
    # fixed noise stream, repeated here by hand for the final network.
    assert summary["heldout_steps"] == [2, 3] and summary["heldout_images"] == 6
    from kexue.data import load_fashion_mnist
    x_held = load_fashion_mnist(train=False)[0][:6] * 2 - 1
    with torch.no_grad():
        by_hand = float(edm_loss(ema_a, x_held, torch.Generator().manual_seed(10_000), p["p_mean"], p["p_std"],
                                 p["sigma_data"]))
    assert summary["heldout_loss"][-1] == pytest.approx(by_hand, rel=1e-6)
    for a, b in zip(ema_a.parameters(), ema_b.parameters()):
        assert torch.equal(a, b)
    # The zero-initialised output conv has moved: the EMA network is no longer the c_skip x identity.
    assert float(ema_a.net.conv_out.weight.abs().max()) > 0
    torch.set_num_threads(1)   # seed_everything set the thread count; keep this module's one thread


# --- measurements of the chapter ---

def test_map_nonlinearity_is_zero_for_affine_and_matches_a_quadratic_by_hand():
    torch.manual_seed(0)
    z = torch.randn(7, 3, 4, 4, dtype=torch.float64)
    A = torch.randn(48, 48, dtype=torch.float64)
    affine = lambda x: (x.flatten(1) @ A.T + 1.5).reshape(x.shape)
    assert map_nonlinearity(affine, z, 0.3, torch.Generator().manual_seed(1)) < 1e-13
    # f(x) = x^2 elementwise: second difference 2 eps^2 v^2, first difference 4 eps x v (brute force).
    eps = 0.2
    got = map_nonlinearity(lambda x: x ** 2, z, eps, torch.Generator().manual_seed(2))
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    v = v * (z.flatten(1).norm(dim=1) / v.flatten(1).norm(dim=1))[:, None, None, None]
    bend = (2 * eps ** 2 * v ** 2).flatten(1).norm(dim=1).mean()
    move = (4 * eps * z * v).flatten(1).norm(dim=1).mean()
    assert got == pytest.approx(float(bend / move), rel=1e-12)
    with pytest.raises(ValueError, match="eps"):
        map_nonlinearity(affine, z, 0.0, torch.Generator())


def test_denoising_errors_of_the_exact_gaussian_denoiser():
    # Data N(0, sd^2): the exact denoiser's error per pixel is sigma^2 sd^2 / (sigma^2 + sd^2).
    sd = 0.5
    y = sd * torch.randn(4000, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows = denoising_errors(gaussian_denoiser(sd), y, [0.1, 0.5, 2.0], lambda x: x.flatten(1),
                            torch.Generator().manual_seed(1))
    for r in rows:
        expect = r["sigma"] ** 2 * sd ** 2 / (r["sigma"] ** 2 + sd ** 2)
        assert r["pixel_mse"].shape == (4000,)                                   # one error per image
        assert float(r["pixel_mse"].mean()) == pytest.approx(expect, rel=0.03)
        assert torch.allclose(r["feature_mse"], r["pixel_mse"], rtol=1e-12)       # identity features
    with pytest.raises(ValueError, match="sigma"):
        denoising_errors(gaussian_denoiser(sd), y, [0.0], lambda x: x.flatten(1), torch.Generator())


def test_argmin_per_set_picks_each_sets_lowest_rho():
    fd = {1.0: [5.0, 4.0, 3.0], 0.8: [4.0, 4.0, 6.0], 0.6: [6.0, 1.0, 6.0]}
    assert argmin_per_set(fd) == [0.8, 0.6, 1.0]
    assert argmin_per_set({1.0: [2.0], 0.8: [2.0]}) == [1.0]                      # a tie keeps the first listed
    with pytest.raises(ValueError, match="same number"):
        argmin_per_set({1.0: [1.0, 2.0], 0.8: [1.0]})


def test_speedup_rule_outcomes():
    from kexue.verdicts import Verdict
    better = Verdict("supported", "significant", "tuned lower", 0.01)
    tie = Verdict("inconclusive at this scale", "straddles", "no difference", 0.4)
    small = Verdict("contradicted", "inside_margin", "inside the margin", p_against=0.01)
    assert speedup_rule(9, 19, 35, better).verdict == "supported"
    assert speedup_rule(9, None, 35, better).verdict == "supported"             # untuned never matched below 35
    assert speedup_rule(9, 19, 35, tie).verdict == "inconclusive at this scale"  # matched first, but not better
    assert speedup_rule(9, 19, 35, small).verdict == "contradicted"             # better by less than the margin
    assert speedup_rule(9, 19, 35, small).reason == "inside_margin"
    assert speedup_rule(19, 19, 35).verdict == "inconclusive at this scale"     # no saving shown, none ruled out
    assert speedup_rule(None, 19, 35, margin=2.0).margin == 2.0
    assert speedup_rule(35, None, 35).verdict == "inconclusive at this scale"
    assert speedup_rule(9, 19, 35, better, margin=2.0).margin == 2.0
    with pytest.raises(ValueError, match="at_match"):
        speedup_rule(9, 19, 35)


def test_resblock_branches_add_up_to_forward_and_groupnorm_erases_a_scaled_group():
    torch.manual_seed(0)
    block = ResBlock(16, 8, emb_dim=4).double()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
    x, emb = torch.randn(3, 16, 5, 5, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    main, res = block.branches(x, emb)
    assert torch.equal(block(x, emb), main + res)
    # Scale the last 8 channels (one whole GroupNorm group, as a skip is): the main branch barely moves
    # (only through GroupNorm's eps), the 1x1 residual branch moves linearly.
    scaled = torch.cat([x[:, :8], 0.5 * x[:, 8:]], 1)
    main2, res2 = block.branches(scaled, emb)
    assert (main2 - main).norm() / main.norm() < 1e-4
    assert (res2 - res).norm() / res.norm() > 0.1
    w = block.shortcut.weight[:, 8:, 0, 0]
    assert torch.allclose(res - res2, torch.einsum("oc,bchw->bohw", w, 0.5 * x[:, 8:]), atol=1e-12)


def test_frechet_distance_ignores_dimensions_dead_in_both_sets_exactly():
    from kexue.metrics import frechet_distance, frechet_distance_active
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 6, generator=g), torch.randn(400, 6, generator=g) * 1.3 + 0.2
    pad = lambda x: torch.cat([x[:, :3], torch.zeros(len(x), 4), x[:, 3:]], 1)        # 4 dead dimensions
    assert frechet_distance_active(pad(a), pad(b)) == pytest.approx(frechet_distance(a, b), rel=1e-12)
    # a dimension dead in one set only is kept (it is a real difference between the sets)
    b1 = pad(b).clone()
    b1[:, 3] = 1.0
    assert frechet_distance_active(pad(a), b1) == pytest.approx(frechet_distance(a, b) + 1.0, rel=1e-9)


