"""kexue.ebm: Langevin chains against closed-form stationary laws, the replay buffer's rates,
the loss gradient against the contrastive estimator computed sample by sample."""
import math

import numpy as np
import pytest
import torch

from kexue.ebm import (ConvEnergy, EBMTrainer, MLPEnergy, ReplayBuffer, contrastive_divergence, ebm_adam, ebm_loss,
                       fit, gaussian_chain_variance, langevin, per_sample_grads, reference_sampler_scales,
                       uniform_init)


def quadratic(variance=1.0):
    return lambda x: x.pow(2).sum(-1) / (2 * variance)          # U for N(0, variance I), x [N, d] -> [N]


@pytest.mark.parametrize("step, noise", [(0.5, 1.0), (0.5, 0.5), (0.05, 1.0)])
def test_gaussian_energy_reaches_the_predicted_stationary_law(step, noise):
    """Mean 0 and variance s^2 / (1 - eps/4), not 1: the discretisation bias of section 3."""
    n = 20000
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((n, 1), 3.0, dtype=torch.float64)               # far from the mean
    n_steps = int(40 / step)                                        # contraction (1 - eps/2)^steps < 1e-8
    x = langevin(quadratic(), x0, n_steps, step, noise, generator=g).squeeze(1)
    v = gaussian_chain_variance(step, 1.0, noise)
    assert v == pytest.approx(noise ** 2 / (1 - step / 4))
    se_mean, se_var = math.sqrt(v / n), v * math.sqrt(2 / (n - 1))
    assert abs(x.mean().item()) < 4 * se_mean
    assert abs(x.var().item() - v) < 4 * se_var
    if step == 0.5:                                                 # the bias is detectable at this size
        assert abs(x.var().item() - noise ** 2) > 4 * se_var


def test_chain_variance_formula_bounds():
    with pytest.raises(ValueError, match="step_size=4.0"):
        gaussian_chain_variance(4.0, 1.0)
    assert gaussian_chain_variance(1e-9, 2.0) == pytest.approx(2.0)     # the eps -> 0 limit


def test_two_component_mixture_histogram_matches_the_density():
    w, mu, sd = torch.tensor([0.3, 0.7], dtype=torch.float64), torch.tensor([-1.0, 1.5], dtype=torch.float64), 0.7

    def energy(x):                                                  # -log p, x [N, 1] -> [N]
        comp = -(x - mu).pow(2) / (2 * sd ** 2) + w.log()
        return -torch.logsumexp(comp, 1)

    n, step = 20000, 0.01
    g = torch.Generator().manual_seed(1)
    x0 = (torch.rand(n, 1, generator=g, dtype=torch.float64) * 8 - 4)
    x = langevin(energy, x0, 3000, step, generator=g).squeeze(1)
    edges = torch.linspace(-3.5, 4.0, 16, dtype=torch.float64)
    cdf = lambda t: (w * 0.5 * (1 + torch.erf((t[:, None] - mu) / (sd * math.sqrt(2))))).sum(1)  # noqa: E731
    p = cdf(edges[1:]) - cdf(edges[:-1])
    counts = torch.histogram(x, edges).hist / n
    tol = 4 * (p * (1 - p) / n).sqrt() + step / 4 * p                # sampling error + O(eps) bias
    assert ((counts - p).abs() <= tol).all(), (counts - p).abs().max()
    assert abs((x < 0.25).double().mean().item() - 0.3) < 0.02          # the mode weights, not just the shapes


def test_sampling_leaves_no_parameter_gradient_and_does_not_touch_x():
    torch.manual_seed(0)
    for energy, x in ((MLPEnergy(2, 8), torch.randn(5, 2)), (ConvEnergy(2), torch.rand(3, 1, 28, 28))):
        x_before = x.clone()
        out = langevin(energy, x, 3, 0.01)
        assert all(p.grad is None for p in energy.parameters())
        assert torch.equal(x, x_before) and not out.requires_grad and out.shape == x.shape


def test_zero_noise_is_gradient_descent():
    x0 = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    x = langevin(quadratic(), x0, 7, 0.3, noise_scale=0.0)
    torch.testing.assert_close(x, x0 * (1 - 0.15) ** 7)


def test_reference_sampler_is_the_same_update():
    """x - lambda grad U + sigma xi, written as a `langevin` step with eps = 2 lambda, s = sigma / sqrt(2 lambda)."""
    lam, sigma = 10.0, 0.005
    step, scale = reference_sampler_scales(lam, sigma)
    assert scale ** 2 == pytest.approx(sigma ** 2 / (2 * lam))          # temperature 1.25e-6
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = langevin(quadratic(50.0), x0, 1, step, scale, generator=torch.Generator().manual_seed(5))
    xi = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, x0 - lam * x0 / 50.0 + sigma * xi)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_steps": -1}, "n_steps=-1"), ({"n_steps": 2.5}, "n_steps=2.5"), ({"step_size": 0.0}, "step_size=0.0"),
    ({"step_size": float("nan")}, "step_size=nan"), ({"noise_scale": -1.0}, "noise_scale=-1.0")])
