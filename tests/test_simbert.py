"""kexue.simbert: the UniLM mask, the in-batch similarity loss, the seq2seq loss, batch building."""
import math

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from kexue.simbert import (distinct_candidates, generation_rule, unigram_loss, SimBERT, distinct_n, generation_metrics, pair_batches, train_pairs, both_orders, collate, corpus_vocab, encode_pair, encode_sentences, generate_similar,
                           joint_loss, load_minilm, mnrl_loss, retrieval_metrics, seq2seq_loss, similarity_loss,
                           tiny_bert, unilm_mask)


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


def _st_mnrl(directions):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    return MultipleNegativesRankingLoss(model=None, scale=20.0, directions=directions)


def test_similarity_loss_against_sentence_transformers_own_loss():
    """Independent implementation: sentence-transformers' MultipleNegativesRankingLoss on the same vectors.
    Same-side entries masked -> the mean of its two plain directions (a->b, b->a); SimBERT's full 2B x 2B
    loss -> the mean of its two directions with same-type negatives ("query_to_query") in one softmax."""
    torch.manual_seed(4)
    A, P = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    rows = torch.stack([A, P], 1).reshape(10, 7)                            # a1, p1, a2, p2, ...
    plain = _st_mnrl(("query_to_doc",))
    two_way = (plain.compute_loss_from_embeddings([A, P], None) + plain.compute_loss_from_embeddings([P, A], None)) / 2
    assert float(similarity_loss(rows, 20.0, exclude_same_side=True)) == pytest.approx(float(two_way), rel=1e-10)
    assert float((mnrl_loss(A, P) + mnrl_loss(P, A)) / 2) == pytest.approx(float(two_way), rel=1e-10)
    gte = _st_mnrl(("query_to_doc", "query_to_query"))
    full = (gte.compute_loss_from_embeddings([A, P], None) + gte.compute_loss_from_embeddings([P, A], None)) / 2
    assert float(similarity_loss(rows, 20.0)) == pytest.approx(float(full), rel=1e-10)


