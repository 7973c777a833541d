"""kexue.simbert: the UniLM mask, the in-batch similarity loss, the seq2seq loss, batch building."""
import math

import pytest
import torch
import torch.nn.functional as F

from kexue.simbert import both_orders, collate, encode_pair, seq2seq_loss, similarity_loss, unilm_mask


def brute_force_mask(seg, att):
    B, L = seg.shape
    out = torch.zeros(B, L, L, dtype=torch.bool)
    for b in range(B):
        for i in range(L):
            for j in range(L):
                if not att[b, j]:
                    continue
                if seg[b, j] == 0:
                    out[b, i, j] = True
                elif seg[b, i] == 1 and j <= i:
                    out[b, i, j] = True
    return out


def test_unilm_mask_matches_the_rule_token_by_token():
    rows = [encode_pair([5, 6, 7], [8, 9], 1, 2, 32), encode_pair([5], [8, 9, 10, 11], 1, 2, 32),
            encode_pair([5, 6], [8], 1, 2, 32)]
    ids, seg, att = collate(rows)
    mask = unilm_mask(seg, att)
    assert mask.shape == (3, ids.shape[1], ids.shape[1]) and mask.dtype == torch.bool
    assert torch.equal(mask, brute_force_mask(seg, att))
    assert not mask[att[:, None, :].expand_as(mask) == 0].any()            # padding never attended
    assert torch.equal(unilm_mask(seg), brute_force_mask(seg, torch.ones_like(seg)))
    with pytest.raises(ValueError, match="segment_ids"):
        unilm_mask(seg + 1)
    with pytest.raises(ValueError, match="attention_mask.shape"):
        unilm_mask(seg, att[:, :-1])


def test_prefix_outputs_do_not_depend_on_segment_one_under_the_mask():
    # One attention layer with the mask: changing b leaves every segment-0 output unchanged.
    torch.manual_seed(0)
    d = 8
    wq, wk, wv = (torch.randn(d, d, dtype=torch.float64) for _ in range(3))

    def attend(x, mask):
        scores = (x @ wq) @ (x @ wk).transpose(1, 2) / math.sqrt(d)
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ (x @ wv)

    ids, seg, att = collate([encode_pair([5, 6, 7], [8, 9, 10], 1, 2, 32)])
    x = torch.randn(1, ids.shape[1], d, dtype=torch.float64)
    x2 = x.clone()
    x2[seg == 1] = torch.randn(int((seg == 1).sum()), d, dtype=torch.float64)   # another b
    y, y2 = attend(x, unilm_mask(seg, att)), attend(x2, unilm_mask(seg, att))
    assert torch.equal(y[seg == 0], y2[seg == 0])
    assert not torch.allclose(y[seg == 1], y2[seg == 1])


def test_similarity_loss_against_a_float64_loop():
    torch.manual_seed(1)
    cls = torch.randn(6, 5, dtype=torch.float64)
    got = similarity_loss(cls, scale=30.0)
    h = cls / cls.norm(dim=1, keepdim=True)
    total = 0.0
    for r in range(6):
        logits = [30.0 * float(h[r] @ h[c]) for c in range(6) if c != r]
        partner = 30.0 * float(h[r] @ h[r ^ 1])
        total += -(partner - math.log(sum(math.exp(v) for v in logits)))
    assert float(got) == pytest.approx(total / 6, rel=1e-12)


def test_similarity_loss_equals_mnrl_both_ways_when_same_side_entries_are_masked():
    # sentence-transformers' MultipleNegativesRankingLoss: anchors A vs candidates P, CE toward the diagonal.
    # SimBERT's 2B x 2B loss, restricted to the cross-side block, is its mean over the two directions.
    torch.manual_seed(2)
    A, P = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    a, p = F.normalize(A, dim=1), F.normalize(P, dim=1)
    mnrl = lambda x, y: F.cross_entropy(20.0 * x @ y.T, torch.arange(4))
    both = (mnrl(a, p) + mnrl(p, a)) / 2
    rows = torch.stack([A, P], 1).reshape(8, 7)                              # a1, p1, a2, p2, ...
    h = F.normalize(rows, dim=1)
    logits = 20.0 * h @ h.T
    same_side = (torch.arange(8)[:, None] % 2) == (torch.arange(8)[None, :] % 2)
    masked = F.cross_entropy(logits.masked_fill(same_side, float("-inf")), torch.arange(8) ^ 1)
    assert float(masked) == pytest.approx(float(both), rel=1e-12)
    # with the same-side negatives kept (SimBERT), the loss can only be larger
    assert float(similarity_loss(rows, scale=20.0)) > float(both)
    with pytest.raises(ValueError, match="2B"):
        similarity_loss(rows[:3])


def test_seq2seq_loss_scores_exactly_the_segment_one_targets():
    ids, seg, att = collate([encode_pair([5, 6], [7, 8], 1, 2, 32), encode_pair([5], [7], 1, 2, 32)])
    V = 12
    logits = torch.randn(2, ids.shape[1], V, generator=torch.Generator().manual_seed(3))
    got = seq2seq_loss(logits, ids, seg, att)
    terms = []
    for b in range(2):
        for t in range(ids.shape[1] - 1):
            if seg[b, t + 1] == 1 and att[b, t + 1]:
                terms.append(-torch.log_softmax(logits[b, t], -1)[ids[b, t + 1]])
    assert len(terms) == 3 + 2                                                # b tokens and the final [SEP]
    assert float(got) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-6)


def test_batch_building():
    assert both_orders([("a1", "b1"), ("a2", "b2")]) == [("a1", "b1"), ("b1", "a1"), ("a2", "b2"), ("b2", "a2")]
    ids, seg = encode_pair([5, 6, 7, 8], [9, 10, 11], cls_id=1, sep_id=2, max_len=2)
    assert ids == [1, 5, 6, 2, 9, 10, 2] and seg == [0, 0, 0, 0, 1, 1, 1]
    t_ids, t_seg, t_att = collate([(ids, seg), ([1, 2, 2], [0, 0, 1])], pad_id=0)
    assert t_ids.shape == (2, 7) and t_att[1].tolist() == [1, 1, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="max_len"):
        encode_pair([5], [6], 1, 2, 0)
