"""Do the CPU-ISA pins of kexue.numerics make CPU runs agree bitwise, and what do they cost?

Each setting runs in a fresh subprocess (the variables are read once, at the
first use of each library), with `torch.set_num_threads` fixed and seed 0:
30 Adam steps of kexue.nets.SmallCNN (conv: oneDNN, linear: MKL sgemm, the
rest: ATen) and 30 Adam steps of a 2-layer MLP (MKL sgemm + ATen) on fixed
random data.  The first run gives the result (final loss, SHA-256 of the
parameters' bytes); for the native, reference and 1-thread settings the
workload runs `--repeats` times in the process and every run must reproduce
it bitwise.  Step times: median and lower quartile over the timed steps
(steps 4-30 of each run); on a shared machine the lower quartile is the
steadier figure, as the median takes in other jobs' bursts.  A 4M-element
`sum()` probes ATen's thread-split reductions.  A last, untimed step runs
with MKL's and oneDNN's verbose mode on to record which kernels ran (oneDNN
ISA and convolution kernel, MKL CNR branch).

Settings emulate CPUs of other generations on this one by capping each
library's ISA, and compare everything with the pinned reference (full pin set,
2 threads).  Timings are relative to the unpinned run, on a shared machine:
read them as rough.

    python benchmarks/cpu_numerics.py --out reports/cpu_numerics
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from kexue.numerics import FULL_PIN_ENV, PINNED_ENV, RELATED_ENV, pin_cpu_numerics  # noqa: E402  (no torch import)

ALL_VARS = (*FULL_PIN_ENV, *RELATED_ENV)
STEPS = 30


# --------------------------------------------------------------------------- worker (subprocess)

def _workload(torch, threads: int) -> dict:
    """Both trainings from seed 0; returns losses, parameter bytes, per-step times."""
    import torch.nn as nn
    import torch.nn.functional as F
    from kexue.nets import SmallCNN

    out = {}
    g = torch.Generator().manual_seed(0)
    data = {
        "cnn": (torch.randn(256, 1, 28, 28, generator=g), torch.randint(0, 10, (256,), generator=g)),
        "mlp": (torch.randn(256, 784, generator=g), torch.randint(0, 10, (256,), generator=g)),
    }
    for name in ("cnn", "mlp"):
        torch.manual_seed(0)
        model = SmallCNN() if name == "cnn" else nn.Sequential(
            nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = data[name]
        order = torch.Generator().manual_seed(1)
        times = []
        for _ in range(STEPS):
            idx = torch.randint(0, len(x), (64,), generator=order)
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        out[name] = {"loss": loss.item(), "params": params.clone(), "times": times[3:]}
    # A plain ATen reduction big enough (> ATen's grain size, 32768) to be split across threads.
    big = torch.randn(4_000_000, generator=torch.Generator().manual_seed(2))
    out["sum4m"] = big.sum().item()
    return out





def _time_sgemm(torch, n: int = 512, reps: int = 15) -> float:
    """Median time of one n x n x n float32 matmul (MKL sgemm): the worst case for MKL_CBWR."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _touch_all_libraries(torch) -> None:
    """One ATen kernel, one MKL sgemm, one oneDNN convolution."""
    a = torch.randn(64, 64)
    (a @ a).exp().sum()
    torch.nn.functional.conv2d(torch.randn(8, 16, 14, 14), torch.randn(32, 16, 3, 3), padding=1)


