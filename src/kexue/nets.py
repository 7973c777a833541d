"""Small networks and a plain classification training loop shared by chapters."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head for 28x28 grey images (about 30k params at width 16)."""

    def __init__(self, width: int = 16, n_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.head = nn.Linear(2 * width * 7 * 7, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)   # [B, w, 14, 14]
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)   # [B, 2w, 7, 7]
        return x.flatten(1)                          # [B, 2w*49]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))          # [B, n_classes]


@dataclass
class History:
    """Per-epoch curves of one training run."""
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
             ) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on (x, y)."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size])
        loss += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    model.train()
    return loss / len(x), correct / len(x)


def train_classifier(model: nn.Module, make_optimizer: Callable[[list], torch.optim.Optimizer],
                     train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                     epochs: int, batch_size: int, generator: torch.Generator,
                     desc: str = "train_classifier") -> History:
    """Minibatch training with cross-entropy; shuffling drawn from `generator` (reproducible).

    `desc` labels the terminal progress bar (one tick per optimizer step; never in a notebook).
    """
    from .report import progress
    opt = make_optimizer(list(model.parameters()))
    x, y = train
    hist = History()
    bar = progress(desc=desc, total=epochs * -(-len(x) // batch_size), unit="step")
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        total, n = 0.0, 0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            n += len(idx)
            bar.update(1)
        hist.train_loss.append(total / n)
        tl, ta = evaluate(model, *test)
        hist.test_loss.append(tl)
        hist.test_acc.append(ta)
    bar.close()
    return hist
