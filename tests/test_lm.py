"""kexue.optim's section-7 testbed: the word-level n-gram language model on the KJV and its training stage (chapter 04)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kexue.optim import (BatchedAdaptive, MemberSpec, NgramLM, encode_words, kjv_word_splits, lm_arm_configs,
                         lm_eval, lm_eval_steps, lm_members, lm_selection, ngram_windows, train_lm,
                         warmup_constant_decay, word_vocabulary)


def reference_logits(model: NgramLM, member: int, x: torch.Tensor) -> torch.Tensor:
    """One member, one example at a time: look up, concatenate, relu layer, read-out."""
    rows = []
    for ctx in x:
        e = torch.cat([model.embed[member, int(t)] for t in ctx])
        h = torch.clamp(e @ model.w1[member] + model.b1[member, 0], min=0)
        rows.append(h @ model.w2[member] + model.b2[member, 0])
    return torch.stack(rows)


def test_splits_vocabulary_and_windows():
    verses = [f"And God said, Let there be light {i}." for i in range(40)]
    tokens = kjv_word_splits(verses, every=20)
    assert tokens["val"][:9] == ["and", "god", "said", ",", "let", "there", "be", "light", "0"][:9] or \
        tokens["val"][:8] == ["and", "god", "said", ",", "let", "there", "be", "light"]
    assert tokens["val"].count("\n") == 2 and tokens["test"].count("\n") == 2 and tokens["train"].count("\n") == 36
    vocab = word_vocabulary(tokens["train"], 5)
    assert vocab[0] == "<unk>" and len(vocab) == 5
    assert vocab[1:] == ["and", "god", "said", ","]             # all 36 times; ties in order of first appearance
    ids = encode_words(["god", "light", "and"], vocab)
    assert ids.tolist() == [2, 0, 1]
    stream = torch.arange(20)
    x, y = ngram_windows(stream, torch.tensor([[0, 5], [7, 9]]), 3)
    assert x.shape == (2, 2, 3) and y.shape == (2, 2)
    assert x[1, 0].tolist() == [7, 8, 9] and y[1, 0].item() == 10
    with pytest.raises(ValueError, match="window starts must lie in 0..16"):
        ngram_windows(stream, torch.tensor([17]), 3)
    with pytest.raises(ValueError, match="every=2"):
        kjv_word_splits(verses, every=2)
    with pytest.raises(ValueError, match="size=1"):
        word_vocabulary(tokens["train"], 1)


def test_member_is_the_written_out_model_and_members_of_one_seed_start_alike():
    model = NgramLM(13, [4, 9, 4], context=3, d=5, hidden=7).double()
    with torch.no_grad():
        model.b1.add_(0.1 * torch.randn(model.b1.shape, dtype=torch.float64))
        model.b2.add_(0.1 * torch.randn(model.b2.shape, dtype=torch.float64))
    x = torch.randint(13, (3, 6, 3), generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (3, 6, 13)
    for m in range(3):
        torch.testing.assert_close(out[m], reference_logits(model, m, x[m]), rtol=1e-12, atol=1e-12)
    y = torch.randint(13, (3, 6))
    want = torch.stack([F.cross_entropy(out[m], y[m]) for m in range(3)])
    torch.testing.assert_close(model.member_loss(x, y), want)
    alone = NgramLM(13, [4], context=3, d=5, hidden=7)
    fresh = NgramLM(13, [4, 9, 4], context=3, d=5, hidden=7)
    for k in ("embed", "w1", "w2"):
        assert torch.equal(getattr(fresh, k)[0], getattr(alone, k)[0])
        assert torch.equal(getattr(fresh, k)[2], getattr(alone, k)[0])
        assert not torch.equal(getattr(fresh, k)[1], getattr(alone, k)[0])
    # initial scales: embeddings N(0, 1), first layer N(0, 1/fan-in)
    big = NgramLM(4000, [1], context=3, d=32, hidden=64)
    assert big.embed.std().item() == pytest.approx(1.0, rel=0.02)
    assert big.w1.std().item() == pytest.approx(1 / math.sqrt(96), rel=0.05)
    with pytest.raises(ValueError, match=r"need \[3, B, 3\]"):
        model(x[:, :, :2])
    with pytest.raises(ValueError, match="hidden"):
        NgramLM(13, [0], hidden=0)


def test_warmup_constant_decay():
    f = lambda s: warmup_constant_decay(s, 100, 10, 60, 0.01)  # noqa: E731
    assert f(1) == pytest.approx(0.1) and f(10) == 1.0 and f(11) == 1.0 and f(60) == 1.0
    assert f(80) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(100) == pytest.approx(0.01)
    assert all(f(s) >= f(s + 1) for s in range(60, 100))
    assert warmup_constant_decay(5, 10, 0, 10) == 1.0
    with pytest.raises(ValueError, match="warmup=20, decay_from=10"):
        warmup_constant_decay(1, 100, 20, 10)
    with pytest.raises(ValueError, match="step=101"):
        warmup_constant_decay(101, 100, 10, 60)


def _stream(n=3000, vocab=11, seed=0):
    # learnable: mostly a repeating pattern, some noise
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(n) % vocab
    return torch.where(torch.rand(n, generator=g) < 0.1, torch.randint(vocab, (n,), generator=g), base)


def test_a_member_trains_exactly_as_alone_and_a_diverged_member_is_contained():
    train, val = _stream(), _stream(seed=1)
    specs = [MemberSpec("adax", 3e-2, weight_decay=1e-3), MemberSpec("sgd", 1e8), MemberSpec("adam", 1e-2),
             MemberSpec("adax", 3e-2, weight_decay=1e-3)]
    seeds = [2, 2, 5, 5]
    sched = lambda s: warmup_constant_decay(s, 30, 5, 20)  # noqa: E731
    model = NgramLM(11, seeds, context=2, d=4, hidden=8).double()
    opt = BatchedAdaptive(list(model.parameters()), specs)
    out = train_lm(model, opt, train, val, seeds, 30, 8, sched, [10, 30], 64)
    assert out["train_loss"].shape == out["val_loss"].shape == (2, 4)
    assert out["diverged"].tolist() == [False, True, False, False]           # SGD at lr 1e8
    assert np.isnan(out["train_loss"][-1, 1]) and np.isfinite(out["val_loss"][:, [0, 2, 3]]).all()
    # member 3 (seed 5, AdaX) trained beside the others equals the same run alone: same batches, same updates
    alone = NgramLM(11, [5], context=2, d=4, hidden=8).double()
    out1 = train_lm(alone, BatchedAdaptive(list(alone.parameters()), [specs[3]]), train, val, [5], 30, 8, sched,
                    [10, 30], 64)
    np.testing.assert_allclose(out1["val_loss"][:, 0], out["val_loss"][:, 3], rtol=1e-10)
    for k in ("embed", "w1", "w2", "b1", "b2"):
        torch.testing.assert_close(getattr(alone, k)[0], getattr(model, k)[3], rtol=1e-10, atol=1e-12)
    assert (out["val_loss"][-1, [0, 2, 3]] < math.log(11) - 0.2).all()        # learned: below a uniform guess
    ev = lm_eval(model, val, torch.tensor([0, 10, 20]), chunk=2)
    assert ev.shape == (4,) and ev.dtype == torch.float64
    torch.testing.assert_close(ev, lm_eval(model, val, torch.tensor([0, 10, 20])), equal_nan=True)  # chunked = whole
    with pytest.raises(ValueError, match=r"eval_steps \[40\]"):
        train_lm(model, opt, train, val, seeds, 30, 8, sched, [40], 16)


def _lm_cfg(**kw):
    cfg = dict(seed=0, beta1=0.9, beta2=0.1, lm_steps=12, lm_warmup=2, lm_decay_from=8, lm_lr_final=0.01,
               lm_batch=4, lm_vocab=64, lm_context=2, lm_width=4, lm_hidden=8, lm_seeds=2, lm_lr=3e-3, lm_sgd_lr=0.1,
               lm_lr_points=2, lm_lr_factor=3.0, lm_weight_decay=5e-4, lm_decoupled_weight_decay=0.05,
               lm_eval_points=2, lm_val_windows=16, lm_final_windows=32, lm_workers=1)
    cfg.update(kw)
    return cfg


def test_sweep_members_are_distinct_and_shared_where_the_optimizer_is_the_same():
    cfg = _lm_cfg()
    configs = lm_arm_configs(cfg)
    assert set(configs) == {"SGD+momentum", "Adam", "AdamW", "AdaX", "AdaX-W"}
    assert [c[0] for c in configs["SGD+momentum"]] == pytest.approx([0.1 / math.sqrt(3)] * 2 + [0.1 * math.sqrt(3)] * 2)
    assert [c[1:] for c in configs["SGD+momentum"]] == [(0.0, False), (5e-4, False)] * 2
    assert configs["AdamW"][1][0] == pytest.approx(3e-3 / math.sqrt(3))
    assert configs["AdamW"][1][1:] == (0.05, True) and configs["AdamW"][0][1:] == (0.0, False)
    members, arms = lm_members(cfg, 100)
    keys = [tuple(m.values()) for m in members]
    assert len(set(keys)) == len(keys)
    # SGD 2 lrs x 2 wds; Adam family 2 lrs x {0, coupled, decoupled}; AdaX family the same; 2 seeds each
    assert len(members) == (4 + 6 + 6) * 2
    assert all(len(v) == 4 * 2 for v in arms.values())
    shared = set(arms["Adam"]) & set(arms["AdamW"])
    assert len(shared) == 2 * 2 and all(members[i]["weight_decay"] == 0 for i in shared)
    assert {members[i]["seed"] for i in arms["AdaX"]} == {100, 101}
    assert lm_eval_steps(cfg) == [6, 10, 12]          # 1/beta2 = 10 added
    assert lm_eval_steps(_lm_cfg(beta2=1e-4)) == [6, 12]


def test_selection_picks_the_lowest_mean_validation_loss_and_never_a_diverged_configuration():
    members, arms = lm_members(_lm_cfg(), 10)
    rng = np.random.default_rng(0)
    val, test = rng.uniform(3, 4, len(members)), rng.uniform(3, 4, len(members))
    diverged = [False] * len(members)
    sgd = arms["SGD+momentum"]                         # 2 lrs x 2 wds x 2 seeds, seed fastest
    val[sgd[2:4]] = 1.0                                 # lr 1, wd 5e-4: the best mean ...
    diverged[sgd[3]] = True                             # ... but one of its seeds diverged
    val[sgd[6:8]] = [2.0, 2.2]                          # lr 2, wd 5e-4: the best usable one
    record = {"members": members, "arms": arms, "diverged": diverged}
    arrays = {"10/final_val_loss": val, "10/final_test_loss": test}
    sel = lm_selection(record, arrays, 10)
    s = sel["SGD+momentum"]
    assert (s["lr"], s["weight_decay"]) == (members[sgd[6]]["lr"], 5e-4) and s["members"] == sgd[6:8]
    np.testing.assert_array_equal(s["test_loss"], test[sgd[6:8]])
    assert [members[i]["seed"] for i in s["members"]] == [10, 11]
    # brute force over each optimizer's configurations
    for name, idx in arms.items():
        configs = {}
        for i in idx:
            configs.setdefault((members[i]["lr"], members[i]["weight_decay"]), []).append(i)
        usable = {k: np.mean(val[v]) for k, v in configs.items() if not any(diverged[i] for i in v)}
        assert (sel[name]["lr"], sel[name]["weight_decay"]) == min(usable, key=usable.get)


def test_training_stage_is_independent_of_workers_round_trips_and_checks_input(tmp_path):
    from kexue.data import DataError, load_bible_pairs
    from kexue.optim import load_lm_runs, save_lm_runs, train_lm_sets
    try:
        load_bible_pairs()
    except Exception as e:            # the data stage builds it (make test runs that stage first)
        pytest.skip(f"no bible_pairs: {e}")
    with pytest.raises(ValueError, match="warmup=9, decay_from=8"):
        train_lm_sets(_lm_cfg(lm_warmup=9), log=lambda m: None)
    one = train_lm_sets(_lm_cfg(), log=lambda m: None)
    two = train_lm_sets(_lm_cfg(lm_workers=2), log=lambda m: None)
    strip = lambda r: {k: {kk: vv for kk, vv in v.items() if kk != "seconds"} for k, v in r["sets"].items()}  # noqa: E731
    assert strip(one) == strip(two)
    for k in one["arrays"]:
        np.testing.assert_array_equal(one["arrays"][k], two["arrays"][k])
    assert sorted(one["sets"]) == ["0", "1000"]
    rec = one["sets"]["0"]
    n = len(rec["members"])
    assert one["arrays"]["0/val_loss"].shape == (len(rec["eval_steps"]), n)
    assert one["arrays"]["0/final_test_loss"].shape == (n,)
    assert np.isfinite(one["arrays"]["0/final_test_loss"]).all()
    assert not np.array_equal(one["arrays"]["0/final_test_loss"], one["arrays"]["1000/final_test_loss"])
    assert len(one["config"]["vocab"]) == 64 and one["config"]["vocab"][0] == "<unk>"
    folder = save_lm_runs(one, tmp_path / "runs")
    cfg, sets, arrays = load_lm_runs(folder)
    assert cfg["lm_steps"] == 12 and sets == one["sets"] and cfg["vocab"] == one["config"]["vocab"]
    (folder / "runs.json").write_text((folder / "runs.json").read_text().replace('"base": 0', '"base":  0', 1))
    with pytest.raises(DataError, match="runs.json: SHA-256 differs"):
        load_lm_runs(folder)
    with pytest.raises(DataError, match="dvc repro 04_adax_train"):
        load_lm_runs(tmp_path / "nothing")
