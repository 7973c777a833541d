"""kexue.nets: shapes, evaluation against a direct computation, reproducible training."""
import torch
import torch.nn.functional as F

from kexue.nets import SmallCNN, evaluate, train_classifier


def test_shapes_and_feature_head_split():
    m = SmallCNN(width=4)
    x = torch.randn(3, 1, 28, 28)
    assert m.features(x).shape == (3, 8 * 49)
    torch.testing.assert_close(m(x), m.head(m.features(x)))


def test_evaluate_matches_direct_computation_across_batches():
    torch.manual_seed(0)
    m = SmallCNN(width=4)
    x, y = torch.randn(37, 1, 28, 28), torch.randint(0, 10, (37,))
    loss, acc = evaluate(m, x, y, batch_size=8)
    with torch.no_grad():
        logits = m(x)
    assert abs(loss - F.cross_entropy(logits, y).item()) < 1e-5
    assert acc == (logits.argmax(1) == y).sum().item() / 37


def test_training_is_reproducible_and_learns():
    x = torch.rand(256, 1, 28, 28)
    y = (x.mean((1, 2, 3)) > 0.5).long()          # a learnable rule
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        m = SmallCNN(width=4)
        h = train_classifier(m, lambda ps: torch.optim.Adam(ps, lr=1e-2), (x, y), (x, y),
                             epochs=3, batch_size=32, generator=torch.Generator().manual_seed(2))
        runs.append((h, [p.detach().clone() for p in m.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert runs[0][0].train_loss[-1] < runs[0][0].train_loss[0]
