"""SimBERT speed on this machine: training tokens/s and generation sentences/s, variants side by side.

all-MiniLM-L6-v2, real verse pairs (the chapter's split and length limit). Training variants, timed
in alternating rounds (so drift in machine speed hits all alike), median seconds per forward +
backward pass (the optimizer update is the same for every variant and left out):

* joint step, output layer over the corpus's tokens (the chapter's default) vs the full 30,522-token
  vocabulary: what the restricted softmax saves;
* similarity-only step on `[CLS] x [SEP]` prefixes (the chapter's arms) vs on full
  `[CLS] a [SEP] b [SEP]` rows: what the prefix invariance saves (the losses agree; tested).

Tokens/s counts the non-padding tokens the step reads. Generation: `generate_similar` for held-out
verses, candidates per verse as in the chapter, sentences (candidates) per second.

    python benchmarks/simbert_speed.py --out reports/05_simbert [--rounds 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from kexue.config import chapter_params
from kexue.data import load_bible_pairs
from kexue.numerics import device_name
from kexue.simbert import (SimBERT, both_orders, collate, corpus_vocab, encode_pair, generate_similar, joint_loss,
                           load_minilm, similarity_loss, split_pairs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        raise SystemExit(f"--rounds={args.rounds}, --threads={args.threads}: both must be >= 1")
    torch.set_num_threads(args.threads)
    p = chapter_params("simbert", overrides={"common": {"scale": "default"}})
    bert, tok, pooler = load_minilm()
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    split = split_pairs(load_bible_pairs(), lambda xs: tok(xs, add_special_tokens=False)["input_ids"],
                        p["max_len"], p["test_every"])
    vocab = corpus_vocab([t for pair in split.train + split.test for t in pair], [sep_id])
    torch.manual_seed(0)
    models = {"corpus": SimBERT(bert, out_vocab=vocab, pooler_state=pooler),
              "full": SimBERT(bert, out_vocab=None, pooler_state=pooler)}
    g = torch.Generator().manual_seed(0)
    B = p["batch_pairs"]
    batches = [[split.train[i] for i in torch.randperm(len(split.train), generator=g)[:B].tolist()]
               for _ in range(args.rounds)]

    def full_rows(pairs):
        return collate([encode_pair(a, b, cls_id, sep_id, p["max_len"]) for a, b in both_orders(pairs)])

    def prefix_rows(pairs):
        return collate([([cls_id, *s, sep_id], [0] * (len(s) + 2)) for pair in pairs for s in pair])

    def step(model, ids, seg, att, kind):
        if kind == "joint":
            loss, _ = joint_loss(model, ids, seg, att, 1.0, 1.0, p["sim_scale"])
        else:
            loss = similarity_loss(model.sentence_vector(model.hidden(ids, seg, att), seg, att), p["sim_scale"])
        model.zero_grad(set_to_none=True)
        loss.backward()

    variants = {  # name -> (model, rows, kind)
        "joint, corpus vocabulary (chapter)": ("corpus", full_rows, "joint"),
        "joint, full vocabulary": ("full", full_rows, "joint"),
        "similarity only, prefixes (chapter)": ("corpus", prefix_rows, "similarity"),
        "similarity only, full rows": ("corpus", full_rows, "similarity"),
    }
    times = {k: [] for k in variants}
    tokens = {k: [] for k in variants}
    for name, (m, rows, kind) in variants.items():        # warm-up
        step(models[m], *rows(batches[0]), kind)
    for r in range(args.rounds):
        for name, (m, rows, kind) in variants.items():
            ids, seg, att = rows(batches[r])
            t0 = time.perf_counter()
            step(models[m], ids, seg, att, kind)
            times[name].append(time.perf_counter() - t0)
            tokens[name].append(int(att.sum()))
    rows_out = []
    base = statistics.median(times["joint, corpus vocabulary (chapter)"])
    for name in variants:
        t = statistics.median(times[name])
        rows_out.append({"variant": name, "seconds_per_step": t, "tokens_per_second": statistics.median(tokens[name]) / t,
                         "time_vs_chapter_joint": t / base})
    # generation
    model = models["corpus"].eval()
    n = p["gen_candidates"]
    gen_times, made = [], 0
    for i in range(8):
        t0 = time.perf_counter()
        c = generate_similar(model, split.test[i][0], cls_id, sep_id, n=n, topk=p["topk"], max_len=p["max_len"],
                             generator=torch.Generator().manual_seed(i))
        gen_times.append(time.perf_counter() - t0)
        made += n
    gen = {"verses": 8, "candidates_per_verse": n, "sentences_per_second": made / sum(gen_times),
           "seconds_per_verse": statistics.median(gen_times)}
    out = {"device": device_name(torch.device("cpu")), "threads": args.threads, "rounds": args.rounds,
           "torch": torch.__version__, "python": platform.python_version(), "batch_pairs": B,
           "max_len": p["max_len"], "output_vocabulary": {"corpus": len(vocab), "full": tok.vocab_size},
           "training": rows_out, "generation": gen}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(out, indent=1) + "\n")
    md = [f"# SimBERT speed ({out['device']}, {args.threads} threads, median of {args.rounds} alternating rounds)", "",
          f"Batch {B} pairs ({2 * B} rows), at most {p['max_len']} tokens a side; output vocabulary "
          f"{len(vocab):,} (corpus) or {tok.vocab_size:,} (full). A step here is the forward and backward pass "
          f"(the optimizer update, the same for all variants, is left out).", "",
          "| training step | s/step | tokens/s | time / chapter's joint step |", "|---|---|---|---|"]
    md += [f"| {r['variant']} | {r['seconds_per_step']:.3f} | {r['tokens_per_second']:.0f} | "
           f"{r['time_vs_chapter_joint']:.2f} |" for r in rows_out]
    md += ["", f"Generation: {gen['sentences_per_second']:.1f} sentences/s ({n} candidates per verse, top-{p['topk']}, "
               f"{gen['seconds_per_verse']:.2f} s per verse, no key-value cache)."]
    (args.out / "benchmark.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
