"""kexue.gan: the single loss against separately computed D and G steps, in float64."""
import copy

import numpy as np

import pytest
import torch
import torch.nn as nn

from kexue.gan import (GANTrainer, MLPDiscriminator, MLPGenerator, dirac_trajectory, hinge_d_loss, hinge_g_loss,
                       hinge_single_loss, hinge_single_loss_frozen_d, reversed_vs_g_step)


def nets(seed=0):
    torch.manual_seed(seed)
    G = MLPGenerator(z_dim=3, hidden=16).double()
    D = MLPDiscriminator(hidden=16).double()
    x = torch.randn(10, 2, dtype=torch.float64)
    z = torch.randn(7, 3, dtype=torch.float64)
    return G, D, x, z


def grads_of(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("lam", [1.0, 0.3, 4.0])
def test_single_loss_gradient_is_d_step_for_d_and_lam_g_step_for_g(lam, batched):
    G, D, x, z = nets()
    dp, gp = list(D.parameters()), list(G.parameters())
    single = hinge_single_loss(D, G, x, z, lam=lam, batched=batched)
    got = grads_of(single, dp + gp)
    # Reference: the D step (G frozen) and the G step (D frozen), each its own autograd call.
    d_loss = hinge_d_loss(D(x).reshape(-1), D(G(z).detach()).reshape(-1))
    ref_d = grads_of(d_loss, dp)
    ref_g = grads_of(hinge_g_loss(D(G(z)).reshape(-1)), gp)
    for a, b in zip(got[:len(dp)], ref_d):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(got[len(dp):], ref_g):
        torch.testing.assert_close(a, lam * b, rtol=1e-12, atol=1e-14)
    # Value: the stop-gradient term is identically zero, so L equals L_D.
    torch.testing.assert_close(single.detach(), d_loss.detach(), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("lam", [1.0, 3.0])
def test_frozen_d_variant_has_the_same_value_and_gradient(lam):
    G, D, x, z = nets(4)
    params = list(D.parameters()) + list(G.parameters())
    a = hinge_single_loss(D, G, x, z, lam=lam)
    b = hinge_single_loss_frozen_d(D, G, x, z, lam=lam)
    torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    for ga, gb in zip(torch.autograd.grad(a, params), torch.autograd.grad(b, params)):
        torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-14)
    d1, g1 = one_step("single", sgd, lam)
    d2, g2 = one_step("single_frozen_d", sgd, lam)
    for u, v in zip(d1 + g1, d2 + g2):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-14)


def test_single_loss_matches_contract_formula_written_out():
    G, D, x, z = nets(1)
    fake = G(z)
    expected = (torch.relu(1 + D(x)).mean() + torch.relu(1 - D(fake.detach())).mean()
                + 2.0 * (D(fake).mean() - D(fake.detach()).mean()))
    torch.testing.assert_close(hinge_single_loss(D, G, x, z, lam=2.0), expected)


def sgd(ps, lr):
    return torch.optim.SGD(ps, lr=lr)


def adam(ps, lr):
    return torch.optim.Adam(ps, lr=lr, betas=(0.5, 0.999))


def one_step(method, make, lam=1.0, seed=0):
    G, D, x, z = nets(seed)
    GANTrainer(G, D, method, make, lr=0.1, lam=lam).step(x, z)
    return [p.detach() for p in D.parameters()], [p.detach() for p in G.parameters()]


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_single_equals_two_optimizer_simultaneous_under_sgd(lam):
    """SGD: one optimizer, loss with lam  ==  two optimizers, G's lr = lam * D's lr."""
    d1, g1 = one_step("single", sgd, lam)
    d2, g2 = one_step("simultaneous", sgd, lam)
    for a, b in zip(d1 + g1, d2 + g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_single_equals_simultaneous_under_adam_at_lam_one():
    d1, g1 = one_step("single", adam)
    d2, g2 = one_step("simultaneous", adam)
    # Equal up to rounding of the gradients (different batch layouts sum in different orders).
    # Where a gradient is 0 in exact arithmetic (D's output bias when every hinge is active:
    # 10/10 - 7/7), Adam's first step lr*g/(|g| + 1e-8) turns ~1e-17 of noise into ~1e-9.
    for a, b in zip(d1 + g1, d2 + g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-8)


def test_alternating_first_d_step_agrees_g_step_does_not():
    d1, g1 = one_step("single", sgd)
    d3, g3 = one_step("alternating", sgd)
    for a, b in zip(d1, d3):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(g1, g3))   # G saw the updated D


