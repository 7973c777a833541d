"""Time and memory of one full D+G update: single loss vs alternating vs simultaneous.

Measured side by side in one run, on the networks of chapter 01 (the 2-D MLPs and
the DCGAN pair for 28x28 images). Each round times every method once (in forward
order on even rounds, reversed on odd ones, so drift does not favour one method);
the speed-up of a method is alternating's time / the method's time *within the
same round*, a paired ratio per round, summarised by its geometric mean and a 95%
t-interval over rounds (`kexue.verdicts.ratio_interval`). The chapter judges "it saves
time" from that interval, for the device named in `benchmark.json`. Memory is the bytes autograd saves for backward
during one update, counted with `torch.autograd.graph.saved_tensors_hooks` (the
activation memory; device-independent), plus `torch.cuda.max_memory_allocated`
on a GPU.

    python benchmarks/gan_update.py --out reports/01_single_loss_gan
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import weakref
from pathlib import Path

import torch

from kexue.config import pick_device
from kexue.numerics import device_name
from kexue.gan import METHODS, DCDiscriminator, DCGenerator, GANTrainer, MLPDiscriminator, MLPGenerator, gan_adam
from kexue.verdicts import ratio_interval


class _Saved:
    """What autograd keeps for backward, wrapped so that we notice when it is freed."""
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


def saved_bytes(trainer: GANTrainer, x: torch.Tensor, z: torch.Tensor) -> tuple[int, int]:
    """(peak, total) bytes of tensors saved for backward during one update.

    A tensor counts from when autograd saves it until its graph is freed (after its
    backward), so alternating's two graphs are not held at the same time.
    """
    held = peak = total = 0
    live: dict[int, list[int]] = {}          # storage pointer -> [bytes, references]

    def release(ptr):
        nonlocal held
        live[ptr][1] -= 1
        if live[ptr][1] == 0:
            held -= live.pop(ptr)[0]

    def pack(t):
        nonlocal held, peak, total
        box = _Saved(t)
        if isinstance(t, torch.nn.Parameter):        # weights exist anyway: no extra memory
            return box
        ptr = t.untyped_storage().data_ptr()
        if ptr in live:                             # the same activation saved by two ops
            live[ptr][1] += 1
        else:
            n = t.untyped_storage().nbytes()
            live[ptr] = [n, 1]
            held, total = held + n, total + n
            peak = max(peak, held)
        weakref.finalize(box, release, ptr)
        return box

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
        trainer.step(x, z)
    return peak, total


def bench(name: str, make_g, make_d, x_shape, z_dim: int, batch: int, device, steps: int, rounds: int) -> dict:
    x = torch.randn(batch, *x_shape, device=device)
    z = torch.randn(batch, z_dim, device=device)
    trainers = {}
    for method in METHODS:
        torch.manual_seed(0)
        G, D = make_g().to(device), make_d().to(device)
        trainers[method] = GANTrainer(G, D, method, gan_adam(), 1e-4)
        for _ in range(3):
            trainers[method].step(x, z)                    # warm-up
    times = {m: [] for m in METHODS}
    order = list(trainers)
    for k in range(rounds):
        for m in (order if k % 2 == 0 else order[::-1]):
            tr = trainers[m]
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                tr.step(x, z)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[m].append((time.perf_counter() - t0) / steps)
    rows = []
    for m, tr in trainers.items():
        peak, total = saved_bytes(tr, x, z)
        per_round = [a / b for a, b in zip(times["alternating"], times[m])]      # paired within a round
        geo, lo, hi, _ = ratio_interval(per_round, level=0.95)
        row = {"method": m, "update_ms": statistics.median(times[m]) * 1e3,
               "speedup_vs_alternating": geo, "speedup_ci95": [lo, hi], "speedup_per_round": per_round,
               "update_ms_per_round": [t * 1e3 for t in times[m]],
               "saved_for_backward_peak_MiB": peak / 2**20, "saved_for_backward_total_MiB": total / 2**20}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            tr.step(x, z)
            torch.cuda.synchronize()
            row["cuda_max_allocated_MiB"] = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row)
    alt = next(r for r in rows if r["method"] == "alternating")
    for r in rows:
        r["peak_memory_ratio_vs_alternating"] = r["saved_for_backward_peak_MiB"] / alt["saved_for_backward_peak_MiB"]
    return {"name": name, "batch": batch, "rounds": rounds, "steps_per_round": steps, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    results = {
        "device": device_name(device),
        "torch": torch.__version__, "threads": args.threads,
        "models": [
            # The chapter's sizes (params.yaml gan: toy_hidden 64, toy_batch 128; image_width 16, image_batch 64).
            bench("2-D MLPs (3x64 hidden)", lambda: MLPGenerator(2, 64), lambda: MLPDiscriminator(2, 64),
                  (2,), 2, 128, device, steps=50, rounds=args.rounds),
            bench("DCGAN 28x28 (width 16)", lambda: DCGenerator(64, 16), lambda: DCDiscriminator(16),
                  (1, 28, 28), 64, 64, device, steps=10, rounds=args.rounds),
        ],
    }
    lines = [f"# One D+G update ({results['device']}, torch {results['torch']}, {args.threads} threads)", "",
             f"Median time per update over {args.rounds} rounds; speed-up = alternating's time / the method's "
             "within each round: geometric mean [95% t-interval over rounds]; memory = bytes saved for backward "
             "(peak held at once, and total over the update).", ""]
    for m in results["models"]:
        lines += [f"## {m['name']}, batch {m['batch']}", "",
                  "| method | update (ms) | speed-up vs alternating | saved peak (MiB) | peak ratio vs alternating |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['update_ms']:.2f} | {r['speedup_vs_alternating']:.2f}x "
                  f"[{r['speedup_ci95'][0]:.2f}, {r['speedup_ci95'][1]:.2f}] | "
                  f"{r['saved_for_backward_peak_MiB']:.2f} | {r['peak_memory_ratio_vs_alternating']:.2f}x |"
                  for r in m["rows"]]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "benchmark.md").write_text(text)


if __name__ == "__main__":
    main()
