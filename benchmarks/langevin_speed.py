"""Langevin sampling speed: the cost that dominates energy-model training (chapter 02).

Measured side by side in one run, on the energies of chapter 02: the 2-D MLP (one model, and
an ensemble of 6 members evaluated in one batched matmul) and the spectrally normalised CNN
for 28x28 images (one model, and an ensemble of 6 in one grouped convolution). For each: Langevin steps per second for a batch, the split of one step into
the energy's forward pass and the gradient with respect to x (the rest is the update and the
noise), and the share of one training update (K Langevin steps + one loss step) spent
sampling. Rounds alternate between the timed parts; figures are medians.

    python benchmarks/langevin_speed.py --out reports/02_energy_based_model
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from kexue.numerics import device_name

from kexue.config import pick_device
from kexue.ebm import ConvEnergy, EBMTrainer, MLPEnergy, ebm_adam, langevin, uniform_init


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    _sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / repeats


def bench(name, make_energy, x_shape, batch, device, k_steps, repeats, rounds, lo=-1.0, hi=1.0):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    energy = make_energy().to(device)
    members = getattr(energy, "members", 1)
    lead = (batch,) if members == 1 else (members, batch)
    x = (lo + (hi - lo) * torch.rand(lead + x_shape, generator=g)).to(device)
    energy.eval()

    def forward():
        with torch.no_grad():
            energy(x)

    def forward_and_grad():
        xx = x.clone().requires_grad_(True)
        torch.autograd.grad(energy(xx).sum(), xx)

    def one_step():
        langevin(energy, x, 1, 0.005, generator=g)

    trainer = EBMTrainer(energy, ebm_adam(energy.parameters(), 1e-4), uniform_init(x_shape, lo, hi, g, device),
                         k_steps, 0.005, generator=g)
    real = x.clone()

    def update():
        trainer.step(real)

    times = {k: [] for k in ("forward", "forward_and_grad", "langevin_step", "update")}
    for _ in range(rounds):
        times["forward"].append(timed(forward, device, repeats))
        times["forward_and_grad"].append(timed(forward_and_grad, device, repeats))
        times["langevin_step"].append(timed(one_step, device, repeats))
        times["update"].append(timed(update, device, max(1, repeats // k_steps)))
    med = {k: statistics.median(v) for k, v in times.items()}
    step = med["langevin_step"]
    return {"name": name, "batch": batch, "members": members, "k_steps": k_steps,
            "langevin_step_ms": step * 1e3,
            "steps_per_s": 1 / step,
            "sample_steps_per_s": members * batch / step,
            "forward_share_of_step": med["forward"] / step,
            "grad_share_of_step": (med["forward_and_grad"] - med["forward"]) / step,
            "update_ms": med["update"] * 1e3,
            "sampling_share_of_update": k_steps * step / med["update"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    rows = [
        bench("2-D MLP (3x64), 1 model", lambda: MLPEnergy(2, 64), (2,), 128, device, 20, 40, args.rounds, -4, 4),
        bench("2-D MLP (3x64), ensemble of 6", lambda: MLPEnergy(2, 64, members=6), (2,), 128, device, 20, 40,
              args.rounds, -4, 4),
        # chapter 02's image energy (width 16, free output layer); K = 5, the buffer arm's steps per update
        bench("SN-CNN 28x28 (width 16), 1 model", lambda: ConvEnergy(16, normalise_output=False), (1, 28, 28), 32,
              device, 5, 10, args.rounds, 0, 1),
        bench("SN-CNN 28x28 (width 16), ensemble of 3", lambda: ConvEnergy(16, members=3, normalise_output=False),
              (1, 28, 28), 32, device, 5, 10, args.rounds, 0, 1),
    ]
    single, ens = rows[0], rows[1]
    results = {"device": device_name(device),
               "torch": torch.__version__, "threads": args.threads, "rows": rows,
               "ensemble_speedup_per_member": ens["sample_steps_per_s"] / single["sample_steps_per_s"]}
    lines = [f"# Langevin sampling speed ({results['device']}, torch {results['torch']}, {args.threads} threads)", "",
             "Medians over alternating rounds. A step is one gradient of U with respect to x plus the update; "
             "an update is K steps plus one loss step.", "",
             "| energy | batch | step (ms) | steps/s | sample-steps/s | forward share | grad share | "
             "K | update (ms) | sampling share of update |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['batch']} | {r['langevin_step_ms']:.2f} | {r['steps_per_s']:.0f} | "
              f"{r['sample_steps_per_s']:.3g} | {r['forward_share_of_step']:.0%} | {r['grad_share_of_step']:.0%} | "
              f"{r['k_steps']} | {r['update_ms']:.1f} | {r['sampling_share_of_update']:.0%} |" for r in rows]
    lines += ["", f"Ensemble of 6 vs one model, sample-steps per second per member-sample: "
                  f"{results['ensemble_speedup_per_member']:.2f}x", ""]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "benchmark.md").write_text(text)


if __name__ == "__main__":
    main()
