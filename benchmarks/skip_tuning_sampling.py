"""Sampler throughput of chapter 03's U-Net, and the wall-clock value of Skip-Tuning's NFE saving.

For each NFE of the chapter's grid, Heun sampling of one batch from the committed EMA U-Net is
timed untuned and skip-tuned (rho_bottom = 0.7), rounds alternating so that drift in machine speed
hits both alike; the figure is the median over rounds, reported as images per second.

Then the headline of the chapter, in seconds: the chapter's `tuned_match_nfe` (the fewest NFE at
which Skip-Tuning matches the untuned sampler at the baseline NFE, from
`reports/03_skip_tuning/metrics.json`) against the baseline NFE, both timed here side by side. The
ratio of their times is the wall-clock speed-up; it differs from the NFE ratio only by the
per-sample cost outside the network (noise, sampler arithmetic), which this measures.

    python benchmarks/skip_tuning_sampling.py --out reports/03_skip_tuning [--rounds 5] [--batch 256]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from kexue.config import ROOT, pick_device
from kexue.diffusion import edm_sigmas, heun_sample, load_unet, skip_scales
from kexue.numerics import device_name

NFE_GRID = (5, 7, 9, 13, 19, 35)       # the chapter's NFE grid


def time_sampling(den, nfe: int, batch: int, device, generator: torch.Generator) -> float:
    """Seconds for one Heun run of `nfe` evaluations on `batch` images (synchronised on CUDA)."""
    sigmas = edm_sigmas((nfe + 1) // 2)
    z = torch.randn(batch, 1, 28, 28, generator=generator).to(device) * float(sigmas[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    heun_sample(den, z, sigmas)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    for name in ("rounds", "batch", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}={getattr(args, name)}: must be >= 1")
    metrics_path = ROOT / "reports" / "03_skip_tuning" / "metrics.json"
    if not metrics_path.exists():
        ap.error(f"{metrics_path} is missing: run the 03_skip_tuning stage first")
    chapter = json.loads(metrics_path.read_text())
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    den = load_unet(device=device)
    den.net.to(memory_format=torch.channels_last)              # as the chapter samples
    baseline_nfe, match_nfe = int(NFE_GRID[-1]), int(chapter["tuned_match_nfe"])
    untuned_nfe = int(chapter.get("untuned_match_nfe", baseline_nfe))
    g = torch.Generator().manual_seed(0)
    times = {(nfe, arm): [] for nfe in NFE_GRID for arm in ("untuned", "tuned")}
    with torch.no_grad():
        time_sampling(den, 3, args.batch, device, g)                          # warm-up
        for _ in range(args.rounds):
            for nfe in NFE_GRID:
                for arm in ("untuned", "tuned"):
                    den.net.skip_scales = None if arm == "untuned" else skip_scales(den.net.n_skips, 1.0, 0.7)
                    times[(nfe, arm)].append(time_sampling(den, nfe, args.batch, device, g))
        # The memory format the chapter picks: the same network with contiguous (NCHW) weights, side by side.
        layout = {"channels_last": [], "contiguous": []}
        for _ in range(args.rounds):
            for name, fmt in (("channels_last", torch.channels_last), ("contiguous", torch.contiguous_format)):
                den.net.to(memory_format=fmt)
                layout[name].append(time_sampling(den, 9, args.batch, device, g))
        den.net.to(memory_format=torch.channels_last)
    den.net.reset_knobs()
    rows = []
    for nfe in NFE_GRID:
        med = {arm: statistics.median(times[(nfe, arm)]) for arm in ("untuned", "tuned")}
        rows.append({"nfe": nfe, "images_per_s_untuned": args.batch / med["untuned"],
                     "images_per_s_tuned": args.batch / med["tuned"], "tuned_over_untuned_time": med["tuned"] / med["untuned"]})
    by = {r["nfe"]: r for r in rows}
    # What tuning buys in time: skip-tuned sampling at the NFE where it matches the baseline against untuned
    # sampling at the NFE where *it* matches (both from the chapter's rule), timed side by side here.
    wall = (by[match_nfe]["images_per_s_tuned"] / by[untuned_nfe]["images_per_s_untuned"]
            if match_nfe in by and untuned_nfe in by else None)
    results = {"device": device_name(device), "torch": torch.__version__, "threads": args.threads, "batch": args.batch,
               "rounds": args.rounds, "rows": rows, "baseline_nfe": baseline_nfe, "tuned_match_nfe": match_nfe,
               "untuned_match_nfe": untuned_nfe, "nfe_speedup_of_tuning": untuned_nfe / match_nfe,
               "untuned_nfe_ratio": baseline_nfe / untuned_nfe, "wall_clock_speedup_of_tuning": wall,
               "ratio_meaning": ("wall_clock_speedup_of_tuning: images/s of skip-tuned sampling at the NFE where it "
                                 "matches the baseline over images/s of untuned sampling at the NFE where it matches; "
                                 "untuned_nfe_ratio: baseline NFE over the untuned sampler's, a property of the "
                                 "sampler, not of Skip-Tuning"),
               "channels_last_speedup_9nfe": statistics.median(layout["contiguous"]) / statistics.median(layout["channels_last"])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Sampler throughput ({results['device']}, torch {results['torch']}, {args.threads} threads, "
             f"batch {args.batch}, median of {args.rounds} rounds)", "",
             "| NFE | images/s untuned | images/s skip-tuned | time tuned / untuned |", "|---|---|---|---|"]
    lines += [f"| {r['nfe']} | {r['images_per_s_untuned']:.0f} | {r['images_per_s_tuned']:.0f} | "
              f"{r['tuned_over_untuned_time']:.3f} |" for r in rows]
    lines += ["", f"Weights and activations in channels_last layout (the chapter's choice) sample "
                  f"{results['channels_last_speedup_9nfe']:.2f}× as fast as in the contiguous (NCHW) layout (9 NFE, same run)."]
    lines += ["", f"Chapter 03 matches the {baseline_nfe}-NFE baseline with Skip-Tuning at {match_nfe} NFE and without "
                  f"it at {untuned_nfe} NFE. Speed-up of Skip-Tuning: {untuned_nfe / match_nfe:.2f}× in NFE, "
                  + (f"{wall:.2f}× in wall-clock (skip-tuned at {match_nfe} NFE against untuned at {untuned_nfe}, "
                     "timed here)" if wall else "n/a in wall-clock")
                  + f". The untuned sampler alone needs {baseline_nfe / untuned_nfe:.2f}× fewer NFE than the "
                    "baseline: a property of the sampler, not of Skip-Tuning."]
    (args.out / "benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
