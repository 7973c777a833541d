"""Optimizer step time: AdaX against torch.optim.Adam(foreach=True), side by side.

Same parameters, same (fixed, random) gradients; only `opt.step()` is timed.
Rounds alternate between the optimizers so that drift in machine speed hits
both alike; the figure reported is the median over rounds of the per-step time.

    python benchmarks/adax_step_time.py --out reports/04_adax
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from kexue.numerics import device_name
import torch.nn as nn

from kexue.config import pick_device
from kexue.nets import SmallCNN
from kexue.optim import AdaX, EMAAdam, beta2_hat_adax


def transformer_shaped(d: int = 384, blocks: int = 6) -> nn.Module:
    """Parameter shapes of a small transformer (no forward needed): about 10.6M at d=384."""
    layers = []
    for _ in range(blocks):
        layers += [nn.Linear(d, 3 * d), nn.Linear(d, d), nn.LayerNorm(d),
                   nn.Linear(d, 4 * d), nn.Linear(4 * d, d), nn.LayerNorm(d)]
    return nn.Sequential(*layers)


OPTIMIZERS = {
    "Adam(foreach=True)": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True),
    "AdaX (default: foreach; on CPU in 1 MiB chunks)": lambda ps: AdaX(ps, lr=1e-3),
    "AdaX(foreach=True)": lambda ps: AdaX(ps, lr=1e-3, foreach=True),
    "AdaX(foreach=False)": lambda ps: AdaX(ps, lr=1e-3, foreach=False),
    "AdaX-W (default)": lambda ps: AdaX(ps, lr=1e-3, weight_decay=1e-2, decoupled_weight_decay=True),
    "Adam(foreach=False)": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=False),
    "EMAAdam(AdaX schedule), per-tensor loop": lambda ps: EMAAdam(
        ps, lr=1e-3, beta2_hat=lambda t: beta2_hat_adax(t, 1e-4), momentum_bias_correction=False),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_model(model: nn.Module, device: torch.device, steps: int, rounds: int) -> dict:
    model = model.to(device)
    runs = {}
    for name, make in OPTIMIZERS.items():
        params = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
        g = torch.Generator(device="cpu").manual_seed(0)
        for prm in params:
            prm.grad = torch.randn(prm.shape, generator=g).to(device) * 1e-2
        opt = make(params)
        for _ in range(3):          # warm-up: allocates state
            opt.step()
        runs[name] = (opt, [])
    for _ in range(rounds):
        for name, (opt, times) in runs.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            sync(device)
            times.append((time.perf_counter() - t0) / steps)
    n_params = sum(p.numel() for p in model.parameters())
    base = statistics.median(runs["Adam(foreach=True)"][1])
    rows = []
    for name, (_, times) in runs.items():
        med = statistics.median(times)
        rows.append({"optimizer": name, "step_ms": med * 1e3, "ratio_to_adam_foreach": med / base})
    return {"n_params": n_params, "n_tensors": len(list(model.parameters())), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    results = {
        "device": device_name(device),
        "torch": torch.__version__, "threads": args.threads, "machine": platform.machine(),
        "models": {
            "SmallCNN(width=16)": bench_model(SmallCNN(16), device, steps=200, rounds=args.rounds),
            "transformer-shaped, d=384, 6 blocks": bench_model(transformer_shaped(), device,
                                                               steps=10, rounds=args.rounds),
        },
    }
    lines = [f"# Optimizer step time ({results['device']}, torch {results['torch']}, "
             f"{args.threads} threads)", "",
             "Median over rounds of the time of one `opt.step()`; ratio to Adam(foreach=True) "
             "measured in the same run.", ""]
    for model, r in results["models"].items():
        lines += [f"## {model}: {r['n_params']:,} parameters in {r['n_tensors']} tensors", "",
                  "| optimizer | step (ms) | ratio to Adam(foreach) |", "|---|---|---|"]
        lines += [f"| {row['optimizer']} | {row['step_ms']:.3f} | {row['ratio_to_adam_foreach']:.2f}x |"
                  for row in r["rows"]]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "benchmark.md").write_text(text)


if __name__ == "__main__":
    main()