def worker(args) -> None:
    if args.pin_when == "before-import":
        pin_cpu_numerics(full=True)
    if args.pin_when == "default":
        pin_cpu_numerics()                       # what `import kexue` does
    import torch
    if args.pin_when == "after-first-op":
        _touch_all_libraries(torch)
    if args.pin_when in ("after-import", "after-first-op"):
        pin_cpu_numerics(full=True)
    torch.set_num_threads(args.threads)
    if args.no_onednn:
        torch.backends.mkldnn.enabled = False

    runs = [_workload(torch, args.threads) for _ in range(args.repeats)]
    first = runs[0]
    result = {"capability": torch.backends.cpu.get_cpu_capability(), "runs": len(runs),
              "threads": torch.get_num_threads()}
    for name in ("cnn", "mlp"):
        ref = first[name]["params"]
        result[name] = {
            "loss": first[name]["loss"],
            "sha256": hashlib.sha256(ref.numpy().tobytes()).hexdigest(),
            "repeats_identical": all(torch.equal(r[name]["params"], ref) for r in runs),
            # all timed steps of all runs (3 warm-up steps per run left out)
            "step_ms_median": 1e3 * statistics.median(t for r in runs for t in r[name]["times"]),
            "step_ms_q25": 1e3 * statistics.quantiles([t for r in runs for t in r[name]["times"]], n=4)[0],
        }
        torch.save(ref, Path(args.result).with_suffix(f".{name}.pt"))
    result["sum4m"] = first["sum4m"]
    result["sum4m_repeats_identical"] = all(r["sum4m"] == first["sum4m"] for r in runs)
    result["sgemm512_ms"] = _time_sgemm(torch)
    Path(args.result).write_text(json.dumps(result))
    sys.stdout.flush()
    print("=== verbose probe ===", flush=True)
    with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON), \
            torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        _touch_all_libraries(torch)


# --------------------------------------------------------------------------- driver

def supported_capabilities() -> list[str]:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    caps = ["default"]
    if re.search(r"\bavx2\b", flags):
        caps.append("avx2")
    if re.search(r"\bavx512f\b", flags) and re.search(r"\bavx512bw\b", flags):
        caps.append("avx512")
    return caps


