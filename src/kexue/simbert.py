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

This module holds the parts that need no pretrained weights (so they are tested on their own);
the network and the chapter come with `notebooks/05_simbert.py`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["both_orders", "collate", "encode_pair", "seq2seq_loss", "similarity_loss", "unilm_mask"]


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


def similarity_loss(cls: torch.Tensor, scale: float = 30.0) -> torch.Tensor:
    r"""SimBERT's in-batch loss on [2B, d] sentence vectors, rows 2i and 2i+1 partners:
    $\ell = \frac{1}{2B}\sum_r -\log\frac{\exp(s\cos(h_r, h_{r\oplus1}))}{\sum_{c\ne r}\exp(s\cos(h_r, h_c))}$."""
    _check("cls.shape", tuple(cls.shape), cls.ndim == 2 and cls.shape[0] >= 2 and cls.shape[0] % 2 == 0,
           "must be [2B, d] with B >= 1 (rows 2i, 2i+1 are a pair)")
    _check("scale", scale, scale > 0, "must be > 0")
    h = F.normalize(cls, dim=-1)
    logits = scale * h @ h.T                                                # [2B, 2B] scaled cosines
    eye = torch.eye(len(h), dtype=torch.bool, device=h.device)
    logits = logits.masked_fill(eye, float("-inf"))                         # a row is not its own candidate
    partner = torch.arange(len(h), device=h.device) ^ 1                     # 0<->1, 2<->3, ...
    return F.cross_entropy(logits, partner)


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
