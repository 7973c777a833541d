"""kexue.optim: AdaX against independent float64 computations (chapter 04)."""
import copy
import math
import re

import pytest
import torch

from kexue.optim import (AdaX, EMAAdam, adax_log_c, beta2_hat_adafactor, beta2_hat_adam,
                         beta2_hat_adax, recovery_steps, scale_shift_quadratic)


def reference_adax(p0, grads, lr, b1, b2, eps, wd=0.0, decoupled=False):
    """The DESIGN.md contract, literally, in float64: raw v_t, no rewriting."""
    p = p0.clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    traj = []
    for t, g_fn in enumerate(grads, start=1):
        g = g_fn(p)
        if wd and decoupled:
            p = p - lr * wd * p
        elif wd:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = (1 + b2) * v + b2 * g * g
        p = p - lr * math.sqrt((1 + b2) ** t - 1) * m / (v.sqrt() + eps)
        traj.append(p.clone())
    return traj


def grad_field(t):
    return lambda p: torch.sin(3.0 * p + t) + 0.05 * t * p / (1 + t)


@pytest.mark.parametrize("foreach", [True, False, None])
@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.1, False), (0.1, True)])
@pytest.mark.parametrize("eps", [1e-12, 1e-3])
def test_adax_matches_float64_reference_over_hundreds_of_steps(wd, decoupled, eps, foreach):
    torch.manual_seed(0)
    p0 = [torch.randn(7, 5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    grads = [grad_field(t) for t in range(400)]
    refs = [reference_adax(q, grads, lr=1e-2, b1=0.9, b2=1e-3, eps=eps, wd=wd, decoupled=decoupled) for q in p0]
    ps = [torch.nn.Parameter(q.clone()) for q in p0]
    opt = AdaX(ps, lr=1e-2, betas=(0.9, 1e-3), eps=eps, weight_decay=wd, decoupled_weight_decay=decoupled,
               foreach=foreach)
    for t, g_fn in enumerate(grads):
        for p in ps:
            p.grad = g_fn(p.detach())
        opt.step()
        for p, ref in zip(ps, refs):
            torch.testing.assert_close(p.detach(), ref[t], rtol=1e-10, atol=1e-12)


def test_foreach_and_per_tensor_paths_agree_bitwise_in_float32():
    torch.manual_seed(4)
    shapes = [(16, 8), (8,), (3, 3, 2)]
    runs = []
    for foreach in (True, False, None):
        ps = [torch.nn.Parameter(torch.ones(s)) for s in shapes]
        opt = AdaX(ps, lr=1e-2, weight_decay=1e-2, foreach=foreach)
        g = torch.Generator().manual_seed(0)
        for _ in range(50):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        runs.append([p.detach() for p in ps])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_cpu_chunks_group_small_tensors_and_isolate_large_ones():
    ps = [torch.nn.Parameter(torch.zeros(n)) for n in (10, 20, AdaX.CPU_CHUNK, 5, AdaX.CPU_CHUNK - 5, 1)]
    opt = AdaX(ps)
    sizes = [[p.numel() for p in c] for c in opt._chunks(ps, None, torch.device("cpu"))]
    assert sizes == [[10, 20], [AdaX.CPU_CHUNK], [5, AdaX.CPU_CHUNK - 5], [1]]
    assert len(opt._chunks(ps, True, torch.device("cpu"))) == 1
    assert len(opt._chunks(ps, False, torch.device("cpu"))) == 6


def test_weight_decay_modes_differ_and_leave_grad_untouched():
    p0 = torch.ones(3, dtype=torch.float64)
    out = {}
    for decoupled in (False, True):
        p = torch.nn.Parameter(p0.clone())
        opt = AdaX([p], lr=0.1, weight_decay=0.5, decoupled_weight_decay=decoupled)
        g = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
        p.grad = g.clone()
        opt.step()
        assert torch.equal(p.grad, g)            # coupled decay must not write into p.grad
        out[decoupled] = p.detach().clone()
    # First step: m = (1-b1) g, v_hat = g^2, so p moves by lr * 0.1 * sign(g) = 0.01 sign(g).
    # Coupled: g = g + 0.5 p = [1.5, -0.5, 0.5].
    # Decoupled: p first shrinks by (1 - lr*wd) = 0.95; g = [1, -1, 0] (0 stays 0).
    torch.testing.assert_close(out[False], torch.tensor([0.99, 1.01, 0.99], dtype=torch.float64))
    torch.testing.assert_close(out[True], torch.tensor([0.94, 0.96, 0.95], dtype=torch.float64))


@pytest.mark.parametrize("b2", [1e-4, 1e-2])
def test_equals_ema_form_with_adax_schedule_as_eps_vanishes(b2):
    """The article's equivalence: AdaX = EMA of g^2 with beta2_hat_t = 1 - b2/((1+b2)^t - 1)."""
    torch.manual_seed(1)
    p0 = torch.randn(20, dtype=torch.float64)
    pa, pe = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    adax = AdaX([pa], lr=1e-2, betas=(0.9, b2), eps=0.0)
    ema = EMAAdam([pe], lr=1e-2, beta1=0.9, beta2_hat=lambda t: beta2_hat_adax(t, b2), eps=0.0,
                  momentum_bias_correction=False)
    for t in range(300):
        g = grad_field(t)(pa.detach())
        pa.grad, pe.grad = g.clone(), g.clone()
        adax.step()
        ema.step()
    torch.testing.assert_close(pa.detach(), pe.detach(), rtol=1e-10, atol=1e-12)


def test_ema_form_with_adam_schedule_is_torch_adam():
    torch.manual_seed(2)
    p0 = torch.randn(30, dtype=torch.float64)
    pa, pe = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    adam = torch.optim.Adam([pa], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    ema = EMAAdam([pe], lr=1e-2, beta1=0.9, beta2_hat=lambda t: beta2_hat_adam(t, 0.999), eps=1e-8)
    for t in range(300):
        g = grad_field(t)(pa.detach())
        pa.grad, pe.grad = g.clone(), g.clone()
        adam.step()
        ema.step()
    torch.testing.assert_close(pa.detach(), pe.detach(), rtol=1e-9, atol=1e-11)


def test_schedule_limits():
    for f in (lambda t: beta2_hat_adam(t, 0.999), lambda t: beta2_hat_adax(t, 1e-4),
              lambda t: beta2_hat_adafactor(t, 0.8)):
        assert f(1) == pytest.approx(0.0, abs=1e-12)
    assert beta2_hat_adam(1e9, 0.999) == pytest.approx(0.999, abs=1e-12)
    assert beta2_hat_adax(1e8, 1e-4) == 1.0
    assert beta2_hat_adafactor(1e12, 0.8) == pytest.approx(1.0, abs=1e-9)
    # Monotone from 0 to the limit.
    ts = [1, 2, 5, 10, 100, 1e4, 1e5]
    for f in (beta2_hat_adam, beta2_hat_adax, beta2_hat_adafactor):
        vals = [f(t) for t in ts]
        assert all(a <= b for a, b in zip(vals, vals[1:]))


def test_log_c_matches_direct_formula_and_survives_overflow():
    for t in (1, 2, 10, 1000, 123456):
        for b2 in (1e-4, 0.01, 0.3):
            try:
                direct = (1 + b2) ** t - 1
            except OverflowError:
                continue
            if math.isfinite(direct):
                assert adax_log_c(t, b2) == pytest.approx(math.log(direct), rel=1e-12)
    big = adax_log_c(1e8, 1e-4)
    assert math.isfinite(big) and big == pytest.approx(1e8 * math.log1p(1e-4), rel=1e-12)


def test_adax_schedule_early_is_running_mean():
    """For t << 1/b2, c_t ~ b2 t, so 1 - beta2_hat ~ 1/t (the derivation's remark)."""
    for t in (2, 10, 100):
        assert (1 - beta2_hat_adax(t, 1e-6)) * t == pytest.approx(1.0, rel=1e-3)


def test_state_dict_round_trip_resumes_identically():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x, y = torch.randn(64, 4), torch.randn(64, 1)

    def train(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    opt = AdaX(model.parameters(), lr=1e-2, weight_decay=1e-3, decoupled_weight_decay=True)
    train(model, opt, 20)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())   # state_dict() holds references to live state
    train(model, opt, 30)
    expected = [p.detach().clone() for p in model.parameters()]

    model2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model2.load_state_dict(saved_model)
    opt2 = AdaX(model2.parameters(), lr=1e-2, weight_decay=1e-3, decoupled_weight_decay=True)
    opt2.load_state_dict(saved_opt)
    assert opt2.state_dict()["state"][0]["step"] == 20
    train(model2, opt2, 30)
    for a, b in zip(expected, model2.parameters()):
        assert torch.equal(a, b.detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_step_counts_stay_finite(dtype):
    p = torch.nn.Parameter(torch.ones(5, dtype=dtype))
    never = torch.nn.Parameter(torch.ones(2, dtype=dtype))   # gradient always zero
    opt = AdaX([p, never], lr=1e-3)
    for t in (10**8 - 1, 10**8, 10**8 + 1):
        for q in (p, never):
            q.grad = torch.zeros_like(q) if q is never else torch.full_like(q, 0.3)
        if t == 10**8 - 1:
            opt.step()
            for q in (p, never):
                opt.state[q]["step"] = t
        else:
            opt.step()
    assert opt.state[p]["step"] == 10**8 + 1
    assert torch.isfinite(p).all() and torch.isfinite(never).all()
    assert torch.equal(never.detach(), torch.ones(2, dtype=dtype))
    # With a constant gradient, v_hat = g^2 exactly and the step is lr * m / |g|.
    torch.testing.assert_close(opt.state[p]["exp_avg_sq_hat"], torch.full_like(p, 0.09))


@pytest.mark.parametrize("kwargs,name", [
    ({"lr": -1.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"betas": (1.0, 1e-4)}, "betas[0]"),
    ({"betas": (0.9, 0.0)}, "betas[1]"), ({"betas": (0.9, -1e-4)}, "betas[1]"),
    ({"eps": -1e-8}, "eps"), ({"weight_decay": -0.1}, "weight_decay"), ({"betas": (0.9,)}, "betas"),
])
def test_bad_hyperparameters_raise_naming_the_value(kwargs, name):
    with pytest.raises(ValueError, match=rf"invalid {re.escape(name)}="):
        AdaX([torch.nn.Parameter(torch.ones(1))], **kwargs)


def test_params_without_grad_are_skipped_and_steps_counted_per_parameter():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = AdaX([a, b], lr=0.1)
    a.grad = torch.ones(2)
    opt.step()
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    opt.step()
    assert opt.state[a]["step"] == 2 and opt.state[b]["step"] == 1
    # First step of b: m = 0.1 g, v_hat = g^2 -> moves by lr * 0.1.
    torch.testing.assert_close(b.detach(), torch.full((2,), 1 - 0.1 * 0.1))


def test_recovery_steps_on_hand_built_series():
    u = torch.cat([torch.ones(100), torch.full((30,), 10.0), torch.ones(100)])
    # Window mean falls within 2x of 1 once at most 5 of its 50 values are 10 (mean <= 1.9).
    assert recovery_steps(u, 100, window=50) == 25
    assert recovery_steps(torch.cat([torch.ones(100), torch.full((100,), 10.0)]), 100) == -1


def test_scale_shift_quadratic_is_scale_free_for_sign_like_updates():
    """Adam with beta1 = beta2 = 0 is sign descent: its step does not depend on the gradient
    scale, so the step size is the same on both sides of the switch."""
    r = scale_shift_quadratic(lambda ps: torch.optim.Adam(ps, lr=1e-3, betas=(0.0, 0.0)), 400, 100.0)
    u = r["update_norm"]
    assert u[150:200].mean() / u[200:250].mean() == pytest.approx(1.0, rel=1e-6)
    assert recovery_steps(u, 200) == 0



# --- batched ensembles (notebook section 6) ---

from kexue.optim import (BatchedAdaptive, MemberSpec, adafactor_schedule, cosine_lr, ensemble_from_seeds,  # noqa: E402
                         fit_members, member_eval, scale_shift_quadratic_batch)
from kexue.verdicts import CONTRADICTED, SUPPORTED, identity_rule  # noqa: E402

SPECS = {   # member spec -> the stand-alone optimizer it must reproduce
    "Adam": (MemberSpec("adam", 3e-2, weight_decay=1e-2),
             lambda ps, lr: torch.optim.Adam(ps, lr=lr, weight_decay=1e-2, foreach=False)),
    "AdamW": (MemberSpec("adam", 1e-2, weight_decay=0.1, decoupled=True),
              lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=0.1, foreach=False)),
    "AdaX": (MemberSpec("adax", 2e-2, weight_decay=1e-2),
             lambda ps, lr: AdaX(ps, lr=lr, betas=(0.9, 1e-3), weight_decay=1e-2)),
    "AdaX-W": (MemberSpec("adax", 5e-3, weight_decay=0.1, decoupled=True),
               lambda ps, lr: AdaX(ps, lr=lr, betas=(0.9, 1e-3), weight_decay=0.1, decoupled_weight_decay=True)),
    "AdaFactor schedule": (MemberSpec("adafactor", 1e-2, eps=1e-12),
                           lambda ps, lr: adafactor_schedule(ps, lr=lr, c=0.7)),
    "AdaX + m correction": (MemberSpec("adax", 1e-2, momentum_correction=True, eps=0.0),
                            lambda ps, lr: EMAAdam(ps, lr=lr, eps=0.0, momentum_bias_correction=True,
                                                   beta2_hat=lambda t: beta2_hat_adax(t, 1e-3))),
    "SGD+momentum": (MemberSpec("sgd", 5e-2, weight_decay=1e-2),
                     lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=1e-2, foreach=False)),
}


def test_every_ensemble_member_follows_its_stand_alone_optimizer_float64():
    """Members with different optimizers, learning rates and seeds in one batched model, trained
    by `fit_members` with a cosine schedule, against each model trained alone on the same batches."""
    torch.manual_seed(0)
    x = torch.randn(200, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (200,))
    dims, steps, batch = [6, 5, 3], 120, 16
    names = list(SPECS)
    member_seed = [k % 2 for k in range(len(names))]          # two init seeds, two data streams
    model = ensemble_from_seeds(dims, [10 + s for s in member_seed], dtype=torch.float64)
    start = [[w[k].clone() for w in model.weights] + [b[k].clone() for b in model.biases] for k in range(len(names))]
    opt = BatchedAdaptive(list(model.parameters()), [SPECS[n][0] for n in names], beta1=0.9, beta2_adam=0.999,
                          beta2_adax=1e-3, adafactor_c=0.7)
    sched = lambda s: cosine_lr(s, steps, final=0.1)   # noqa: E731
    fit_members(model, opt, x, y, steps, batch, [torch.Generator().manual_seed(s) for s in (0, 1)], member_seed, sched)
    for k, name in enumerate(names):
        spec, make = SPECS[name]
        w1, w2, b1, b2 = (torch.nn.Parameter(t.clone()) for t in start[k])
        alone = make([w1, w2, b1, b2], spec.lr)
        g = torch.Generator().manual_seed(member_seed[k])      # the member's own data stream
        for s in range(1, steps + 1):
            idx = torch.randint(len(x), (batch,), generator=g)
            logits = torch.relu(x[idx] @ w1 + b1[0]) @ w2 + b2[0]
            for p in (w1, w2, b1, b2):
                p.grad = None
            torch.nn.functional.cross_entropy(logits, y[idx]).backward()
            for group in alone.param_groups:
                group["lr"] = spec.lr * sched(s)
            alone.step()
        for got, want in zip([model.weights[0][k], model.weights[1][k], model.biases[0][k], model.biases[1][k]],
                             (w1, w2, b1, b2)):
            torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-9, atol=1e-11, msg=name)
    # Members that share a seed started from the same weights.
    assert torch.equal(start[0][0], start[2][0]) and not torch.equal(start[0][0], start[1][0])


def test_momentum_correction_free_adax_by_hand():
    """Constant gradient g: v_hat = g^2 exactly, m_t = (1 - b1^t) g. Without the correction
    (AdaX) the step is lr (1 - b1^t) sign(g); with it, lr sign(g)."""
    g, lr, b1 = torch.tensor([[0.5, -2.0]], dtype=torch.float64), 0.01, 0.9
    for corrected in (False, True):
        p = torch.nn.Parameter(torch.zeros(1, 2, dtype=torch.float64))
        opt = BatchedAdaptive([p], [MemberSpec("adax", lr, momentum_correction=corrected, eps=0.0)], beta1=b1)
        expected = torch.zeros(1, 2, dtype=torch.float64)
        for t in range(1, 6):
            p.grad = g.clone()
            opt.step()
            expected -= lr * (1.0 if corrected else 1 - b1 ** t) * torch.sign(g)
            torch.testing.assert_close(opt.exp_avg_sq_hat[0], g * g, rtol=1e-14, atol=0)
            torch.testing.assert_close(p.detach(), expected, rtol=1e-13, atol=1e-15)


def test_per_member_lr_scales_only_that_member():
    p = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
    opt = BatchedAdaptive([p], [MemberSpec("adam", lr) for lr in (1e-3, 2e-3, 0.0)])
    p.grad = torch.ones(3, 4, dtype=torch.float64)
    opt.step(lr_scale=0.5)
    # Adam's first step is lr * g / (|g| + eps) per element.
    torch.testing.assert_close(p.detach()[:, 0], -0.5 * torch.tensor([1e-3, 2e-3, 0.0], dtype=torch.float64)
                               / (1 + 1e-8), rtol=1e-12, atol=0)


@pytest.mark.parametrize("bad,match", [
    (lambda: MemberSpec("lion", 1e-3), r"invalid kind='lion'"),
    (lambda: MemberSpec("sgd", 1e-3, eps=1e-8), r"kind='sgd' takes no .*eps=1e-08"),
    (lambda: MemberSpec("adax", -1.0), r"invalid lr=-1\.0"),
    (lambda: MemberSpec("adax", 1e-3, weight_decay=float("nan")), r"invalid weight_decay=nan"),
    (lambda: BatchedAdaptive([torch.nn.Parameter(torch.ones(2, 3))], [MemberSpec("adax", 1e-3)] * 3),
     r"shape \(2, 3\): its first dimension must be the 3 members"),
    (lambda: BatchedAdaptive([torch.nn.Parameter(torch.ones(1, 3))], [MemberSpec("adax", 1e-3)], beta1=1.0),
     r"invalid beta1=1\.0"),
    (lambda: cosine_lr(0, 10), r"step=0 of steps=10"),
    (lambda: scale_shift_quadratic_batch(lambda ps: AdaX(ps), 10, 2.0, []), r"seeds is empty"),
    (lambda: identity_rule({"x": 0.0}, tol=0.0), r"tol=0\.0"),
])
def test_batched_bad_input_names_the_value(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_cosine_lr_endpoints_and_midpoint():
    assert cosine_lr(1, 101, final=0.01) == pytest.approx(1.0)
    assert cosine_lr(51, 101, final=0.01) == pytest.approx(0.505)
    assert cosine_lr(101, 101, final=0.01) == pytest.approx(0.01)


def test_member_eval_matches_per_member_loop():
    torch.manual_seed(5)
    model = ensemble_from_seeds([4, 6, 3], [0, 1, 2], dtype=torch.float64)
    x, y = torch.randn(50, 4, dtype=torch.float64), torch.randint(0, 3, (50,))
    acc, loss = member_eval(model, x, y, chunk=7)
    for k in range(3):
        logits = torch.relu(x @ model.weights[0][k] + model.biases[0][k]) @ model.weights[1][k] + model.biases[1][k]
        assert acc[k].item() == pytest.approx((logits.argmax(1) == y).double().mean().item())
        assert loss[k].item() == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-12)


def test_quadratic_batch_rows_equal_single_seed_runs():
    batch = scale_shift_quadratic_batch(lambda ps: AdaX(ps, lr=1e-2), 300, 10.0, [3, 7])
    for row, seed in enumerate((3, 7)):
        single = scale_shift_quadratic(lambda ps: AdaX(ps, lr=1e-2), 300, 10.0, seed=seed)
        torch.testing.assert_close(batch["update_norm"][row], single["update_norm"], rtol=1e-12, atol=1e-15)


def test_identity_rule():
    ok = identity_rule({"a": 1e-15, "b": 0.0}, tol=1e-10)
    assert ok.verdict == SUPPORTED
    bad = identity_rule({"a": 1e-15, "b": 1e-3}, tol=1e-10)
    assert (bad.verdict, bad.reason) == (CONTRADICTED, "exceeds_tolerance") and "b exceeds" in bad.evidence
    assert identity_rule({"a": float("nan")}, tol=1e-10).verdict == CONTRADICTED


# --- Reddi et al.'s counterexample (notebook section 5b) ---

from kexue.optim import reddi_counterexample  # noqa: E402


def _adam_scalar(grads, lrs, b1, b2, eps=1e-8, amsgrad=False):
    """Adam/AMSGrad on one projected scalar, written from Kingma & Ba / Reddi et al. in plain floats."""
    x, m, v, vmax, path = 0.0, 0.0, 0.0, 0.0, []
    for t, (g, a) in enumerate(zip(grads, lrs), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = max(vmax, v)
        v_hat = (vmax if amsgrad else v) / (1 - b2 ** t)
        x -= a * (m / (1 - b1 ** t)) / (math.sqrt(v_hat) + eps)
        x = min(1.0, max(-1.0, x))
        path.append(x)
    return path


@pytest.mark.parametrize("amsgrad", [False, True])
def test_reddi_online_problem_matches_a_scalar_adam_and_goes_where_the_paper_says(amsgrad):
    steps, alpha = 20000, 0.5
    make = lambda groups: torch.optim.Adam(groups, betas=(0.9, 0.99), amsgrad=amsgrad, foreach=False)  # noqa: E731
    path = reddi_counterexample(make, steps, [0], lrs=[alpha], stochastic=False)[0, 0]
    grads = [1010.0 if t % 101 == 1 else -10.0 for t in range(1, steps + 1)]
    want = _adam_scalar(grads, [alpha / math.sqrt(t) for t in range(1, steps + 1)], 0.9, 0.99, amsgrad=amsgrad)
    torch.testing.assert_close(path, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    # Reddi et al. (2018), Fig. 1: Adam is driven to the worst point x = +1, AMSGrad towards x* = -1.
    end = path[-steps // 10:].mean().item()
    assert (end < -0.9) if amsgrad else (end > 0.95), end


def test_reddi_rows_are_independent_runs():
    """Every (lr, seed) row of one batched call equals the same run made alone."""
    make = lambda groups: AdaX(groups, betas=(0.9, 1e-4))       # noqa: E731
    both = reddi_counterexample(make, 500, [3, 4], lrs=[0.2, 1.0])
    for i, a in enumerate([0.2, 1.0]):
        for j, s in enumerate([3, 4]):
            alone = reddi_counterexample(make, 500, [s], lrs=[a])[0, 0]
            torch.testing.assert_close(both[i, j], alone, rtol=0, atol=0)
    assert not torch.equal(both[0, 0], both[0, 1])               # seeds draw different streams


def test_reddi_stochastic_stream_has_the_stated_rate_and_plain_sgd_by_hand():
    steps, period = 20000, 101
    make = lambda groups: torch.optim.SGD(groups, lr=1.0)       # noqa: E731
    path = reddi_counterexample(make, steps, [7], lrs=[1e-4], period=period)[0, 0]
    # Plain projected SGD by hand: recover g_t from consecutive iterates where no clamp acted.
    prev = torch.cat([torch.zeros(1, dtype=torch.float64), path[:-1]])
    lr_t = 1e-4 / torch.arange(1, steps + 1, dtype=torch.float64).sqrt()
    free = (path.abs() < 1) & (prev.abs() < 1)
    g = ((prev - path) / lr_t)[free]
    assert torch.allclose(g.abs(), torch.where(g > 0, 1010.0, 10.0).to(g), rtol=1e-6)
    rate = (g > 0).double().mean().item()
    assert abs(rate - 1 / period) < 4 * math.sqrt((1 / period) * (1 - 1 / period) / len(g)), rate


@pytest.mark.parametrize("kw,match", [
    ({"steps": 0}, r"steps=0"), ({"lrs": [0.1, -1.0]}, r"lrs=\[0\.1, -1\.0\]"), ({"period": 1}, r"period=1"),
    ({"x0": 2.0}, r"x0=2\.0"), ({"seeds": []}, r"seeds is empty"),
])
def test_reddi_bad_input_names_the_value(kw, match):
    args = {"make_optimizer": lambda g: torch.optim.SGD(g, lr=1.0), "steps": 10, "seeds": [0]} | kw
    with pytest.raises(ValueError, match=match):
        reddi_counterexample(**args)