def _toy_batch(V=40, seed=0):
    """Four toy paraphrase pairs: b is a with one token replaced and one dropped (shared content)."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for n in torch.randint(4, 8, (4,), generator=g).tolist():
        a = torch.randint(5, V, (n,), generator=g).tolist()
        b = list(a)
        b[int(torch.randint(0, n, (1,), generator=g))] = int(torch.randint(5, V, (1,), generator=g))
        del b[int(torch.randint(0, n, (1,), generator=g))]
        pairs.append((a, b))
    rows = [encode_pair(a, b, 1, 2, 16) for a, b in both_orders(pairs)]
    return pairs, collate(rows)


def test_prefix_invariance_on_the_real_network():
    """all-MiniLM-L6-v2 under the UniLM mask: another b leaves every [CLS] a [SEP] output unchanged
    (bit for bit), and a later b token leaves the earlier b outputs unchanged (causal)."""
    bert, tok, pooler = load_minilm()
    model = SimBERT(bert, pooler_state=pooler).eval()
    a = tok("And God said, Let there be light: and there was light.", add_special_tokens=False)["input_ids"]
    b1 = tok("God said, Let there be light, and there was light.", add_special_tokens=False)["input_ids"]
    b2 = tok("The earth was formless and empty.", add_special_tokens=False)["input_ids"]
    b3 = b1[:-1] + [tok.convert_tokens_to_ids("!")]
    ids, seg, att = collate([encode_pair(a, b, tok.cls_token_id, tok.sep_token_id, 32) for b in (b1, b2, b3)])
    with torch.no_grad():
        h = model.hidden(ids, seg, att)
        n = len(a) + 2
        assert torch.equal(h[0, :n], h[1, :n]) and torch.equal(h[0, :n], h[2, :n])
        k = n + len(b1) - 1                                                 # b1 and b3 differ from here on
        assert torch.equal(h[0, :k], h[2, :k]) and not torch.allclose(h[0, k], h[2, k])
        full = model.bert(input_ids=ids, token_type_ids=seg, attention_mask=att).last_hidden_state
        assert not torch.allclose(full[0, :n], full[1, :n])                 # without the mask, b leaks into a
        v = encode_sentences(model, [a], tok.cls_token_id, tok.sep_token_id, 32)
        assert torch.allclose(v[0], F.normalize(model.pooler(h[0, 0]), dim=0), atol=1e-5)


def test_restricted_head_is_the_tied_full_head_sliced():
    bert = tiny_bert(vocab_size=40)
    vocab = corpus_vocab([[5, 9, 7], [9, 11]], always=[2])
    assert vocab.tolist() == [2, 5, 7, 9, 11]
    full, small = SimBERT(bert), SimBERT(bert, out_vocab=vocab)
    small.load_state_dict({k: v for k, v in full.state_dict().items() if k != "bias"}, strict=False)
    h = torch.randn(3, 32)
    assert torch.allclose(small.logits(h), full.logits(h)[:, vocab])
    assert small.head_targets(torch.tensor([9, 2])).tolist() == [3, 0]
    with pytest.raises(ValueError, match="outside the output vocabulary"):
        small.head_targets(torch.tensor([6]))
    # tied: the head's gradient reaches the input embeddings
    small.logits(h).sum().backward()
    assert bert.embeddings.word_embeddings.weight.grad[vocab].abs().sum() > 0
    with pytest.raises(ValueError, match="pooling"):
        SimBERT(bert, pooling="max")


def test_joint_loss_parts_match_the_separate_losses():
    _, (ids, seg, att) = _toy_batch()
    model = SimBERT(tiny_bert(vocab_size=40)).eval()
    total, parts = joint_loss(model, ids, seg, att, 1.0, 1.0, 30.0)
    h = model.hidden(ids, seg, att)
    s2s = seq2seq_loss(model.logits(h), ids, seg, att)
    sim = similarity_loss(model.sentence_vector(h, seg, att), 30.0)
    assert parts["seq2seq"] == pytest.approx(float(s2s.detach()), rel=1e-5) and parts["similarity"] == pytest.approx(float(sim.detach()), rel=1e-5)
    assert float(total) == pytest.approx(float(s2s + sim), rel=1e-5)
    _, only = joint_loss(model, ids, seg, att, 0.0, 1.0)
    assert set(only) == {"similarity"}


def test_one_batch_overfits_and_generation_returns_the_memorised_partner():
    """Sanity: a tiny BERT drives the joint loss on one batch near zero, and generate_similar then
    produces the memorised partner first (deduplicated, ranked by cosine)."""
    pairs, (ids, seg, att) = _toy_batch(seed=1)
    model = SimBERT(tiny_bert(vocab_size=40, hidden=64, seed=1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(joint_loss(model, ids, seg, att)[0])
    for _ in range(150):
        loss, _ = joint_loss(model, ids, seg, att)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.05 * first
    a, b = pairs[0]
    cands = generate_similar(model, a, 1, 2, n=6, topk=1, max_len=16, generator=torch.Generator().manual_seed(0))
    assert cands[0].tokens == b and len(cands) == 1                          # top-1 sampling: all six identical
    cands = generate_similar(model, a, 1, 2, n=6, topk=5, max_len=16, generator=torch.Generator().manual_seed(0))
    cos = [c.cosine for c in cands]
    assert cos == sorted(cos, reverse=True) and len({tuple(c.tokens) for c in cands}) == len(cands)


def test_retrieval_metrics_against_brute_force():
    g = torch.Generator().manual_seed(6)
    q = F.normalize(torch.randn(30, 8, generator=g), dim=1)
    p = F.normalize(q + 0.8 * torch.randn(30, 8, generator=g), dim=1)
    m = retrieval_metrics(q, p, ks=(1, 5), threshold=0.5)
    sim = (q @ p.T).numpy()
    ranks = [1 + sum(sim[i, j] > sim[i, i] for j in range(30)) for i in range(30)]
    assert m["top1"] == pytest.approx(sum(r == 1 for r in ranks) / 30)
    assert m["mrr"] == pytest.approx(sum(1 / r for r in ranks) / 30)
    assert m["recall@5"] == pytest.approx(sum(r <= 5 for r in ranks) / 30)
    perfect = retrieval_metrics(q, q, threshold=0.999)
    assert perfect["top1"] == 1.0 and perfect["mrr"] == 1.0 and perfect["threshold_acc"] == 1.0
    assert retrieval_metrics(q, p, threshold=-1.01)["threshold_acc"] == 0.5     # calls every pair similar
    with pytest.raises(ValueError, match="pool.shape"):
        retrieval_metrics(q, p[:5])


def test_pair_batches_cover_each_epoch_once_and_repeat_with_the_seed():
    batches = pair_batches(10, 3, 7, seed=2)
    assert len(batches) == 7 and all(len(b) == 3 and len(set(b.tolist())) == 3 for b in batches)
    first_epoch = torch.cat(batches[:3]).tolist()                        # 9 of the 10, none twice
    assert len(set(first_epoch)) == 9
    assert all(torch.equal(x, y) for x, y in zip(batches, pair_batches(10, 3, 7, seed=2)))
    assert not all(torch.equal(x, y) for x, y in zip(batches, pair_batches(10, 3, 7, seed=3)))
    with pytest.raises(ValueError, match="batch_pairs=1"):
        pair_batches(10, 1, 5, 0)


@pytest.mark.parametrize("objective", ["joint", "similarity", "seq2seq", "mnrl"])
def test_train_pairs_lowers_each_objective(objective):
    pairs, _ = _toy_batch(seed=3)
    # (similarity alone on a tiny random BERT's [CLS] collapses to uniform cosines, loss log(7): mean pooling)
    model = SimBERT(tiny_bert(vocab_size=40, hidden=32, seed=3),
                    pooling="mean" if objective in ("mnrl", "similarity") else "cls")
    hist = train_pairs(model, pairs, 1, 2, steps=60, batch_pairs=4, lr=1e-2, objective=objective, seed=0, warmup=0.0)
    assert len(hist) == 60 and np.mean([h["loss"] for h in hist[-5:]]) < 0.5 * np.mean([h["loss"] for h in hist[:5]])
    with pytest.raises(ValueError, match="objective='mlm'"):
        train_pairs(model, pairs, 1, 2, steps=1, batch_pairs=2, lr=1e-3, objective="mlm")


def test_distinct_n_and_generation_metrics():
    assert distinct_n(["a b a b", "a b"], 1) == pytest.approx(2 / 6)
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)     # (a b), (b a), (a b) | (a b)
    assert distinct_n(["a"], 2) == 0.0
    m = generation_metrics(["The LORD said this.", "he went home"], ["Yahweh said this.", "He went to his house."],
                           ["the Lord said this", "And he departed."], [0.95, 0.5])
    assert m["copy_rate"] == 0.5 and m["pass_threshold"] == 0.5
    exact = generation_metrics(["and he went to his home"], ["and he went to his home"], ["x"], [1.0])
    assert exact["chrf"] == pytest.approx(100.0) and exact["bleu"] == pytest.approx(100.0, abs=1e-6)
    assert 0 < m["chrf"] < 100
    with pytest.raises(ValueError, match="lengths"):
        generation_metrics(["a"], [], ["a"], [1.0])


def test_similarity_only_shortcut_is_the_loss_on_full_rows():
    """train_pairs("similarity") encodes `[CLS] x [SEP]` alone; by the prefix invariance that is the
    similarity part of the joint loss on the full `[CLS] a [SEP] b [SEP]` rows."""
    from kexue.simbert import _encode_train
    pairs, (ids, seg, att) = _toy_batch(seed=4)
    model = SimBERT(tiny_bert(vocab_size=40, seed=4)).eval()
    with torch.no_grad():
        _, parts = joint_loss(model, ids, seg, att, 0.0, 1.0, 30.0)
        short = similarity_loss(_encode_train(model, [s for p in pairs for s in p], 1, 2, 16), 30.0)
    assert float(short) == pytest.approx(parts["similarity"], abs=1e-5)


def test_train_pairs_gives_the_fresh_head_its_own_learning_rate():
    """head_lr applies to the new transform and bias only: with lr = 0 nothing else moves."""
    pairs, _ = _toy_batch(seed=5)
    model = SimBERT(tiny_bert(vocab_size=40, seed=5))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_pairs(model, pairs, 1, 2, steps=3, batch_pairs=4, lr=0.0, head_lr=1e-2, objective="joint", warmup=0.0)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith(("transform.", "bias")) for n in moved)


def test_unigram_loss_against_a_hand_count():
    train = [([5, 6], [5])]                       # targets 5, 6, SEP(2), 5, SEP -> counts 5:2, 6:1, 2:2
    test = [([5], [7])]                           # targets 5, 2, 7, 2
    total = 5 + 10
    want = -(math.log(3 / total) + 2 * math.log(3 / total) + math.log(1 / total)) / 4
    assert unigram_loss(train, test, sep_id=2, vocab_size=10) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="vocab_size"):
        unigram_loss(train, test, 2, 0)


def test_generation_rule_gates_on_the_unigram_floor():
    from kexue.verdicts import CONTRADICTED, INCONCLUSIVE, SUPPORTED
    # at the floor: inconclusive whatever the judge says
    v = generation_rule([0.9, 0.95, 0.9], [5.9, 5.8, 5.95], floor=6.0, target=0.5, min_gain=1.0)
    assert (v.verdict, v.reason) == (INCONCLUSIVE, "gated") and "not yet a generator" in v.evidence
    # a real generator: the judged share decides
    assert generation_rule([0.9, 0.95, 0.92], [2.0, 2.1, 1.9], 6.0, 0.5, 1.0).verdict == SUPPORTED
    assert generation_rule([0.1, 0.2, 0.15], [2.0, 2.1, 1.9], 6.0, 0.5, 1.0).verdict == CONTRADICTED


def test_generation_rule_takes_one_floor_per_seed():
    from kexue.verdicts import INCONCLUSIVE, SUPPORTED
    # seed 0's pool has a floor of 3: 2 nats is only 1 nat below it, the others 4 below theirs
    loss = [2.0, 2.0, 2.0]
    per_seed_gate = generation_rule([0.9, 0.9, 0.9], loss, floor=[3.0, 6.0, 6.0], target=0.5, min_gain=2.0)
    assert per_seed_gate.verdict == INCONCLUSIVE           # mean gain 3.0 but seed 0 drags the t-bound down
    assert generation_rule([0.9, 0.92, 0.9], loss, [6.0, 6.1, 5.9], 0.5, 1.0).verdict == SUPPORTED


def test_distinct_candidates_drops_copies_repeats_and_empty_rows():
    sep, a = 9, [5, 6, 7]
    rows = [[5, 6, 7, 9, 0], [1, 2, 9, 3], [9, 4], [1, 2, 9, 9], [3, 3], [5, 6, 7]]
    # [5 6 7] is the input (cut at [SEP] or not), [] is empty, [1 2] repeats; [3 3] has no [SEP]: kept whole
    assert distinct_candidates(rows, a, sep) == [[1, 2], [3, 3]]
    assert distinct_candidates([[5, 6, 9]], a, sep) == [[5, 6]]          # a prefix of the input is not a copy


# ---------------------------------------------------------------- the held-out evaluation of the training stage

def test_first_positive_rank_against_brute_force():
    from kexue.simbert import first_positive_rank
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(30, 50, generator=g, dtype=torch.float64)
    pos = torch.rand(30, 50, generator=g) < 0.1
    pos[torch.arange(30), torch.arange(30)] = True
    excl = (torch.rand(30, 50, generator=g) < 0.3) & ~pos
    rank = first_positive_rank(sim, pos, excl)
    for i in range(30):
        best = max(sim[i, j] for j in range(50) if pos[i, j])
        assert rank[i] == 1 + sum(1 for j in range(50) if sim[i, j] > best and not pos[i, j] and not excl[i, j])
    with pytest.raises(ValueError, match="positive"):
        first_positive_rank(sim, torch.zeros_like(pos))


def test_seq2seq_pair_losses_add_up_to_the_mean_loss():
    from kexue.simbert import seq2seq_eval_loss, seq2seq_pair_losses
    model = SimBERT(tiny_bert(vocab_size=40, seed=0)).eval()
    pairs = [([5, 6, 7], [8, 9]), ([10], [11, 12, 13]), ([14, 15], [16])]
    sums, counts = seq2seq_pair_losses(model, pairs, 1, 2, 16, batch=2)
    assert counts.tolist() == [(2 + 1) + (3 + 1), (3 + 1) + (1 + 1), (1 + 1) + (2 + 1)]    # both orders, + [SEP]
    assert sums.sum() / counts.sum() == pytest.approx(seq2seq_eval_loss(model, pairs, 1, 2, 16), rel=1e-6)
    one = seq2seq_pair_losses(model, pairs[1:2], 1, 2, 16)[0][0]
    assert sums[1] == pytest.approx(one, rel=1e-5)                        # a pair's loss does not depend on its batch


def _toy_bible():
    rows, topics = [], []
    books = [f"B{i}" for i in range(8)]
    for b in books:
        for c in (1, 2):
            for v in (1, 2, 3):
                rows.append({"book": b, "chapter": c, "verse": v, "kjv": f"k {b} {c} {v}", "web": f"w {b} {c} {v}"})
    rows.append({"book": "B1", "chapter": 2, "verse": 4, "kjv": "k dup", "web": "w B1 2 3"})    # a repeated text
    for b in books:
        topics += [{"topic": "T", "subtopic": "s", "book": b, "chapter": 1, "verse": 1},
                   {"topic": "T", "subtopic": "s", "book": b, "chapter": 2, "verse": 1},
                   {"topic": f"U{b}", "subtopic": "", "book": b, "chapter": 1, "verse": 2},
                   {"topic": f"U{b}", "subtopic": "", "book": b, "chapter": 1, "verse": 3}]
    return rows, topics


def test_held_out_sets_keep_halves_apart_and_topics_out_of_the_own_chapter():
    from kexue.simbert import held_out_sets, judging_half, split_pairs
    rows, topics = _toy_bible()
    tokenize = lambda xs: [[len(x)] for x in xs]
    split = split_pairs(rows, tokenize, 8, 2)
    ho = held_out_sets(rows, split, topics, tokenize)
    assert split.test_books == ["B1", "B3", "B5", "B7"]
    assert len(ho.pool) == 4 * 6 and len(set(ho.pool)) == len(ho.pool)               # the repeat counted once
    assert [ho.pool[i] for i in ho.pair_pool] == [w for _, w in split.test_text]
    assert {b: h for b, h in zip(ho.pool_book, ho.pool_half)} == {"B1": 0, "B3": 1, "B5": 0, "B7": 1}
    # each topic U<book> lies inside one chapter: never a positive; topic T links chapter 1 and 2 verse 1 of each book
    assert len(ho.topic_queries) == 8
    for q, pos in zip(ho.topic_queries, ho.topic_positives):
        assert all(ho.pool_half[p] == ho.pool_half[q] and ho.pool_chapter[p] != ho.pool_chapter[q] for p in pos)
        assert ho.pool[q].endswith(" 1") and len(pos) == 3                             # T's other verses in its half
    assert (judging_half(0), judging_half(2), judging_half(1000), judging_half(1003), judging_half(2000)) == (0, 0, 1, 1, 0)


def test_held_out_scores_on_a_model_that_reads_only_the_text_length():
    """A model whose vectors are a function of the text alone gives the same score for the same text; the
    ranks are those of first_positive_rank inside each half (checked on the toy Bible)."""
    from kexue.simbert import held_out_scores, held_out_sets, split_pairs
    rows, topics = _toy_bible()
    tok = lambda xs: [[3 + (sum(map(ord, x)) % 30), 4 + len(x) % 7] for x in xs]
    split = split_pairs(rows, tok, 8, 2)
    ho = held_out_sets(rows, split, topics, tok)
    model = SimBERT(tiny_bert(vocab_size=40, seed=0), pooling="mean").eval()
    s = held_out_scores(model, ho, split, 1, 2, 8, 8)
    assert s["pair_rr"].shape == (len(split.test),) and ((0 < s["pair_rr"]) & (s["pair_rr"] <= 1)).all()
    assert s["topic_rr"].shape == (len(ho.topic_queries),) and ((0 < s["topic_rr"]) & (s["topic_rr"] <= 1)).all()
    # each half's pool has 12 verses: a reciprocal rank is never below 1/12
    assert s["pair_rr"].min() >= 1 / 12 - 1e-12 and s["topic_rr"].min() >= 1 / 12 - 1e-12
    assert np.allclose(s["pair_cos"], (encode_sentences(model, [a for a, _ in split.test], 1, 2, 8) *
                                       encode_sentences(model, [ho.pool_ids[i] for i in ho.pair_pool], 1, 2, 8)
                                       ).sum(-1).numpy(), atol=1e-5)


def test_saved_runs_load_back_and_a_changed_file_is_refused(tmp_path):
    from kexue.data import DataError
    from kexue.simbert import load_runs, save_runs
    result = {"config": {"steps": 3}, "runs": [{"key": "joint", "seed": 0, "history": [{"step": 1, "loss": 2.0}]}],
              "arrays": {"joint/0/pair_rr": np.array([1.0, 0.5]), "pair_book": np.array(["A", "B"])}}
    folder = save_runs(result, tmp_path / "runs")
    config, runs, arrays = load_runs(folder)
    assert config == {"steps": 3} and runs == result["runs"]
    assert np.array_equal(arrays["joint/0/pair_rr"], [1.0, 0.5]) and arrays["pair_book"].tolist() == ["A", "B"]
    (folder / "runs.json").write_text((folder / "runs.json").read_text().replace("3", "4"))
    with pytest.raises(DataError, match="runs.json: SHA-256 differs"):
        load_runs(folder)
    with pytest.raises(DataError, match="no trained runs"):
        load_runs(tmp_path / "nothing")


def test_the_rerun_judges_the_other_half():
    """kexue.verify shifts the seed by SEED_OFFSET: that rerun must judge the half the chapter's run does not."""
    from kexue.simbert import judging_half
    from kexue.verify import SEED_OFFSET
    assert judging_half(0) == 0 and judging_half(0 + SEED_OFFSET) == 1