def settings() -> list[dict]:
    """(label, env, threads, pin_when, no_onednn, group) for each run."""
    P = dict(FULL_PIN_ENV)
    s = [dict(label="nothing pinned (native ISA)", env={}, group="a", repeat=True),
         dict(label="kexue's default pins (ATen + oneDNN at AVX2, MKL native): `import kexue`", env={},
              pin_when="default", group="a", repeat=True)]
    for cap in supported_capabilities():
        s.append(dict(label=f"ATEN_CPU_CAPABILITY={cap} only", env={"ATEN_CPU_CAPABILITY": cap}, group="b"))
    s += [
        dict(label="ONEDNN_MAX_CPU_ISA=AVX2 only", env={"ONEDNN_MAX_CPU_ISA": "AVX2"}, group="b"),
        dict(label="MKL_CBWR=COMPATIBLE only", env={"MKL_CBWR": "COMPATIBLE"}, group="b"),
        dict(label="ATen avx2 + oneDNN AVX2, MKL native (what an AVX2-only CPU runs unpinned)",
             env={"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, group="b"),
        dict(label="**full pin set, 2 threads (reference)**: pin_cpu_numerics() before import torch",
             env={}, pin_when="before-import", group="c", repeat=True),
        dict(label="full pin set via pin_cpu_numerics() after import torch", env={},
             pin_when="after-import", group="c"),
        dict(label="full pin set via pin_cpu_numerics() after first op", env={},
             pin_when="after-first-op", group="c"),
        dict(label="full pin set but MKL_CBWR=AVX2", env={**P, "MKL_CBWR": "AVX2"}, group="c"),
    ]
    for key in FULL_PIN_ENV:
        if key == "MKL_CBWR":
            continue    # = the "ATen avx2 + oneDNN AVX2" row above
        s.append(dict(label=f"full pin set without {key}",
                      env={k: v for k, v in P.items() if k != key}, group="c"))
    s += [
        dict(label="full pin set + torch.backends.mkldnn.enabled=False", env=P, no_onednn=True, group="c"),
        dict(label="nothing pinned, 1 thread", env={}, threads=1, group="d", repeat=True),
        dict(label="full pin set, 1 thread", env=P, threads=1, group="d", repeat=True),
    ]
    for d in s:
        d.setdefault("threads", 2)
        d.setdefault("pin_when", "none")
        d.setdefault("no_onednn", False)
        d.setdefault("repeat", False)
    return s


def parse_verbose(text: str) -> dict:
    isa = re.search(r"onednn_verbose,.*?info,cpu,isa:([^\n]*)", text)
    conv = sorted(set(re.findall(r"exec,cpu,convolution,([^,]+),", text)))
    cnr = sorted(set(re.findall(r"CNR:([A-Z0-9_,]+?)\s", text)))
    return {"onednn_isa": isa.group(1).strip() if isa else "(oneDNN not used)",
            "onednn_conv": conv, "mkl_cnr": cnr}


def run_setting(st: dict, repeats: int, tmp: Path, i: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ALL_VARS}
    env.update(st["env"])
    env["KEXUE_CPU_PINS"] = "0"          # importing kexue must not pin: each row sets its own variables
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    result = tmp / f"r{i}.json"
    cmd = [sys.executable, __file__, "--worker", "--result", str(result), "--threads", str(st["threads"]),
           "--repeats", str(repeats), "--pin-when", st["pin_when"]] + (["--no-onednn"] if st["no_onednn"] else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{st['label']}: worker failed\n{proc.stderr[-3000:]}")
    r = json.loads(result.read_text())
    r.update(parse_verbose(proc.stdout.split("=== verbose probe ===", 1)[-1]))
    r["wall_s"] = time.perf_counter() - t0
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--repeats", type=int, default=2,
                    help="in-process runs of the workload for the native, reference and 1-thread settings "
                         "(the others run it once)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--pin-when", default="none", help=argparse.SUPPRESS,
                    choices=["none", "default", "before-import", "after-import", "after-first-op"])
    ap.add_argument("--no-onednn", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.out is None:
        ap.error("--out is required")

    import torch

    from kexue.numerics import cpu_numerics_info
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    sts = settings()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        rows = []
        for i, st in enumerate(sts):
            r = run_setting(st, args.repeats if st["repeat"] else 1, tmp, i)
            for name in ("cnn", "mlp"):
                r[name]["params"] = torch.load((tmp / f"r{i}.json").with_suffix(f".{name}.pt"))
            rows.append((st, r))
            print(f"[{time.perf_counter() - t_start:5.0f} s] {st['label']}: cnn {r['cnn']['sha256'][:12]} "
                  f"mlp {r['mlp']['sha256'][:12]} {r['capability']} {r['onednn_conv']} {r['mkl_cnr']}",
                  flush=True)
    ref = next(r for st, r in rows if "reference" in st["label"])
    base = rows[0][1]
    table = []
    for st, r in rows:
        row = {"setting": st["label"], "group": st["group"], "env": st["env"], "threads": st["threads"],
               "pin_when": st["pin_when"], "onednn_disabled": st["no_onednn"], "runs": r["runs"],
               "aten_capability": r["capability"], "onednn_isa": r["onednn_isa"],
               "onednn_conv_impl": r["onednn_conv"], "mkl_cnr": r["mkl_cnr"], "wall_s": round(r["wall_s"], 1),
               "sum4m": r["sum4m"], "sum4m_equal_ref": r["sum4m"] == ref["sum4m"],
               "sum4m_repeats_identical": r["sum4m_repeats_identical"],
               "sgemm512_ms": r["sgemm512_ms"], "sgemm512_rel_unpinned": r["sgemm512_ms"] / base["sgemm512_ms"]}
        for name in ("cnn", "mlp"):
            diff = (r[name]["params"] - ref[name]["params"]).abs().max().item()
            row[name] = {
                "final_loss": r[name]["loss"], "sha256": r[name]["sha256"],
                "max_abs_param_diff_vs_ref": diff,
                "bitwise_equal_ref": r[name]["sha256"] == ref[name]["sha256"],
                "repeats_identical": r[name]["repeats_identical"],
                "step_ms_median": r[name]["step_ms_median"], "step_ms_q25": r[name]["step_ms_q25"],
                "rel_unpinned_median": r[name]["step_ms_median"] / base[name]["step_ms_median"],
                "rel_unpinned_q25": r[name]["step_ms_q25"] / base[name]["step_ms_q25"],
            }
        table.append(row)

    info = cpu_numerics_info()
    findings = summarize(rows, table)
    report = {"workload": f"seed 0; {STEPS} Adam steps (lr 1e-3, batch 64 of 256 random samples) of "
                          f"kexue.nets.SmallCNN on 1x28x28 and of MLP 784-256-10 (tanh); "
                          f"{args.repeats} in-process repeats per setting; plus `x.sum()` of 4M randn floats",
              "reference": "full pin set (kexue.numerics.FULL_PIN_ENV: the default pins plus MKL_CBWR), 2 threads",
              "pinned_env": FULL_PIN_ENV, "machine": info, "rows": table, "findings": findings,
              "total_wall_s": round(time.perf_counter() - t_start, 1),
              "loadavg_1min_start_end": [load_start[0], os.getloadavg()[0]], "cpus": os.cpu_count()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_numerics.json").write_text(json.dumps(report, indent=1))
    (args.out / "cpu_numerics.md").write_text(markdown(report))
    print(markdown(report))


def summarize(rows: list, table: list) -> list[str]:
    """Plain-sentence findings: ISA effect, agreement under the pins, threads, cost."""
    import torch

    by = {st["label"]: (st, r, t) for (st, r), t in zip(rows, table)}

    def pick(prefix):
        return next(v for k, v in by.items() if k.startswith(prefix))

    def compare(a, b) -> str:
        """Max |Δ| of the final parameters of both nets between two settings."""
        parts = []
        for n in ("cnn", "mlp"):
            pa, pb = a[1][n]["params"], b[1][n]["params"]
            parts.append(f"{n.upper()} max |Δ| {(pa - pb).abs().max().item():.2e}"
                         + (" (bitwise equal)" if torch.equal(pa, pb) else ""))
        return ", ".join(parts)

    native, avx2cpu = pick("nothing pinned (native"), pick("ATen avx2 + oneDNN AVX2")
    ref, ref1 = pick("**full pin set, 2 threads"), pick("full pin set, 1 thread")
    nat1 = pick("nothing pinned, 1 thread")
    out = []
    out.append(f"Unpinned, this CPU ({native[1]['capability']}) against what an AVX2-only CPU runs "
               f"(ATen avx2, oneDNN AVX2): {compare(native, avx2cpu)}.")
    pinned = [v for k, v in by.items() if k.startswith(("**full pin set", "full pin set via pin_cpu_numerics() "
                                                         "after import", "full pin set, 1 thread"))]
    all_eq = all(v[2]["cnn"]["bitwise_equal_ref"] and v[2]["mlp"]["bitwise_equal_ref"] for v in pinned)
    out.append(f"With the full pin set in effect ({len(pinned)} runs: pinned before import torch, after import "
               f"torch, 1 thread): parameters of both nets bitwise equal to the reference: "
               f"{'yes' if all_eq else 'NO'}.")
    partial = [v for k, v in by.items() if k.startswith(("full pin set without", "full pin set but",
                                                          "ATen avx2 + oneDNN AVX2", "full pin set via "
                                                          "pin_cpu_numerics() after first op"))]
    for st, r, t in partial:
        nets = [n.upper() for n in ("cnn", "mlp") if not t[n]["bitwise_equal_ref"]]
        out.append(f"Partial or late pinning, '{st['label']}': differs from the reference in "
                   f"{' and '.join(nets) if nets else 'nothing'}.")
    for pair, what in (((native, nat1), "unpinned"), ((ref, ref1), "pinned")):
        out.append(f"Threads, {what}, 2 vs 1: {compare(*pair)}; 4M-element sum "
                   f"{'equal' if pair[0][1]['sum4m'] == pair[1][1]['sum4m'] else 'differs'} "
                   f"({pair[0][1]['sum4m']!r} vs {pair[1][1]['sum4m']!r}).")
    out.append(f"Cost of the pins (reference vs unpinned, 2 threads, median / lower quartile of step time): "
               f"CNN {ref[2]['cnn']['rel_unpinned_median']:.2f}x / {ref[2]['cnn']['rel_unpinned_q25']:.2f}x, "
               f"MLP {ref[2]['mlp']['rel_unpinned_median']:.2f}x / {ref[2]['mlp']['rel_unpinned_q25']:.2f}x, "
               f"one 512³ sgemm {ref[2]['sgemm512_rel_unpinned']:.2f}x "
               f"({native[1]['sgemm512_ms']:.2f} ms unpinned, {ref[1]['sgemm512_ms']:.2f} ms pinned).")
    return out


def markdown(rep: dict) -> str:
    m = rep["machine"]
    lines = [
        "# CPU numerics: ISA pins and bitwise agreement",
        "",
        f"Machine: {m['cpu_model']}, {m['machine']}, flags {' '.join(m['cpu_flags'])}; "
        f"torch {m['torch']}, native ATen capability of the driver process: {m['cpu_capability']}.",
        f"Workload: {rep['workload']}.",
        f"Reference: {rep['reference']}: " + ", ".join(f"`{k}={v}`" for k, v in rep["pinned_env"].items()) + ".",
        "Max |Δ| is the largest absolute difference of any parameter from the reference after the last step; "
        "'=ref' is bitwise equality of all parameters; 'rep': were the in-process runs bitwise identical "
        "('-' where the workload ran once); 'sum' is `x.sum()` of 4M floats (=ref?); time is the per-step "
        "time relative to 'nothing pinned', median / lower quartile over the timed steps (steps 4-30 of each run). "
        f"Machine load (1-min load average, {rep['cpus']} CPUs) was {rep['loadavg_1min_start_end'][0]:.1f} at the "
        f"start and {rep['loadavg_1min_start_end'][1]:.1f} at the end: timings are rough.",
        "",
        "| | setting | ATen | oneDNN conv | MKL CNR | CNN loss | CNN max \\|Δ\\| | CNN =ref | "
        "MLP loss | MLP max \\|Δ\\| | MLP =ref | sum =ref | rep | CNN time (med / q25) | MLP time (med / q25) | "
        "sgemm 512³ time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    yn = {True: "yes", False: "no"}
    for r in rep["rows"]:
        c, p = r["cnn"], r["mlp"]
        conv = ", ".join(r["onednn_conv_impl"]) or "(ATen)"
        rep_ok = yn[c["repeats_identical"] and p["repeats_identical"] and r["sum4m_repeats_identical"]] \
            if r["runs"] > 1 else "-"
        lines.append(
            f"| {r['group']} | {r['setting']} | {r['aten_capability']} | {conv} | {', '.join(r['mkl_cnr'])} | "
            f"{c['final_loss']:.9f} | {c['max_abs_param_diff_vs_ref']:.2e} | {yn[c['bitwise_equal_ref']]} | "
            f"{p['final_loss']:.9f} | {p['max_abs_param_diff_vs_ref']:.2e} | {yn[p['bitwise_equal_ref']]} | "
            f"{yn[r['sum4m_equal_ref']]} | "
            f"{rep_ok} | "
            f"{c['rel_unpinned_median']:.2f}x / {c['rel_unpinned_q25']:.2f}x | "
            f"{p['rel_unpinned_median']:.2f}x / {p['rel_unpinned_q25']:.2f}x | {r['sgemm512_rel_unpinned']:.2f}x |")
    lines += ["", "Findings computed from the rows above:", ""]
    lines += [f"- {f}" for f in rep["findings"]]
    lines += ["", f"Total wall time {rep['total_wall_s']} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