def test_langevin_rejects_bad_arguments(kwargs, message):
    args = {"n_steps": 2, "step_size": 0.1, "noise_scale": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        langevin(quadratic(), torch.zeros(3, 2), **args)


def test_langevin_rejects_an_energy_without_one_value_per_sample():
    with pytest.raises(ValueError, match="one value per sample"):
        langevin(lambda x: x.sum(), torch.zeros(3, 2), 1, 0.1)


# --- replay buffer ---

def test_buffer_reinitialises_five_percent_within_sampling_error():
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(1000, 0.05, init_fn=lambda n: torch.ones(n, 2), generator=g)
    buf.push(torch.zeros(1000, 2))
    n = 100_000
    x = buf.sample(n)
    fresh = (x[:, 0] == 1).double().mean().item()
    assert buf.last_reinit == int((x[:, 0] == 1).sum())
    assert abs(fresh - 0.05) < 4 * math.sqrt(0.05 * 0.95 / n)


def test_buffer_keeps_the_latest_capacity_samples():
    buf = ReplayBuffer(100, 0.0, init_fn=lambda n: torch.full((n, 1), -1.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(buf.sample(4), torch.full((4, 1), -1.0)) and buf.last_reinit == 4    # empty: all fresh
    for start in range(0, 250, 30):                                   # pushes of 30, then a last one of 10
        buf.push(torch.arange(start, min(start + 30, 250), dtype=torch.float32)[:, None])
    assert len(buf) == 100 and buf.storage.shape == (100, 1)
    assert set(buf.storage[:, 0].tolist()) == set(range(150, 250))
    drawn = buf.sample(5000)[:, 0]
    assert set(drawn.tolist()) <= set(range(150, 250)) and buf.last_reinit == 0
    big = ReplayBuffer(10, 0.0, init_fn=lambda n: torch.zeros(n, 1))
    big.push(torch.arange(25.0)[:, None])                              # one push larger than capacity
    assert sorted(big.storage[:, 0].tolist()) == list(range(15, 25))


def test_buffer_ages_count_the_chain_runs_behind_each_sample():
    # The "chain" adds 1 to each sample and fresh starts are 0, so a sample's value is its true age.
    buf = ReplayBuffer(200, 0.1, init_fn=lambda n: torch.zeros(n, 1), generator=torch.Generator().manual_seed(0))
    for _ in range(150):
        start = buf.sample(32)
        assert torch.equal(buf.last_ages, start[:, 0].long())
        buf.push(start + 1)                                        # ages default to last_ages + 1
    assert torch.equal(buf.ages[:len(buf)], buf.storage[:len(buf), 0].long())
    assert buf.ages.min() >= 1 and buf.ages.max() > 10               # old chains survive, fresh ones join
    buf.push(torch.full((3, 1), 7.0), ages=torch.tensor([7, 7, 7]))
    assert torch.equal(buf.ages[:len(buf)], buf.storage[:len(buf), 0].long())
    with pytest.raises(ValueError, match=r"ages has shape \(2,\), need \(3,\)"):
        buf.push(torch.zeros(3, 1), ages=torch.tensor([1, 2]))


def test_buffer_lineage_follows_each_chain_to_its_fresh_start():
    # Brute force: the "chain" keeps a sample's root id in its value (each fresh start gets a new id from a
    # counter in init_fn), so a stored sample's value names its true lineage; the buffer numbers lineages
    # its own way, so the two labellings must agree up to renaming (one-to-one).
    counter = {"next": 0}

    def init(n):
        ids = torch.arange(counter["next"], counter["next"] + n, dtype=torch.float64)[:, None]
        counter["next"] += n
        return ids

    buf = ReplayBuffer(300, 0.05, init_fn=init, generator=torch.Generator().manual_seed(1))
    def one_to_one(a, b):
        pairs = set(zip(a.tolist(), b.tolist()))
        return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))

    for _ in range(200):
        start = buf.sample(40)
        assert one_to_one(buf.last_lineage, start[:, 0].long())
        buf.push(start.clone())
    assert one_to_one(buf.lineage[:len(buf)], buf.storage[:len(buf), 0].long())
    # Drawing with replacement makes lineages branch: far fewer roots than samples.
    assert len(torch.unique(buf.lineage)) < len(buf) / 2


def test_lineage_tracking_draws_no_random_numbers():
    def run(track):
        buf = ReplayBuffer(100, 0.1, init_fn=lambda n: torch.zeros(n, 1), generator=torch.Generator().manual_seed(3))
        for _ in range(50):
            x = buf.sample(16)
            buf.push(x + torch.randn(x.shape, generator=torch.Generator().manual_seed(len(buf))))
            if not track:
                buf.last_lineage = None
        return buf.storage.clone()
    assert torch.equal(run(True), run(False))


def test_lineage_reverse_kl_reduces_to_miller_madow_for_distinct_lineages():
    from kexue.ebm import lineage_reverse_kl
    from kexue.toy2d import mode_reverse_kl, toy_dataset
    centres, std = toy_dataset("ring")
    g = torch.Generator().manual_seed(0)
    x = centres[torch.randint(len(centres), (400,), generator=g)] + std * torch.randn(400, 2, generator=g)
    x[:20] += 10                                                          # some low-quality samples
    kl, n_eff = lineage_reverse_kl(x, torch.arange(400), centres, std)
    assert kl == pytest.approx(mode_reverse_kl(x, centres, std, miller_madow=True), abs=1e-12)
    from kexue.toy2d import mode_stats
    n_hq = round(400 * mode_stats(x, centres, std)["high_quality"])
    assert n_eff == n_hq and n_hq < 380
    # Every sample duplicated once: half as many independent chains, a correction twice as large.
    plug = mode_reverse_kl(x, centres, std)
    kl2, n2 = lineage_reverse_kl(x, torch.arange(400) // 2, centres, std)
    assert n2 == pytest.approx(n_hq / 2, rel=0.03)
    assert plug - kl2 == pytest.approx(2 * (plug - kl), rel=0.03)
    with pytest.raises(ValueError, match="400 samples but 3 lineage ids"):
        lineage_reverse_kl(x, torch.arange(3), centres, std)


def test_effective_lineages_limits_and_brute_force():
    from kexue.ebm import effective_lineages
    assert effective_lineages(torch.arange(50)) == 50                    # all distinct
    assert effective_lineages(torch.zeros(50, dtype=torch.long)) == 1    # one chain
    assert effective_lineages(torch.tensor([0, 0, 1, 1])) == 2           # two equal groups
    ids = torch.tensor([0] * 6 + [1] * 3 + [2])
    # Brute force: n / P(two picks with replacement share an id) / n, i.e. 1 / sum p_k^2.
    p_same = sum((ids == a).double().mean() * (ids == b).double().mean() for a in range(3) for b in range(3) if a == b)
    assert effective_lineages(ids) == pytest.approx(1 / float(p_same))
    with pytest.raises(ValueError, match="no samples"):
        effective_lineages(torch.tensor([], dtype=torch.long))


@pytest.mark.parametrize("kwargs, message", [
    ({"capacity": 0}, "capacity=0"), ({"reinit_prob": 1.5}, "reinit_prob=1.5"), ({"init_fn": None}, "init_fn=None")])
def test_buffer_rejects_bad_arguments(kwargs, message):
    args = {"capacity": 10, "reinit_prob": 0.05, "init_fn": lambda n: torch.zeros(n, 2), **kwargs}
    with pytest.raises(ValueError, match=message):
        ReplayBuffer(**args)


# --- loss ---

def brute_force_grads(energy, x):
    params = list(energy.parameters())
    out = []
    for xi in x:
        e = energy(xi[None])[0]
        out.append((e.detach(), torch.autograd.grad(e, params)))
    return out


@pytest.mark.parametrize("alpha, form", [(0.0, "paper"), (0.3, "paper"), (0.3, "article")])
def test_loss_gradient_is_the_contrastive_estimator(alpha, form):
    r"""grad = mean_r (1 + 2 a U) grad U - mean_f (1 -/+ 2 a U) grad U; for a = 0 the estimator
    E_p[grad U] - E_q[grad U] of the derivation, sample by sample in float64."""
    torch.manual_seed(0)
    energy = MLPEnergy(2, 8).double()
    x_r, x_f = torch.randn(7, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    loss = ebm_loss(energy(x_r), energy(x_f), alpha, form)
    got = torch.autograd.grad(loss, list(energy.parameters()))
    sign = 1.0 if form == "paper" else -1.0
    expected = [torch.zeros_like(p) for p in energy.parameters()]
    for (e, grads) in brute_force_grads(energy, x_r):
        for acc, gr in zip(expected, grads):
            acc += (1 + 2 * alpha * e) * gr / len(x_r)
    for (e, grads) in brute_force_grads(energy, x_f):
        for acc, gr in zip(expected, grads):
            acc -= (1 - sign * 2 * alpha * e) * gr / len(x_f)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_per_sample_grads_average_to_the_batch_gradient():
    torch.manual_seed(0)
    energy = MLPEnergy(2, 8).double()
    x = torch.randn(6, 2, dtype=torch.float64)
    u, grads = per_sample_grads(energy, x)
    batch = torch.cat([g.reshape(-1) for g in torch.autograd.grad(energy(x).mean(), list(energy.parameters()))])
    torch.testing.assert_close(u, energy(x).detach())
    torch.testing.assert_close(grads.mean(0), batch)


def test_loss_rejects_unknown_form():
    with pytest.raises(ValueError, match="form='sum'"):
        ebm_loss(torch.zeros(2), torch.zeros(2), 0.1, "sum")


def test_contrastive_divergence_per_member():
    e_r, e_f = torch.tensor([[1.0, 3.0], [0.0, 0.0]]), torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(contrastive_divergence(e_r, e_f), torch.tensor([1.0, -1.0]))


# --- ensemble ---

def test_ensemble_members_are_independent_models():
    torch.manual_seed(0)
    ens = MLPEnergy(2, 8, members=3).double()
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    e = ens(x)
    assert e.shape == (3, 6)
    for s in range(3):
        torch.testing.assert_close(ens.member(s)(x[s]), e[s])          # a copy of member s's weights
    with pytest.raises(ValueError, match="s=3"):
        ens.member(3)
    # The summed loss gives member 1 exactly the gradient of its own loss.
    total = torch.autograd.grad(ebm_loss(e[:, :3], e[:, 3:], 0.2).sum(), list(ens.parameters()))
    own = torch.autograd.grad(ebm_loss(ens(x)[1, :3], ens(x)[1, 3:], 0.2), list(ens.parameters()))
    for a, b in zip(total, own):
        torch.testing.assert_close(a[1], b[1])
    with pytest.raises(ValueError, match="ensemble of 3"):
        ens(torch.zeros(4, 2, dtype=torch.float64))


def test_trainer_learns_a_gaussian_blob():
    """End to end: buffer + Langevin + loss move the model's samples onto the data."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centre = torch.tensor([1.0, -1.0])
    energy = MLPEnergy(2, 32, members=2)
    trainer = EBMTrainer(energy, ebm_adam(energy.parameters(), 3e-3), uniform_init((2,), -3, 3, g), 20, 0.02,
                         alpha=0.0, use_buffer=[True, False], generator=g)
    hist = fit(trainer, lambda n, gen: centre + 0.3 * torch.randn(n, 2, generator=gen), 300, 64, g)
    assert hist[-1]["diverged"] == [False, False]
    buffered = trainer.buffers[0].storage[-2000:]                       # the persistent chains' ends
    short_run = trainer.sample(torch.stack([trainer.init_fn(2000)] * 2))[1]   # K steps from noise
    for samples in (buffered, short_run):                              # data: mean (1, -1), std 0.3
        assert (samples.mean(0) - centre).norm() < 0.15
        assert 0.2 < samples.std(0).mean() < 0.45
    assert trainer.buffers[1] is None and len(trainer.buffers[0]) == min(10000, 300 * 64)


def test_per_member_forms_match_single_form_losses():
    torch.manual_seed(0)
    e_r, e_f = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    mixed = ebm_loss(e_r, e_f, torch.tensor([0.3, 0.3], dtype=torch.float64), ["paper", "article"])
    torch.testing.assert_close(mixed[0], ebm_loss(e_r[0], e_f[0], 0.3, "paper"))
    torch.testing.assert_close(mixed[1], ebm_loss(e_r[1], e_f[1], 0.3, "article"))


def test_trainer_rejects_bad_per_member_settings():
    energy = MLPEnergy(2, 4, members=2)
    with pytest.raises(ValueError, match="alpha"):
        EBMTrainer(energy, ebm_adam(energy.parameters(), 1e-3), lambda n: torch.zeros(n, 2), 1, 0.1,
                   alpha=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="form='x'"):
        EBMTrainer(energy, ebm_adam(energy.parameters(), 1e-3), lambda n: torch.zeros(n, 2), 1, 0.1, form="x")


# --- the IGEBM sampler (notebook section 6) ---

def test_igebm_step_matches_a_hand_computation_including_the_clip():
    """Noise first, the gradient at the noised point, each component clipped to +-c, step lambda,
    projection onto [0, 1]: one step written out by hand, float64, same noise draw."""
    from kexue.ebm import igebm_langevin
    centre = torch.linspace(-0.5, 1.5, 5, dtype=torch.float64)
    energy = lambda x: (x - centre).pow(2).sum(-1) / 50.0                    # noqa: E731  grad (x - c) / 25
    x0 = torch.rand(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lam, sigma, c = 10.0, 0.005, 0.01
    out = igebm_langevin(energy, x0, 1, lam, sigma, c, (0.0, 1.0), generator=torch.Generator().manual_seed(3))
    xi = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    noised = x0 + sigma * xi
    grad = (noised - centre) / 25.0
    assert ((grad.abs() > c).any() and (grad.abs() < c).any())               # the clip binds on some components
    torch.testing.assert_close(out, (noised - lam * grad.clamp(-c, c)).clamp(0, 1), rtol=0, atol=1e-14)
    # Not the gradient at the pre-noise point: that update differs.
    wrong = (noised - lam * ((x0 - centre) / 25.0).clamp(-c, c)).clamp(0, 1)
    assert (out - wrong).abs().max() > 1e-6
    # Without clip and box it is x + sigma xi - lambda grad U(x + sigma xi).
    free = igebm_langevin(energy, x0, 1, lam, sigma, None, None, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(free, noised - lam * grad, rtol=0, atol=1e-14)


def test_igebm_sampler_moves_at_most_lambda_c_per_step_and_stays_in_the_box():
    from kexue.ebm import igebm_langevin
    x0 = torch.rand(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    steep = lambda x: 1e3 * (x - 3.0).pow(2).sum(-1)                        # noqa: E731  |grad| >> c
    out = igebm_langevin(steep, x0, 1, 10.0, 0.0, 0.01, None)
    torch.testing.assert_close(out, x0 + 0.1, rtol=0, atol=1e-12)            # exactly lambda * c uphill-to-down
    out = igebm_langevin(steep, x0, 30, 10.0, 0.005, 0.01, (0.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1 and (out == 1).float().mean() > 0.9


@pytest.mark.parametrize("kwargs, message", [
    ({"n_steps": -1}, "n_steps=-1"), ({"step_size": 0.0}, "step_size=0.0"), ({"noise_std": -1.0}, "noise_std=-1.0"),
    ({"grad_clip": 0.0}, "grad_clip=0.0")])
def test_igebm_rejects_bad_arguments(kwargs, message):
    from kexue.ebm import igebm_langevin
    args = {"n_steps": 2, "step_size": 10.0, "noise_std": 0.005, "grad_clip": 0.01, **kwargs}
    with pytest.raises(ValueError, match=message):
        igebm_langevin(quadratic(), torch.zeros(3, 2), **args)


# --- pairing: shared seeds, noise, data ---

def test_groups_share_noise_between_members_of_one_seed():
    x = torch.zeros(4, 7, 2, dtype=torch.float64)
    flat = lambda x: x.sum(-1) * 0                                          # noqa: E731  zero drift
    out = langevin(flat, x, 3, 0.5, groups=[0, 1, 0, 1], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[0], out[2])
    torch.testing.assert_close(out[1], out[3])
    assert (out[0] - out[1]).abs().max() > 0.1
    with pytest.raises(ValueError, match="groups"):
        langevin(flat, x, 1, 0.5, groups=[0, 1])


def test_from_seeds_members_equal_stand_alone_models_of_their_seed():
    ens = MLPEnergy.from_seeds([3, 5, 3], 2, 8)
    alone = MLPEnergy(2, 8, generator=torch.Generator().manual_seed(5))
    x = torch.randn(3, 4, 2)
    torch.testing.assert_close(ens(x)[1], alone(x[1]))
    torch.testing.assert_close(ens(x[[0]].expand(3, -1, -1))[0], ens(x[[0]].expand(3, -1, -1))[2])   # same seed


def test_conv_ensemble_member_is_the_stand_alone_model_and_spectrally_normalised():
    ens = ConvEnergy(3, members=3, seeds=[0, 4, 9]).double()
    alone = ConvEnergy(3, seeds=[4]).double()
    x = torch.rand(3, 5, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ens.eval(), alone.eval()
    # Equal up to the float32 rounding of the power-iteration state built at initialisation: |Δ| stays below
    # 1.5e-8 over 200 random inputs (energies of order 0.1, float32 eps 1.2e-7), so 5e-8 absolute.
    torch.testing.assert_close(ens(x)[1], alone(x[1]), rtol=1e-6, atol=5e-8)
    plain = ens(x)
    with ens.frozen():
        torch.testing.assert_close(ens(x), plain, rtol=1e-12, atol=1e-14)
    sub = ens.subset([2, 0])
    torch.testing.assert_close(sub(x[[2, 0]]), ens(x)[[2, 0]])
    # After enough power iterations sigma is the largest singular value: the normalised matrices have norm 1.
    for i in range(4):
        ens._power_iteration(i, 300)
    for w in ens.normalised_weights():
        norms = torch.linalg.matrix_norm(w.flatten(2), ord=2)
        torch.testing.assert_close(norms, torch.ones(3, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="ensemble of 3"):
        ens(x[0])
    with pytest.raises(ValueError, match="seeds"):
        ConvEnergy(3, members=2, seeds=[1])


def test_conv_energy_with_a_free_output_layer_normalises_only_the_hidden_layers():
    free = ConvEnergy(3, members=2, seeds=[0, 1], normalise_output=False).double()
    for i in range(4):
        free._power_iteration(i, 300)
    ws = free.normalised_weights()
    for w in ws[:-1]:                                                   # hidden layers: spectral norm 1
        torch.testing.assert_close(torch.linalg.matrix_norm(w.flatten(2), ord=2),
                                   torch.ones(2, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    assert ws[-1] is free.weights[-1]                                   # the output layer as learned
    # doubling the output weights and bias doubles the energy (SN would undo a rescaled weight)
    x = torch.rand(2, 4, 1, 28, 28, dtype=torch.float64)
    free.eval()
    e = free(x)
    with torch.no_grad():
        free.weights[-1].mul_(2), free.biases[-1].mul_(2)
    torch.testing.assert_close(free(x), 2 * e)
    sub = free.subset([1])
    assert not sub.normalise_output
    torch.testing.assert_close(sub(x[[1]]), free(x)[[1]])


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_ensemble_member_trains_exactly_as_the_model_alone(kind):
    """Member 1 of a paired ensemble (seeds [5, 7]) against the seed-7 model trained alone: same data, same
    starts, a deterministic sampler (no noise), Adam on the summed loss; equal after several updates."""
    from kexue.ebm import igebm_langevin  # noqa: F401
    torch.manual_seed(0)
    if kind == "mlp":
        shape, make = (2,), (lambda seeds: MLPEnergy.from_seeds(seeds, 2, 8).double())
        data = torch.randn(6, 2, dtype=torch.float64)
        start = torch.randn(6, 2, dtype=torch.float64)
        kw = {"sampler": "langevin", "step_size": 0.1, "noise_scale": 0.0}
    else:
        shape, make = (1, 28, 28), (lambda seeds: ConvEnergy(2, len(seeds), seeds).double())
        data = torch.rand(4, 1, 28, 28, dtype=torch.float64)
        start = torch.rand(4, 1, 28, 28, dtype=torch.float64)
        kw = {"sampler": "igebm", "step_size": 10.0, "noise_scale": 0.0, "grad_clip": 0.01, "clamp": (0.0, 1.0)}
    runs = []
    for seeds in ([5, 7], [7]):
        energy = make(seeds)
        trainer = EBMTrainer(energy, ebm_adam(energy.parameters(), 1e-2), lambda n: start[:n].clone(), 3, alpha=0.5,
                             use_buffer=False, groups=list(range(len(seeds))) if len(seeds) > 1 else None, **kw)
        fit(trainer, lambda n, gen: data[:n].clone(), 4, len(data), torch.Generator().manual_seed(0))
        runs.append(energy)
    ens, alone = runs
    for a, b in zip(ens.parameters(), alone.parameters()):
        torch.testing.assert_close(a[1:2] if kind == "conv" else a[1:2], b, rtol=1e-9, atol=1e-11)


def test_paired_trainer_shares_data_starts_and_buffer_draws_within_a_seed():
    energy = MLPEnergy.from_seeds([0, 1, 0, 1], 2, 4)
    g = torch.Generator().manual_seed(0)
    trainer = EBMTrainer(energy, ebm_adam(energy.parameters(), 1e-3), uniform_init((2,), -1, 1, g), 2, 0.01,
                         use_buffer=[True, True, True, True], alpha=[0.1, 0.1, 0.0, 0.0], generator=g,
                         groups=[0, 1, 0, 1], buffer_seeds=[10, 11, 10, 11])
    fresh = trainer.fresh(5)
    torch.testing.assert_close(fresh[0], fresh[2])
    assert (fresh[0] - fresh[1]).abs().max() > 0
    seen = []
    fit(trainer, lambda n, gen: (seen.append(1), torch.randn(n, 2, generator=gen))[1], 3, 8, g)
    assert len(seen) == 3 * 2                                           # one batch per seed, not per member
    b0, b2 = trainer.buffers[0], trainer.buffers[2]
    assert torch.equal(b0.generator.get_state(), b2.generator.get_state())
    with pytest.raises(ValueError, match="groups"):
        EBMTrainer(energy, ebm_adam(energy.parameters(), 1e-3), lambda n: torch.zeros(n, 2), 1, 0.1, groups=[0, 1])
    with pytest.raises(ValueError, match="sampler='mala'"):
        EBMTrainer(energy, ebm_adam(energy.parameters(), 1e-3), lambda n: torch.zeros(n, 2), 1, 0.1, sampler="mala")


def test_buffer_sample_rejects_fresh_of_the_wrong_size():
    buf = ReplayBuffer(10, 0.5, init_fn=lambda n: torch.zeros(n, 1))
    with pytest.raises(ValueError, match="n=3"):
        buf.sample(3, torch.zeros(2, 1))


# --- measures and rules ---

def test_ring_gap_contrast_of_the_true_mixture_and_of_an_annulus():
    from kexue.ebm import ring_gap_contrast
    from kexue.toy2d import mixture_log_density, ring_centres
    centres, std = ring_centres(8, 2.0).double(), 0.1
    u_true = lambda p: -mixture_log_density(p.double(), centres, std)      # noqa: E731
    got = ring_gap_contrast(u_true)
    # Brute force: the lowest energy on the mid-gap ray and on the mode ray, on a much finer grid.
    r = torch.linspace(1.5, 2.5, 20001, dtype=torch.float64)
    def ray_min(theta):
        return float(u_true(torch.stack([r * math.cos(theta), r * math.sin(theta)], 1)).min())
    expected = ray_min(math.pi / 8) - max(ray_min(0.0), ray_min(math.pi / 4))
    assert expected > 25                                               # about 29 nats
    torch.testing.assert_close(got, torch.full((8,), expected, dtype=torch.float64), rtol=0, atol=0.05)
    annulus = lambda p: (p.norm(dim=-1) - 2.0).pow(2) / (2 * std ** 2)     # noqa: E731
    assert ring_gap_contrast(annulus).abs().max() < 1e-3
    with pytest.raises(ValueError, match="band=3"):
        ring_gap_contrast(annulus, band=3.0)


def test_feature_spread_is_the_rms_pairwise_distance_and_class_counts():
    from kexue.ebm import classes_at_least, feature_spread
    f = torch.randn(40, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    d2 = torch.cdist(f, f).pow(2)
    rms = math.sqrt(float(d2.sum() / (40 * 39)))                       # mean over pairs i != j
    assert feature_spread(f) == pytest.approx(rms, rel=1e-12)
    preds = torch.tensor([0] * 10 + [1] * 5 + [2] * 4 + [3])          # shares 0.5, 0.25, 0.2, 0.05
    assert classes_at_least(preds, 0.05) == 4 and classes_at_least(preds, 0.21) == 2
    with pytest.raises(ValueError, match="share=0"):
        classes_at_least(preds, 0.0)
    with pytest.raises(ValueError, match="feats"):
        feature_spread(f[:1])


def test_verdict_rules_of_the_chapter():
    from kexue.ebm import allocation_rule
    from kexue.verdicts import within_noise_rule
    assert within_noise_rule([0.5, 3.9]).verdict == "supported"
    assert within_noise_rule([0.5, 4.1]).verdict == "contradicted"
    # bounds by hand: mean 1.02, sd 0.01, n 3 -> upper 1.02 + t(0.95, 2) * 0.01 / sqrt(3) = 1.0369
    ok = allocation_rule({"ring": [1.01, 1.02, 1.03], "grid": [1.0, 1.0, 1.0]}, tol=1.1)
    assert ok.verdict == "supported" and "1.037]" in ok.evidence
    assert allocation_rule({"ring": [1.01, 1.02, 1.03], "grid": [1.3, 1.31, 1.29]}).verdict == "contradicted"
    # mean 1.09 under the tolerance, but its upper bound above it: not decided by the point estimate
    assert allocation_rule({"ring": [1.0, 1.09, 1.18]}, tol=1.1).verdict == "inconclusive at this scale"
    from kexue.ebm import trains_like_rule
    base = torch.linspace(0, 1, 10).numpy()
    assert trains_like_rule(base + 0.01, base, 0.15).verdict == "supported"
    assert trains_like_rule(base + 2.0, base, 0.15).verdict == "contradicted"
    overflowed = base.copy()
    overflowed[:8] = float("nan")
    assert "non-finite" in trains_like_rule(overflowed, base, 0.15).evidence
    assert trains_like_rule(overflowed, base, 0.15).verdict == "contradicted"
    with pytest.raises(ValueError, match="errors_in_se"):
        within_noise_rule([float("nan")])
    with pytest.raises(ValueError, match="variance_ratios"):
        allocation_rule({"ring": [0.5, 1.0]})
    with pytest.raises(ValueError, match="variance_ratios"):
        allocation_rule([1.0, 1.0])


def test_per_member_noise_scales_broadcast_over_image_shaped_chains():
    """An image ensemble with the langevin sampler and one noise scale per member: each member's chain
    gets its own scale (a [S] scale broadcast over [S, N, 1, 28, 28]), and a zero-noise member's chain
    is the noise-free chain."""
    energy = ConvEnergy(2, members=3, seeds=[0, 1, 2]).double()
    start = torch.rand(3, 4, 1, 28, 28, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    noisy = EBMTrainer(energy, ebm_adam(energy.parameters(), 1e-3), lambda n: start[0, :n].clone(), 2, 0.01,
                       noise_scale=[0.0, 0.5, 0.0], use_buffer=False, generator=g)
    quiet = EBMTrainer(energy, ebm_adam(energy.parameters(), 1e-3), lambda n: start[0, :n].clone(), 2, 0.01,
                       noise_scale=0.0, use_buffer=False, generator=g)
    a, b = noisy.sample(start), quiet.sample(start)
    assert a.shape == start.shape
    torch.testing.assert_close(a[[0, 2]], b[[0, 2]])
    # the langevin update adds noise_scale * sqrt(eps) * xi per step: two steps give sd 0.5 * sqrt(2 * 0.01), and
    # E|N(0, sd^2)| = sd * sqrt(2 / pi) (the gradient parts differ only through the tiny noise-induced shift)
    sd = 0.5 * math.sqrt(2 * 0.01)
    assert float((a[1] - b[1]).abs().mean()) == pytest.approx(sd * math.sqrt(2 / math.pi), abs=0.004)
    noisy.step(torch.rand(3, 4, 1, 28, 28, dtype=torch.float64))      # a whole update runs


@pytest.mark.parametrize("var_p, var_q, cost_q", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.0), (1.0, 1.0, 21.0), (0.3, 4.0, 6.0)])
def test_allocation_variance_ratio_against_brute_force(var_p, var_q, cost_q):
    from kexue.ebm import allocation_variance_ratio
    budget = 100_000.0                                       # C = N + cost_q * M, searched over a fine grid of N
    n = np.linspace(1.0, budget - cost_q, 400_001)
    m = (budget - n) / cost_q
    best = np.min(var_p / n + var_q / m)
    equal = (var_p + var_q) * (1 + cost_q) / budget          # N = M = C / (1 + cost_q)
    assert allocation_variance_ratio(var_p, var_q, cost_q) == pytest.approx(equal / best, rel=1e-6)
    assert allocation_variance_ratio(var_p, var_q, cost_q) >= 1 - 1e-12


def test_allocation_variance_ratio_limits_and_bad_input():
    from kexue.ebm import allocation_variance_ratio
    assert allocation_variance_ratio(3.0, 3.0, 1.0) == pytest.approx(1.0)      # equal spreads, equal costs: 1:1 optimal
    with pytest.raises(ValueError, match="cost_q=0"):
        allocation_variance_ratio(1.0, 1.0, 0)
    with pytest.raises(ValueError, match="var_q=-1"):
        allocation_variance_ratio(1.0, -1.0)


# --- chapter 02's Fashion-MNIST training stage ---

def _tiny_image_cfg(**kw):
    cfg = {"seed": 0, "reinit_prob": 0.05, "igebm_step": 10.0, "igebm_noise": 0.005, "igebm_clip": 0.01,
           "short_run_steps": 3, "long_chain_steps": 4, "long_chains": 20, "image_steps": 6, "image_batch": 8,
           "image_width": 2, "image_lr": 1e-3, "image_alpha": 0.03, "image_chain_steps": 1, "image_buffer": 64,
           "image_seeds": 2, "image_eval_samples": 40, "image_snapshots": 2, "image_workers": 1}
    return {**cfg, **kw}


def test_image_arms_spend_equal_compute_and_seed_sets_are_disjoint():
    from kexue.ebm import IMAGE_BUFFER, IMAGE_SHORT_RUN, SEED_OFFSET, image_arm_plans, image_seed_list
    plans = image_arm_plans({"image_steps": 3500, "image_chain_steps": 5, "short_run_steps": 20})
    buf, sr = plans[IMAGE_BUFFER], plans[IMAGE_SHORT_RUN]
    assert (buf["buffer"], sr["buffer"]) == (True, False) and (buf["k"], sr["k"]) == (5, 20)
    # energy-gradient evaluations per sample slot: K chain steps plus the loss, within one short-run update
    assert 0 <= buf["updates"] * (buf["k"] + 1) - sr["updates"] * (sr["k"] + 1) < sr["k"] + 1
    assert image_seed_list(0, 3) == [0, 1, 2]
    assert not set(image_seed_list(0, 8)) & set(image_seed_list(SEED_OFFSET, 8))


def test_garment_scorer_tells_test_images_from_noise():
    from kexue.data import load_fashion_mnist
    from kexue.ebm import GarmentScorer
    from kexue.metrics import extract, load_classifier
    x_test = load_fashion_mnist(train=False)[0]
    clf = load_classifier()
    score = GarmentScorer(clf, x_test[:600])
    real, noise = score(x_test[600:1200]), score(torch.rand(600, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    assert real["FD"] < 0.05 * noise["FD"]
    assert real["classes ≥5%"] == 10 and noise["classes ≥5%"] <= 3
    f, _ = extract(clf, x_test[600:1200] * 2 - 1)                  # the spread on the classifier's own features
    assert real["feature spread"] == pytest.approx(float((f.double() - f.double().mean(0)).pow(2).sum(1).mean()
                                                         * 2 * 600 / 599) ** 0.5, rel=1e-9)


def test_train_fashion_ebm_is_paired_does_not_depend_on_workers_and_round_trips(tmp_path):
    from kexue.data import DataError
    from kexue.ebm import (IMAGE_BUFFER, IMAGE_KEEP, IMAGE_SHORT_RUN, ConvEnergy, fashion_energy, load_fashion_ebm,
                           save_fashion_ebm, train_fashion_ebm)
    one = train_fashion_ebm(_tiny_image_cfg(), log=lambda m: None)
    two = train_fashion_ebm(_tiny_image_cfg(image_workers=2), log=lambda m: None)
    strip = lambda r: {k: {kk: vv for kk, vv in v.items() if kk != "seconds"} for k, v in r["sets"].items()}  # noqa: E731
    assert strip(one) == strip(two)                                                    # bit for bit, one thread per set
    assert sorted(one["arrays"]) == sorted(two["arrays"])
    for k in one["arrays"]:
        np.testing.assert_array_equal(one["arrays"][k], two["arrays"][k])
    assert sorted(one["sets"]) == ["0", "1000"]
    rec = one["sets"]["0"]
    assert rec["seeds"] == [0, 1] and rec["arms"][IMAGE_BUFFER]["updates"] == 6
    arms = {r["arm"] for r in rec["rows"]}
    assert arms == {IMAGE_BUFFER, IMAGE_SHORT_RUN, "buffer_old", "buffer_from_noise"}
    assert len(rec["rows"]) == 4 * 2 and len(rec["long_rows"]) == 2 * len({0, 1, 2, 4})
    assert one["arrays"][f"0/{IMAGE_BUFFER}/final"].shape == (2, min(IMAGE_KEEP, rec["n_eval"]), 28, 28)
    assert one["arrays"][f"0/{IMAGE_BUFFER}/final"].dtype == np.uint8
    # Paired: both arms start from the same weights per seed; the seed sets differ.
    fd0 = {r["arm"]: r["FD"] for r in rec["rows"] if r["seed"] == 0}
    assert fd0[IMAGE_BUFFER] != fd0[IMAGE_SHORT_RUN]
    for a, size in zip(rec["age_rows"], rec["buffer_sizes"]):
        assert 1 <= a["effective lineages (scored)"] <= rec["n_eval"]
        assert 1 <= a["effective lineages (buffer)"] <= size

    folder = save_fashion_ebm(one, tmp_path / "runs")
    cfg, sets, arrays = load_fashion_ebm(folder)
    assert cfg["image_steps"] == 6 and sets == one["sets"]
    x = torch.rand(2, 5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    loaded, in_memory = fashion_energy(cfg, arrays, 0), fashion_energy(cfg, one["arrays"], 0)
    with torch.no_grad():
        e = loaded(x)
        assert torch.equal(e, in_memory(x))
        # trained: not the initial weights of the same seeds; the first member alone is that member of the pair
        assert not torch.equal(e, ConvEnergy(2, 2, [0, 1], normalise_output=False).eval()(x))
        # to float32 rounding: a one-group convolution may take another kernel than the two-group one (CI's CPU did)
        torch.testing.assert_close(fashion_energy(cfg, arrays, 0, members=1)(x[0]), e[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no trained energies for seeds from 5"):
        fashion_energy(cfg, arrays, 5)
    (folder / "runs.json").write_text((folder / "runs.json").read_text().replace('"FD": ', '"FD":  ', 1))
    with pytest.raises(DataError, match="runs.json: SHA-256 differs"):
        load_fashion_ebm(folder)
    with pytest.raises(DataError, match="dvc repro 02_energy_based_model_train"):
        load_fashion_ebm(tmp_path / "nothing")
