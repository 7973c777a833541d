"""Optimizer step time: AdaX against torch.optim.Adam, side by side, in three implementation styles.

Same parameters, same (fixed, random) gradients; only `opt.step()` is timed. Rounds alternate
between the optimizers so that drift in machine speed hits all alike; the step time reported is the
median over rounds, and each ratio the geometric mean over rounds of the per-round ratio with a 95%
t interval on the logarithms (`kexue.verdicts.ratio_interval`).

What the ratio measures: AdaX's step time over Adam's **written the same way** (per-tensor loop
vs per-tensor loop, one `foreach` call per operation vs the same), i.e. the cost of the update
rule, not of how the loop is written (a per-tensor Adam can be as fast as a foreach one on a CPU).
Adam(fused=True) has no AdaX counterpart; it is listed with the ratio of every optimizer to the
fastest Adam of the run.

Share of a training step (SmallCNN only): forward + backward + `opt.step()` are timed within the
same iterations, and the share is the step's time summed over those iterations divided by the
iterations' summed time, so it is at most 100% by construction, whatever else runs on the machine.

AdaX(fused=True) runs the same update through PyTorch's fused Adam kernel (kexue.optim.AdaX's
docstring); its ratio is to Adam(fused=True), measured side by side in the same rounds.

    python benchmarks/adax_step_time.py --out reports/04_adax [--rounds 7] [--threads 2] [--device auto]
    python benchmarks/adax_step_time.py --out build/bench --models transformer --no-training-share   # quick
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import kexue

kexue.pin_entry_point()      # the CPU pins, before the first tensor operation (KEXUE_CPU_PINS=0: native)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kexue.config import pick_device  # noqa: E402
from kexue.nets import SmallCNN  # noqa: E402
from kexue.numerics import device_name  # noqa: E402
from kexue.optim import AdaX  # noqa: E402
from kexue.verdicts import ratio_interval  # noqa: E402


def transformer_shaped(d: int = 384, blocks: int = 6) -> nn.Module:
    """Parameter shapes of a small transformer (no forward needed): about 10.6M at d=384."""
    layers = []
    for _ in range(blocks):
        layers += [nn.Linear(d, 3 * d), nn.Linear(d, d), nn.LayerNorm(d),
                   nn.Linear(d, 4 * d), nn.Linear(4 * d, d), nn.LayerNorm(d)]
    return nn.Sequential(*layers)


# name -> (style, factory). The style pairs each AdaX with the Adam written the same way.
OPTIMIZERS = {
    "Adam(fused=True)": ("fused", lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True)),
    "Adam(foreach=True)": ("foreach", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True)),
    "Adam(foreach=False), per tensor": ("per-tensor", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=False)),
    "AdaX(foreach=True)": ("foreach", lambda ps: AdaX(ps, lr=1e-3, foreach=True)),
    "AdaX(foreach=False), per tensor": ("per-tensor", lambda ps: AdaX(ps, lr=1e-3, foreach=False)),
    "AdaX (default; on CPU foreach in 1 MiB chunks)": ("chunked", lambda ps: AdaX(ps, lr=1e-3)),
    "AdaX(fused=True)": ("fused", lambda ps: AdaX(ps, lr=1e-3, fused=True)),
}
MODELS = {
    "cnn": ("SmallCNN(width=16)", lambda: SmallCNN(16), 200),
    "transformer": ("transformer-shaped, d=384, 6 blocks", lambda: transformer_shaped(), 10),
}
SAME_STYLE_ADAM = {"foreach": "Adam(foreach=True)", "per-tensor": "Adam(foreach=False), per tensor",
                   "fused": "Adam(fused=True)", "chunked": "Adam(foreach=True)"}
RATIO_MEANING = ("Ratio = AdaX's step time / Adam's written the same way (foreach vs foreach, per tensor vs "
                 "per tensor; AdaX's chunked default vs Adam(foreach=True); AdaX(fused=True) vs Adam(fused=True)), "
                 "measured in the same rounds: the cost of the update rule. 'time / fastest Adam' divides by the "
                 "fastest of Adam's three implementations here (usually the fused kernel): what switching from the "
                 "best Adam costs. Each ratio is the geometric mean over rounds of the per-round ratio, with its 95% "
                 "t interval (on the logarithms).")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def usable(name: str, device: torch.device) -> bool:
    try:
        p = nn.Parameter(torch.zeros(2, device=device))
        p.grad = torch.ones_like(p)
        OPTIMIZERS[name][1]([p]).step()
        return True
    except (RuntimeError, ValueError):
        return False


def bench_model(model: nn.Module, device: torch.device, steps: int, rounds: int) -> dict:
    model = model.to(device)
    runs = {}
    for name, (_, make) in OPTIMIZERS.items():
        if not usable(name, device):
            continue
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
    med = {name: statistics.median(times) for name, (_, times) in runs.items()}
    adams = {n: t for n, t in med.items() if n.startswith("Adam(")}
    if not adams:
        raise SystemExit("no Adam among the optimizers measured: the ratios need one")
    fastest = min(adams, key=adams.get)
    times = {name: ts for name, (_, ts) in runs.items()}

    def per_round(name, ref):
        # one ratio per round (the two were timed in the same round): the geometric mean and its 95% t interval
        g, lo, hi, _ = ratio_interval([a / b for a, b in zip(times[name], times[ref])], level=0.95)
        return g, lo, hi

    nan3 = (float("nan"),) * 3
    rows = []
    for name, t in med.items():
        style = OPTIMIZERS[name][0]
        ref = SAME_STYLE_ADAM[style]
        same = per_round(name, ref) if not name.startswith("Adam(") and ref in med else nan3
        fast = per_round(name, fastest)
        rows.append({"optimizer": name, "style": style, "step_ms": t * 1e3,
                     "ratio_same_style": same[0], "ratio_same_style_ci95": list(same[1:]),
                     "same_style_adam": ref, "ratio_to_fastest_adam": fast[0], "ratio_to_fastest_adam_ci95": list(fast[1:])})
    return {"n_params": sum(p.numel() for p in model.parameters()), "n_tensors": len(list(model.parameters())),
            "fastest_adam": fastest, "rows": rows}


def training_share(device: torch.device, iters: int, rounds: int, width: int = 16, batch: int = 128) -> list[dict]:
    """Share of one SmallCNN training iteration (forward, backward, step) spent in `opt.step()`,
    both timed inside the same iterations (so the share cannot exceed 100%)."""
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1)).to(device)
    out = []
    for name, (_, make) in OPTIMIZERS.items():
        if not usable(name, device):
            continue
        torch.manual_seed(0)
        model = SmallCNN(width).to(device)
        opt = make(list(model.parameters()))
        step_t = total_t = 0.0
        for r in range(rounds + 1):
            for _ in range(iters):
                sync(device)
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                sync(device)
                t1 = time.perf_counter()
                opt.step()
                sync(device)
                t2 = time.perf_counter()
                if r > 0:                              # round 0: warm-up
                    step_t += t2 - t1
                    total_t += t2 - t0
        out.append({"optimizer": name, "iteration_ms": 1e3 * total_t / (rounds * iters),
                    "step_share": step_t / total_t})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS),
                    help="which models' step times to measure (default: all)")
    ap.add_argument("--no-training-share", action="store_true", help="skip the SmallCNN training-share table")
    ap.add_argument("--optimizers", nargs="+", metavar="NAME", choices=sorted(OPTIMIZERS),
                    help="measure only these (default: all); e.g. 'Adam(fused=True)' 'AdaX(fused=True)'")
    args = ap.parse_args()
    if args.optimizers:
        for name in set(OPTIMIZERS) - set(args.optimizers):
            del OPTIMIZERS[name]
    if args.rounds < 1:
        ap.error(f"--rounds={args.rounds}: must be >= 1")
    if args.threads < 1:
        ap.error(f"--threads={args.threads}: must be >= 1")
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    results = {
        "device": device_name(device),
        "torch": torch.__version__, "threads": args.threads, "machine": platform.machine(),
        "ratio_meaning": RATIO_MEANING,
        "models": {MODELS[k][0]: bench_model(MODELS[k][1](), device, steps=MODELS[k][2], rounds=args.rounds)
                   for k in args.models},
        "training_share": ({} if args.no_training_share else
                           {"SmallCNN(width=16), batch 128": training_share(device, 50, args.rounds)}),
    }
    lines = [f"# Optimizer step time ({results['device']}, torch {results['torch']}, "
             f"{args.threads} threads)", "", "Median over rounds of the time of one `opt.step()`.", "",
             RATIO_MEANING, ""]
    for model, r in results["models"].items():
        lines += [f"## {model}: {r['n_params']:,} parameters in {r['n_tensors']} tensors", "",
                  "| optimizer | step (ms, median) | AdaX / Adam, same style [95% CI] | / fastest Adam [95% CI] |",
                  "|---|---|---|---|"]
        lines += [f"| {row['optimizer']} | {row['step_ms']:.3f} | "
                  + ("" if row['ratio_same_style'] != row['ratio_same_style'] else f"{row['ratio_same_style']:.2f}x "
                     f"[{row['ratio_same_style_ci95'][0]:.2f}, {row['ratio_same_style_ci95'][1]:.2f}] "
                     f"(vs {row['same_style_adam']})")
                  + f" | {row['ratio_to_fastest_adam']:.2f}x [{row['ratio_to_fastest_adam_ci95'][0]:.2f}, "
                    f"{row['ratio_to_fastest_adam_ci95'][1]:.2f}] |"
                  for row in r["rows"]]
        lines.append("")
    for model, rows in results["training_share"].items():
        lines += [f"## Share of a training iteration spent in opt.step(): {model}", "",
                  "Forward, backward and step timed within the same iterations (at most 100% by construction).", "",
                  "| optimizer | iteration (ms) | opt.step() share |", "|---|---|---|"]
        lines += [f"| {row['optimizer']} | {row['iteration_ms']:.3f} | {100 * row['step_share']:.1f}% |"
                  for row in rows]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "benchmark.md").write_text(text)


if __name__ == "__main__":
    main()