def test_alternating_leaves_d_trainable_and_matches_manual_loop():
    G, D, x, z = nets(2)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    GANTrainer(G, D, "alternating", sgd, lr=0.05).step(x, z)
    assert all(p.requires_grad for p in D.parameters())
    # Manual 1:1 loop
    od, og = sgd(D2.parameters(), 0.05), sgd(G2.parameters(), 0.05)
    od.zero_grad()
    hinge_d_loss(D2(x).reshape(-1), D2(G2(z).detach()).reshape(-1)).backward()
    od.step()
    og.zero_grad()
    hinge_g_loss(D2(G2(z)).reshape(-1)).backward()
    og.step()
    for a, b in zip(list(D.parameters()) + list(G.parameters()), list(D2.parameters()) + list(G2.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_adam_makes_lam_nearly_inert_sgd_does_not():
    """Adam's first step is lr * g/(|g| + eps): the scale lam cancels except where |g| ~ eps.
    SGD's G step is proportional to lam."""
    G0 = [p.detach().clone() for p in nets()[0].parameters()]

    def g_update(make, lam):
        _, g = one_step("single", make, lam=lam)
        return torch.cat([(a - b).flatten() for a, b in zip(g, G0)])

    a1, a10 = g_update(adam, 1.0), g_update(adam, 10.0)
    s1, s10 = g_update(sgd, 1.0), g_update(sgd, 10.0)
    assert (a10 - a1).norm() / a1.norm() < 0.01
    torch.testing.assert_close(s10, 10 * s1, rtol=1e-10, atol=1e-14)


def test_dirac_gan_simultaneous_spirals_out_alternating_stays_bounded():
    """SGD on the bilinear region: simultaneous multiplies the radius by sqrt(1 + lr^2)
    per step; alternating is area-preserving (det = 1) and stays bounded."""
    lr, steps = 0.1, 50
    sim = dirac_trajectory("simultaneous", steps, lr, theta0=0.3, psi0=0.3)
    single = dirac_trajectory("single", steps, lr, theta0=0.3, psi0=0.3)
    alt = dirac_trajectory("alternating", steps, lr, theta0=0.3, psi0=0.3)
    torch.testing.assert_close(sim, single)
    r = sim.norm(dim=1)
    # |theta * psi| < 1 throughout, so the hinge is in its linear part and the rate is exact.
    assert (sim[:, 0] * sim[:, 1]).abs().max() < 1
    torch.testing.assert_close(r[1:] / r[:-1], torch.full((steps,), (1 + lr**2) ** 0.5, dtype=torch.float64))
    assert alt.norm(dim=1).max() < 1.1 * alt[0].norm()


def test_bad_method_and_lam():
    G, D, _, _ = nets()
    with pytest.raises(ValueError, match="unknown method 'both'"):
        GANTrainer(G, D, "both", sgd, 0.1)
    with pytest.raises(ValueError, match="invalid lam=0"):
        GANTrainer(G, D, "single", sgd, 0.1, lam=0)


def test_gradient_reversal_exact_only_for_one_min_max_objective():
    G, D, x, z = nets(3)
    w = reversed_vs_g_step(D, G, x, z, "wgan")
    assert w["cosine"] == pytest.approx(1.0, abs=1e-12) and w["norm_ratio"] == pytest.approx(1.0, abs=1e-12)
    # Hinge: equal while every fake has D(G(z)) < 1 (the hinge is active), as here at init.
    with torch.no_grad():
        assert (D(G(z)) < 1).all()
    h = reversed_vs_g_step(D, G, x, z, "hinge")
    assert h["cosine"] == pytest.approx(1.0, abs=1e-12)
    # LSGAN: -grad (D-1)^2 = 2(1-D) grad D, but grad D^2 = 2 D grad D: per-sample weights
    # (1-D) instead of D, so a different scale (and sign, where D > 1 or D < 0).
    ls = reversed_vs_g_step(D, G, x, z, "lsgan")
    assert abs(ls["norm_ratio"] - 1) > 0.5
    # Where D(G(z)) > 1 for every fake, the weights (1 - D) < 0 < D: the shortcut points G
    # the opposite way (cosine < 0).
    with torch.no_grad():
        D.net[-1].bias += 5.0
        assert (D(G(z)) > 1).all()
    assert reversed_vs_g_step(D, G, x, z, "lsgan")["cosine"] < -0.9
    # ... while hinge's shortcut then gives no gradient at all (the hinge is flat there).
    assert reversed_vs_g_step(D, G, x, z, "hinge")["norm_ratio"] == 0.0


@pytest.mark.parametrize("method", ["single", "alternating", "simultaneous"])
def test_ensemble_member_trains_exactly_like_the_model_alone(method):
    """Member s of a batched ensemble follows GANTrainer on (G_s, D_s) with the same data (float64)."""
    from kexue.gan import EnsembleGANTrainer, EnsembleMLP, ensemble_pair, gan_adam
    torch.manual_seed(0)
    S, B, steps, hidden = 3, 16, 15, 8
    G, D = ensemble_pair(S, hidden, seeds=[11, 12, 13])
    G, D = G.double(), D.double()
    # Stand-alone copies of each member, as the ordinary nn.Linear models of the chapter.
    alone = []
    for s in range(S):
        g, d = MLPGenerator(2, hidden).double(), MLPDiscriminator(2, hidden).double()
        with torch.no_grad():
            for lin, w, b in zip([m for m in g.modules() if isinstance(m, nn.Linear)], G.weights, G.biases):
                lin.weight.copy_(w[s].T), lin.bias.copy_(b[s, 0])
            for lin, w, b in zip([m for m in d.modules() if isinstance(m, nn.Linear)], D.weights, D.biases):
                lin.weight.copy_(w[s].T), lin.bias.copy_(b[s, 0])
        alone.append(GANTrainer(g, d, method, gan_adam(), lr=1e-2, lam=0.7))
    ens = EnsembleGANTrainer(G, D, method, gan_adam(), lr=1e-2, lam=0.7)
    gen = torch.Generator().manual_seed(5)
    for _ in range(steps):
        x = torch.randn(S, B, 2, generator=gen, dtype=torch.float64)
        z = torch.randn(S, B, 2, generator=gen, dtype=torch.float64)
        ens.step(x, z)
        for s in range(S):
            alone[s].step(x[s], z[s])
    for s in range(S):
        restacked = EnsembleMLP.stack([alone[s].G.net], "relu")
        for a, b in zip(restacked.weights, G.weights):
            assert torch.allclose(a[0], b[s], rtol=0, atol=1e-12)
    # Members started from different seeds and stayed different.
    assert not torch.allclose(G.weights[0][0], G.weights[0][1])


def test_ensemble_pair_initialises_each_member_from_its_own_seed():
    from kexue.gan import ensemble_pair
    g1, d1 = ensemble_pair(2, 8, seeds=[3, 4])
    g2, d2 = ensemble_pair(3, 8, seeds=[9, 4, 3])
    assert torch.equal(g1.weights[0][0], g2.weights[0][2]) and torch.equal(d1.weights[2][1], d2.weights[2][1])
    with pytest.raises(ValueError, match="2 members, 3 seeds"):
        ensemble_pair(2, 8, seeds=[1, 2, 3])


# --- learning-rate schedule, divergence bookkeeping and the chapter's verdict rules ---

def test_lr_factor_is_one_then_geometric_to_a_tenth():
    from kexue.gan import lr_factor
    steps, frac = 1000, 0.3
    # Independent: decay starts after 700 steps; f = 0.1 ** ((s - 700) / 300) from there.
    for s, want in [(1, 1.0), (700, 1.0), (701, 0.1 ** (1 / 300)), (850, 0.1 ** 0.5), (1000, 0.1)]:
        assert lr_factor(s, steps, frac) == pytest.approx(want, rel=1e-12)
    assert all(lr_factor(s, steps, 0.0) == 1.0 for s in (1, 500, 1000))
    with pytest.raises(ValueError, match="decay_frac=1.5"):
        lr_factor(1, 10, 1.5)


def _tiny_ensemble(method, S=2, hidden=4, seeds=(1, 2)):
    from kexue.gan import EnsembleGANTrainer, ensemble_pair
    G, D = ensemble_pair(S, hidden, list(seeds))
    return EnsembleGANTrainer(G, D, method, sgd, lr=0.05, lam=1.0)


@pytest.mark.parametrize("method", ["single", "alternating"])
def test_fit_ensemble_decays_every_optimizer_and_restores_it(method):
    from kexue.gan import fit_ensemble
    from kexue.toy2d import toy_dataset
    steps, frac = 20, 0.5
    tr = _tiny_ensemble(method)
    seen = []

    def record(step):
        seen.append((step, [g["lr"] for o in tr.optimizers for g in o.param_groups]))
    fit_ensemble(tr, *toy_dataset("ring"), steps, 8, torch.Generator().manual_seed(0), lr_decay_frac=frac,
                 evaluate=record, eval_every=1)
    assert [s for s, _ in seen] == list(range(1, steps + 1))
    for step, lrs in seen:
        # Written out: constant for the first 10 steps, then 0.05 * 0.1 ** ((step - 10) / 10).
        want = 0.05 * (0.1 ** ((step - 10) / 10) if step > 10 else 1.0)
        assert lrs == pytest.approx([want] * len(lrs), rel=1e-12)
    assert all(g["lr"] == 0.05 for o in tr.optimizers for g in o.param_groups)


def test_fit_ensemble_without_decay_is_the_plain_loop():
    """lr_decay_frac=0 (the default) is exactly trainer.step on the same stream (backward compatible)."""
    from kexue.gan import fit_ensemble
    from kexue.toy2d import sample_mixture, toy_dataset
    centres, std = toy_dataset("grid")
    a, b = _tiny_ensemble("alternating"), _tiny_ensemble("alternating")
    fit_ensemble(a, centres, std, 7, 8, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    for _ in range(7):
        x = sample_mixture(centres, std, 2 * 8, g).reshape(2, 8, 2)
        b.step(x, torch.randn(2, 8, 2, generator=g))
    for p, q in zip(a.G.parameters(), b.G.parameters()):
        assert torch.equal(p, q)


def test_fit_ensemble_reports_the_diverged_member_and_leaves_the_others_alone():
    from kexue.gan import fit_ensemble
    from kexue.toy2d import toy_dataset
    centres, std = toy_dataset("ring")
    clean, broken = _tiny_ensemble("single", 3, seeds=(1, 2, 3)), _tiny_ensemble("single", 3, seeds=(1, 2, 3))
    with torch.no_grad():
        broken.D.weights[0][1].fill_(float("inf"))          # member 1 diverges at its first update
    d_clean = fit_ensemble(clean, centres, std, 5, 8, torch.Generator().manual_seed(0))
    d_broken = fit_ensemble(broken, centres, std, 5, 8, torch.Generator().manual_seed(0))
    assert d_clean.tolist() == [0, 0, 0] and d_broken.tolist() == [0, 1, 0]
    for p, q in zip(clean.G.parameters(), broken.G.parameters()):
        assert torch.equal(p[[0, 2]], q[[0, 2]])


def test_dirac_rule_on_the_closed_form_growth():
    """SGD, hinge in its linear part: simultaneous (= single) has radius r0 (1 + lr^2)^(n/2) exactly;
    alternating stays near r0. The rule sees them apart; equal distances are close."""
    from kexue.gan import dirac_rule
    lr, n = 0.1, 200
    single = dirac_trajectory("single", n, lr, theta0=0.1, psi0=0.1)
    alt = dirac_trajectory("alternating", n, lr, theta0=0.1, psi0=0.1)
    r0 = 0.1 * 2 ** 0.5
    assert single[-1].norm().item() == pytest.approx(r0 * (1 + lr**2) ** (n / 2), rel=1e-9)
    v = dirac_rule(single[-1].norm().item(), alt[-1].norm().item(), close=1.25, apart=1.5)
    assert v.verdict == "contradicted" and "apart" in v.evidence
    assert dirac_rule(1.0, 1.2, 1.25, 1.5).verdict == "supported"
    assert dirac_rule(1.2, 1.0, 1.25, 1.5).verdict == "supported"          # symmetric
    assert dirac_rule(1.0, 1.4, 1.25, 1.5).verdict == "inconclusive at this scale"
    with pytest.raises(ValueError, match="1 < close < apart"):
        dirac_rule(1.0, 1.0, 1.5, 1.25)


def test_lr_ratio_rule_on_measured_one_step_ratios():
    from kexue.gan import lr_ratio_rule
    G0 = [p.detach().clone() for p in nets()[0].parameters()]

    def g_norm(make, lam):
        _, g = one_step("single", make, lam=lam)
        return torch.cat([(a - b).flatten() for a, b in zip(g, G0)]).norm().item()
    for make, want in ((sgd, "supported"), (adam, "contradicted")):
        ratios = {lam: g_norm(make, lam) / g_norm(make, 1.0) for lam in (0.25, 4.0)}
        assert lr_ratio_rule(ratios, tol=0.05).verdict == want
    assert "inert" in lr_ratio_rule({0.25: 0.99, 4.0: 1.01}, 0.05).evidence
    assert "not proportional" in lr_ratio_rule({0.25: 0.5, 4.0: 2.0}, 0.05).evidence


def test_gradient_reversal_rule_on_measured_gradients():
    from kexue.gan import gradient_reversal_rule
    G, D, x, z = nets(3)
    rows = []
    for shift in (0.0, 5.0):
        with torch.no_grad():
            D.net[-1].bias += shift
        rows += [{"loss": loss, **reversed_vs_g_step(D, G, x, z, loss)} for loss in ("wgan", "hinge", "lsgan")]
    assert gradient_reversal_rule(rows).verdict == "supported"
    # If hinge's shortcut were exact in every condition, the reader's claim would fail.
    hinge_exact = [r if r["loss"] != "hinge" else {**r, "cosine": 1.0, "norm_ratio": 1.0} for r in rows]
    assert gradient_reversal_rule(hinge_exact).verdict == "contradicted"
    # ... and so if the min-max loss were not exact.
    assert gradient_reversal_rule([{**r, "norm_ratio": 0.5} if r["loss"] == "wgan" else r
                                   for r in rows]).verdict == "contradicted"


# --- chapter 01's Fashion-MNIST training stage ---

def _tiny_fashion_cfg(**kw):
    cfg = {"seed": 0, "lam": 1.0, "beta1": 0.5, "beta2": 0.999, "image_steps": 4, "image_batch": 8, "image_width": 2,
           "image_z_dim": 8, "image_lr": 2e-3, "image_lr_decay_frac": 0.5, "image_seeds": 2, "image_eval_every": 2,
           "image_eval_samples": 60, "image_simultaneous": False, "image_workers": 1}
    return {**cfg, **kw}


def test_fashion_seeds_split_chapter_and_rerun():
    from kexue.gan import SEED_OFFSET, fashion_seeds
    assert fashion_seeds(0, 3) == [0, 1, 2]
    assert fashion_seeds(SEED_OFFSET, 3) == [1000, 1001, 1002]
    assert not set(fashion_seeds(0, 8)) & set(fashion_seeds(SEED_OFFSET, 8))


def test_train_fashion_pairs_arms_and_does_not_depend_on_workers(tmp_path):
    from kexue.gan import FASHION_KEEP, load_fashion_runs, save_fashion_runs, train_fashion
    one = train_fashion(_tiny_fashion_cfg(), log=lambda m: None)
    two = train_fashion(_tiny_fashion_cfg(image_workers=2), log=lambda m: None)
    key = lambda r: (r["method"], r["seed"])                                           # noqa: E731
    assert sorted(map(key, one["runs"])) == sorted((m, s) for m in ("single", "alternating") for s in (0, 1, 1000, 1001))
    strip = lambda runs: {key(r): r["history"] for r in runs}                          # noqa: E731
    assert strip(one["runs"]) == strip(two["runs"])                                   # bit for bit, one thread per run
    by = strip(one["runs"])
    for s in (0, 1, 1000, 1001):
        # Paired: the same initial generator and evaluation noise, so the arms start at the same FD.
        assert by[("single", s)][0] == by[("alternating", s)][0]
        assert [h["step"] for h in by[("single", s)]] == [0, 2, 4]
    assert by[("single", 0)][0]["fd"] != by[("single", 1)][0]["fd"]                  # seeds differ
    assert by[("single", 0)][-1]["fd"] != by[("alternating", 0)][-1]["fd"]            # methods differ after training
    assert one["samples"]["single_0"].shape == (min(FASHION_KEEP, 60), 28, 28)
    assert one["samples"]["single_0"].dtype == np.uint8

    folder = save_fashion_runs(one, tmp_path / "runs")
    cfg, runs, samples = load_fashion_runs(folder)
    assert cfg["seeds"] == [0, 1, 1000, 1001] and cfg["image_steps"] == 4
    assert strip(runs) == strip(one["runs"])
    np.testing.assert_array_equal(samples["alternating_1001"], one["samples"]["alternating_1001"])
    # A changed file is refused, naming it; a missing folder says how to make it.
    (folder / "runs.json").write_text((folder / "runs.json").read_text().replace('"fd": ', '"fd":  ', 1))
    from kexue.data import DataError
    with pytest.raises(DataError, match="runs.json: SHA-256 differs"):
        load_fashion_runs(folder)
    with pytest.raises(DataError, match="dvc repro 01_single_loss_gan_train"):
        load_fashion_runs(tmp_path / "nothing")


def test_fashion_run_decays_the_learning_rate(monkeypatch):
    """The run sets every optimizer's lr to lr0 * lr_factor at each update: record what Adam sees."""
    import kexue.gan as G
    from kexue.data import load_fashion_mnist
    from kexue.metrics import extract, load_classifier
    seen = []
    real_step = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    x_test = load_fashion_mnist(train=False)[0][:60] * 2 - 1
    clf = load_classifier()
    feats, _ = extract(clf, x_test)
    cfg = _tiny_fashion_cfg(image_steps=10)
    G.fashion_run("single", 0, cfg, x_test, feats, clf)
    expected = [2e-3 * G.lr_factor(t, 10, 0.5) for t in range(1, 11)]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    assert seen[-1] == pytest.approx(2e-4) and seen[4] == pytest.approx(2e-3)
