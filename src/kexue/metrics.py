r"""Image-sample quality without Inception weights: a Fashion-MNIST feature network,
the Fréchet distance of its features, and class coverage.

Fréchet distance between Gaussians fitted to two feature sets (Heusel et al., 2017):

$$d^2 = \lVert\mu_a-\mu_b\rVert^2 + \operatorname{Tr}\big(\Sigma_a+\Sigma_b-2(\Sigma_a\Sigma_b)^{1/2}\big).$$

With the features of `FeatureClassifier` (trained on Fashion-MNIST in the
`fashion_classifier` stage) this is a *classifier-based* FD: it ranks samples of
the same data set, and its numbers are **not** comparable with Inception FID.
`inception_features` computes the standard 2048-d pool features when Inception-v3
weights are on disk (`$KEXUE_INCEPTION_WEIGHTS`); nothing is downloaded.

Two sample-level measures used by the density models (chapter 02): the kernel
maximum mean discrepancy `mmd2` (Gretton et al., 2012) and `auroc`, the area under
the ROC curve of a score separating two sets (Mann-Whitney U / (n m)).

`python -m kexue.metrics train-classifier` is the `fashion_classifier` stage.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ROOT, seed_everything

CLASSIFIER_PATH = ROOT / "data" / "fashion_classifier.pt"
CLASSIFIER_REPORT = ROOT / "reports" / "fashion_classifier"


class FeatureClassifier(nn.Module):
    """Conv net for 28x28 images in [-1, 1] with a 128-d penultimate layer (the features)."""

    def __init__(self, width: int = 32, feature_dim: int = 128, n_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),             # [B, w, 14, 14]
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # [B, 2w, 7, 7]
            nn.Flatten(), nn.Linear(2 * width * 49, feature_dim), nn.ReLU())          # [B, feature_dim]
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Squared Fréchet distance between Gaussians fitted to [N, d] and [M, d] features (float64)."""
    from scipy import linalg
    if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"features must be [N, d] and [M, d], got {tuple(feats_a.shape)} and {tuple(feats_b.shape)}")
    if min(len(feats_a), len(feats_b)) < 2:
        raise ValueError("need at least 2 samples on each side")
    a, b = feats_a.double().cpu().numpy(), feats_b.double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():          # singular product: regularise, as the reference FID code does
        off = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + off) @ (cov_b + off))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def frechet_distance_active(feats: torch.Tensor, real_feats: torch.Tensor) -> float:
    """`frechet_distance` over the feature dimensions that are non-zero somewhere in either set.
    A dimension that is zero in both (a dead ReLU: 52 of the classifier's 128) adds exactly 0 to every term,
    so the distance is unchanged; leaving it out only spares the matrix square root a singular matrix."""
    import warnings
    from scipy.linalg import LinAlgWarning
    active = (feats != 0).any(0) | (real_feats != 0).any(0)                          # [d]
    with warnings.catch_warnings():      # a small set's covariance is singular anyway; frechet_distance regularises
        warnings.simplefilter("ignore", LinAlgWarning)
        return frechet_distance(feats[:, active], real_feats[:, active])


@torch.no_grad()
def extract(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, d], predicted class [N]) of images in [-1, 1]."""
    model.eval()
    device = next(model.parameters()).device
    feats, preds = [], []
    for i in range(0, len(images), batch_size):
        f = model.features(images[i:i + batch_size].to(device))
        feats.append(f.cpu())
        preds.append(model.head(f).argmax(1).cpu())
    return torch.cat(feats), torch.cat(preds)


def class_coverage(preds: torch.Tensor, n_classes: int = 10) -> dict:
    """Predicted-class histogram: classes hit by at least 1% of samples, and KL(hist || uniform)."""
    hist = torch.bincount(preds, minlength=n_classes).double() / max(len(preds), 1)
    nz = hist[hist > 0]
    return {"classes": int((hist >= 0.01).sum()), "kl_to_uniform": float((nz * (nz * n_classes).log()).sum()),
            "histogram": hist.tolist()}


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.1, 0.3, 1.0)) -> float:
    r"""Unbiased squared MMD between samples x [N, d] and y [M, d], with the sum of Gaussian kernels
    $k(a, b) = \sum_h \exp(-\lVert a-b\rVert^2 / (2h^2))$ (float64).

    $\mathrm{MMD}^2 = \frac{1}{N(N-1)}\sum_{i\neq j}k(x_i,x_j) + \frac{1}{M(M-1)}\sum_{i\neq j}k(y_i,y_j)
      - \frac{2}{NM}\sum_{i,j}k(x_i,y_j)$; zero in expectation when the distributions agree.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"samples must be [N, d] and [M, d], got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(len(x), len(y)) < 2:
        raise ValueError("need at least 2 samples on each side")
    x, y = x.double(), y.double()

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * k(x, y).mean())


