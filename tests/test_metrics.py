"""kexue.metrics: Fréchet distance against independent computations; class coverage."""
import math

import numpy as np
import pytest
import torch

from kexue.metrics import FeatureClassifier, class_coverage, extract, frechet_distance


def symmetric_sqrt(m):
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_matches_independent_symmetric_form():
    """Tr (A B)^(1/2) = Tr (A^(1/2) B A^(1/2))^(1/2): a different route to the same number."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    b = torch.randn(300, 6, generator=g, dtype=torch.float64) * 2 + 1
    ca, cb = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    ra = symmetric_sqrt(ca)
    expected = (((a.mean(0) - b.mean(0)) ** 2).sum().item() + np.trace(ca) + np.trace(cb)
                - 2 * np.trace(symmetric_sqrt(ra @ cb @ ra)))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_one_dimensional_closed_form():
    a = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    b = torch.tensor([[10.0], [14.0], [18.0]])
    sa, sb = np.std(a.numpy(), ddof=1), np.std(b.numpy(), ddof=1)
    assert frechet_distance(a, b) == pytest.approx((1.5 - 14.0) ** 2 + (sa - sb) ** 2, rel=1e-12)


def test_identical_near_zero_shifted_and_collapsed_larger():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 8, generator=g)
    y = torch.randn(2000, 8, generator=g)
    assert abs(frechet_distance(x, x)) < 1e-8
    same = frechet_distance(x, y)
    assert same < 0.05                                  # finite-sample noise only
    # A shift changes only the mean term: exactly ||mu_x - mu_y - 0.5||^2 - ||mu_x - mu_y||^2.
    dmu = x.mean(0).double() - y.mean(0).double()
    assert frechet_distance(x, y + 0.5) - same == pytest.approx(
        ((dmu - 0.5) ** 2).sum().item() - (dmu ** 2).sum().item(), rel=1e-6)
    assert frechet_distance(x, y + 0.5) > same + 1.5
    collapsed = y[:50].repeat(40, 1) + 0.01 * torch.randn(2000, 8, generator=g)
    assert frechet_distance(x, collapsed) > same + 0.1


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\(5, 3\) and \(5, 4\)"):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))


def test_class_coverage():
    preds = torch.tensor([0] * 50 + [1] * 50)
    c = class_coverage(preds)
    assert c["classes"] == 2
    assert c["kl_to_uniform"] == pytest.approx(math.log(5), rel=1e-12)
    assert class_coverage(torch.arange(10).repeat(10))["kl_to_uniform"] == pytest.approx(0.0, abs=1e-12)


def test_extract_shapes():
    m = FeatureClassifier(width=4, feature_dim=16)
    f, p = extract(m, torch.rand(7, 1, 28, 28) * 2 - 1, batch_size=3)
    assert f.shape == (7, 16) and p.shape == (7,) and p.max() < 10


def test_inception_features_need_local_weights(monkeypatch, tmp_path):
    from kexue.metrics import inception_features
    monkeypatch.delenv("KEXUE_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="KEXUE_INCEPTION_WEIGHTS"):
        inception_features(torch.zeros(2, 1, 28, 28))
    with pytest.raises(FileNotFoundError, match="no Inception-v3 weights"):
        inception_features(torch.zeros(2, 1, 28, 28), weights=str(tmp_path / "missing.pt"))


# --- MMD and AUROC (chapter 02) ---

from kexue.metrics import auroc, mmd2  # noqa: E402


def test_mmd2_matches_a_double_loop_and_is_near_zero_for_equal_laws():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 2, generator=g, dtype=torch.float64), torch.randn(9, 2, generator=g, dtype=torch.float64) + 1
    k = lambda a, b: sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h)) for h in (0.1, 0.3, 1.0))  # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(12) for j in range(12) if i != j) / (12 * 11)
    syy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    sxy = sum(k(x[i], y[j]) for i in range(12) for j in range(9)) / (12 * 9)
    assert mmd2(x, y) == pytest.approx(sxx + syy - 2 * sxy, rel=1e-10)
    a, b = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
    assert abs(mmd2(a, b)) < 0.005 < mmd2(a, b + 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        mmd2(a[:1], b)


def test_auroc_matches_pairwise_counting_with_ties():
    pos, neg = np.array([0.9, 0.5, 0.5, 0.1]), np.array([0.5, 0.2, 0.0])
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    assert auroc(pos, neg) == pytest.approx(sum(pairs) / len(pairs))
    assert auroc([1, 2], [3, 4]) == 0.0 and auroc([3, 4], [1, 2]) == 1.0
    with pytest.raises(ValueError, match="finite"):
        auroc([float("nan")], [1.0])
