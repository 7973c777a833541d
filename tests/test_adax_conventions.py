"""AdaX as a torch.optim citizen (issue 21): tensor step, validated groups, maximize, complex
parameters refused, torch.compile without recompiles, a fused path; and the default path bit for
bit what the committed reports ran (tests/adax_reference.py, the implementation before the change)."""

import pytest
import torch
import torch.nn as nn
from adax_reference import ReferenceAdaX

from kexue.optim import AdaX


def _model(seed=0):
    torch.manual_seed(seed)
    # 600*512 weights: more than CPU_CHUNK elements, so the default path's chunking is exercised.
    return nn.Sequential(nn.Linear(16, 512), nn.Tanh(), nn.Linear(512, 600), nn.Tanh(), nn.Linear(600, 3))


def _train(opt_cls, steps=25, seed=0, grad_sign=1.0, **kw):
    model = _model(seed)
    opt = opt_cls(model.parameters(), **kw)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 16, generator=g), torch.randn(32, 3, generator=g)
    for _ in range(steps):
        opt.zero_grad()
        (grad_sign * nn.functional.mse_loss(model(x), y)).backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("kw", [
    {}, {"lr": 1e-2, "weight_decay": 1e-2}, {"lr": 1e-2, "weight_decay": 1e-2, "decoupled_weight_decay": True},
    {"foreach": True}, {"foreach": False}, {"betas": (0.5, 1e-2), "eps": 1e-8},
])
def test_default_path_is_bit_identical_to_the_reference(kw):
    new, opt = _train(AdaX, **kw)
    ref, ref_opt = _train(ReferenceAdaX, **kw)
    for p, q in zip(new.parameters(), ref.parameters()):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq_hat"):
            assert torch.equal(opt.state[p][key], ref_opt.state[q][key])
        assert int(opt.state[p]["step"]) == ref_opt.state[q]["step"] == 25


def test_step_is_a_float64_tensor_and_int_steps_are_taken_over():
    p = nn.Parameter(torch.ones(3))
    opt = AdaX([p])
    p.grad = torch.ones(3)
    opt.step()
    step = opt.state[p]["step"]
    assert torch.is_tensor(step) and step.dtype == torch.float64 and step.dim() == 0 and step.item() == 1.0
    opt.state[p]["step"] = 41                       # set by hand (chapter 04 does), or an old state dict
    opt.step()
    assert torch.is_tensor(opt.state[p]["step"]) and opt.state[p]["step"].item() == 42.0


def test_add_param_group_is_validated():
    opt = AdaX([nn.Parameter(torch.ones(1))])
    with pytest.raises(ValueError, match=r"invalid lr=-1\.0: must be a finite number >= 0"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(1))], "lr": -1.0})
    with pytest.raises(ValueError, match=r"invalid betas\[1\]=0\.0"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(1))], "betas": (0.9, 0.0)})
    with pytest.raises(ValueError, match=r"invalid eps='x': must be a number"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(1))], "eps": "x"})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [nn.Parameter(torch.ones(1))], "lr": 3, "betas": [0.8, 1e-3]})
    assert opt.param_groups[1]["lr"] == 3.0 and opt.param_groups[1]["betas"] == (0.8, 1e-3)
    assert opt.param_groups[1]["eps"] == opt.defaults["eps"]
    with pytest.raises(ValueError, match="fused=True with foreach=True"):
        AdaX([nn.Parameter(torch.ones(1))], fused=True, foreach=True)


def test_complex_parameters_are_refused_with_a_clear_error():
    z = nn.Parameter(torch.ones(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"does not support complex parameters \(got a complex64 tensor of shape "
                                         r"\(3,\)\).*view_as_real"):
        AdaX([z])
    opt = AdaX([nn.Parameter(torch.ones(1))])
    with pytest.raises(ValueError, match="complex"):
        opt.add_param_group({"params": [z]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("fused", [False, True])
def test_maximize_ascends_exactly_as_minimising_the_negated_loss(fused):
    up, _ = _train(AdaX, steps=10, grad_sign=-1.0, maximize=True, fused=fused, weight_decay=1e-2)
    down, _ = _train(AdaX, steps=10, fused=fused, weight_decay=1e-2)
    for p, q in zip(up.parameters(), down.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kw", [{}, {"weight_decay": 1e-2}, {"weight_decay": 1e-2, "decoupled_weight_decay": True},
                                {"maximize": True}, {"betas": (0.0, 0.5)}])
def test_fused_path_agrees_with_the_default_to_rounding(kw):
    """Same gradient sequence (drawn, not from a loss, so rounding is not amplified by training)."""
    start = [p.detach().clone() for p in _model().parameters()]
    runs = []
    for fused in (False, True):
        ps = [nn.Parameter(p.clone()) for p in start]
        opt = AdaX(ps, lr=1e-2, fused=fused, **kw)
        g = torch.Generator().manual_seed(2)
        for t in range(60):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=g) * (1.0 if t < 30 else 10.0)
            opt.step()
        runs.append((ps, opt))
    (ref, ref_opt), (fused, opt) = runs
    for p, q, p0 in zip(fused, ref, start):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(opt.state[p]["exp_avg_sq_hat"], ref_opt.state[q]["exp_avg_sq_hat"],
                                   rtol=1e-5, atol=0.0)
        assert opt.state[p]["step"].item() == 60.0                  # the kernel leaves the real step alone
        assert (q - p0).abs().max().item() > 0.01                    # the comparison is not of unmoved weights


def test_fused_path_falls_back_where_beta2_hat_rounds_to_one():
    ps = [nn.Parameter(torch.ones(4)) for _ in range(2)]
    opts = [AdaX([ps[0]], lr=1e-3), AdaX([ps[1]], lr=1e-3, fused=True)]
    for p, opt in zip(ps, opts):
        p.grad = torch.full((4,), 0.5)
        opt.step()
        opt.state[p]["step"] = 10**6                                 # 1 - b2/c_t == 1.0 in float64
        for _ in range(3):
            p.grad = torch.full((4,), 0.5)
            opt.step()
    assert torch.isfinite(ps[1]).all() and torch.equal(ps[0], ps[1])


def test_compiled_step_compiles_once_and_matches_eager():
    import torch._dynamo
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    eager = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    eager.load_state_dict(model.state_dict())
    opt, opt_eager = AdaX(model.parameters(), lr=1e-2, weight_decay=1e-3), AdaX(eager.parameters(), lr=1e-2,
                                                                                weight_decay=1e-3)
    frames = []
    compiled = torch.compile(opt.step, backend=lambda gm, ex: frames.append(gm) or gm.forward)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    for t in range(8):
        for m, o, step in ((model, opt, compiled), (eager, opt_eager, opt_eager.step)):
            o.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            step()
        if t == 1:
            after_two = len(frames)
    assert after_two >= 1 and len(frames) == after_two          # steps 3..8 reuse what steps 1-2 compiled
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    assert int(opt.state[next(model.parameters())]["step"]) == 8