def auroc(scores_pos, scores_neg) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie): ROC area by ranks (ties averaged)."""
    from scipy.stats import rankdata
    pos, neg = np.asarray(scores_pos, float).ravel(), np.asarray(scores_neg, float).ravel()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"need scores on both sides, got {len(pos)} positive and {len(neg)} negative")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("scores must be finite")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def classifier_sha256_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")


def load_classifier(path: Path = CLASSIFIER_PATH, device: torch.device | str = "cpu") -> FeatureClassifier:
    """The committed feature classifier, checked against its recorded SHA-256 before loading.

    It is committed to git (not rebuilt on a fresh clone), so every clone computes the same
    Fréchet distances; `dvc repro -f fashion_classifier` retrains it (about 2 minutes on 2 cores).
    """
    from .data import load_checked
    ckpt = load_checked(path, classifier_sha256_path(Path(path)), "dvc repro -f fashion_classifier", device)
    model = FeatureClassifier(**ckpt["config"]).to(device)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def inception_features(images: torch.Tensor, weights: str | None = None, batch_size: int = 100) -> torch.Tensor:
    """2048-d Inception-v3 pool features of grey [N, 1, 28, 28] images in [-1, 1], from local weights.

    `weights` (or `$KEXUE_INCEPTION_WEIGHTS`) is a torchvision `inception_v3` state dict on disk.
    torchvision's weights are not the TF ones of the FID paper, so values differ slightly from
    published FIDs; the ranking is what carries over.
    """
    from torchvision.models import inception_v3
    weights = weights or os.environ.get("KEXUE_INCEPTION_WEIGHTS")
    if not weights or not Path(weights).exists():
        raise FileNotFoundError("no Inception-v3 weights on disk: set KEXUE_INCEPTION_WEIGHTS to a torchvision "
                                "inception_v3 state dict to compute the standard FID")
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.fc = nn.Identity()
    net.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = (images[i:i + batch_size] + 1) / 2                                  # [b, 1, 28, 28] in [0, 1]
            x = F.interpolate(x.repeat(1, 3, 1, 1), size=(299, 299), mode="bilinear", align_corners=False)
            out.append(net((x - mean) / std))
    return torch.cat(out)


def train_feature_classifier(epochs: int = 3, seed: int = 0, threads: int = 2) -> dict:
    """The `fashion_classifier` stage: train on all 60k images, report test accuracy."""
    from .data import load_fashion_mnist
    from .nets import evaluate, train_classifier
    seed_everything(seed, threads)
    x, y = load_fashion_mnist(train=True)
    xt, yt = load_fashion_mnist(train=False)
    x, xt = x * 2 - 1, xt * 2 - 1                                                    # GAN range [-1, 1]
    config = {"width": 32, "feature_dim": 128}
    model = FeatureClassifier(**config)
    hist = train_classifier(model, lambda ps: torch.optim.Adam(ps, lr=1e-3), (x, y), (xt, yt), epochs, 128,
                            torch.Generator().manual_seed(seed))
    _, acc = evaluate(model, xt, yt)
    CLASSIFIER_PATH.parent.mkdir(parents=True, exist_ok=True)
    from .data import file_sha256
    tmp = CLASSIFIER_PATH.with_suffix(".tmp")
    torch.save({"config": config, "state_dict": model.state_dict()}, tmp)
    tmp.replace(CLASSIFIER_PATH)
    classifier_sha256_path(CLASSIFIER_PATH).write_text(f"{file_sha256(CLASSIFIER_PATH)}  {CLASSIFIER_PATH.name}\n")
    # Reference distances: real test images against real training images, and against noise.
    feats_train, _ = extract(model, x[:5000])
    feats_test, _ = extract(model, xt[:5000])
    noise, _ = extract(model, torch.rand(5000, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1)
    metrics = {"test_accuracy": acc, "epochs": epochs, "train_loss": hist.train_loss,
               "fd_test_vs_train_5k": frechet_distance(feats_test, feats_train),
               "fd_uniform_noise_vs_train_5k": frechet_distance(noise, feats_train)}
    CLASSIFIER_REPORT.mkdir(parents=True, exist_ok=True)
    (CLASSIFIER_REPORT / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["train-classifier"])
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args(argv)
    if args.epochs < 1:
        print(f"error: --epochs={args.epochs} must be >= 1", file=sys.stderr)
        return 1
    m = train_feature_classifier(epochs=args.epochs)
    print(f"feature classifier: test accuracy {m['test_accuracy']:.4f}; FD(test, train) "
          f"{m['fd_test_vs_train_5k']:.3f}; FD(noise, train) {m['fd_uniform_noise_vs_train_5k']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
