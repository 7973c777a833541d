"""Pin the CPU kernels' instruction set so that CPU runs repeat across machines.

PyTorch's CPU results depend on which kernels run, and three libraries pick
their kernels from the CPU they find:

* ATen's vectorised kernels (elementwise ops, reductions, the optimizer's
  arithmetic) dispatch on ``ATEN_CPU_CAPABILITY`` (default / avx2 / avx512).
  Vector width changes the order of reductions, so the bits change.
* oneDNN (``torch.backends.mkldnn``; it runs ``nn.Conv2d`` on CPU) JIT-compiles
  kernels for the best ISA it finds, capped by ``ONEDNN_MAX_CPU_ISA``
  (legacy name ``DNNL_MAX_CPU_ISA``; the ``ONEDNN_`` one wins if both are set).
* MKL (``nn.Linear``/``matmul`` on CPU are MKL ``sgemm``) dispatches by ISA and
  by CPU vendor; ``MKL_CBWR`` fixes its code branch (conditional numerical
  reproducibility, CNR).

:func:`pin_cpu_numerics` caps all three at what every x86-64 CPU with AVX2
has.  Measured on an AVX-512 machine (AMD EPYC, Zen 4; torch 2.14.1, oneDNN
3.12, MKL 2024.2; ``benchmarks/cpu_numerics.py``):

* each of the three variables changes the bits of a small CNN's parameters
  after 30 Adam steps, i.e. each one does control its library's kernel choice;
* ``MKL_CBWR=AVX2`` (or ``AVX512``, ``AVX``, ``SSE4_2``) is *not* honoured on
  this AMD CPU: MKL reports ``CNR:AUTO`` (its vendor/ISA-dependent default
  dispatch, made run-to-run deterministic).  ``COMPATIBLE`` is the only branch
  MKL documents and honours on Intel and AMD alike, hence the pin below.
  ``MKL_ENABLE_INSTRUCTIONS`` changed nothing here (MKL ignores it on AMD), so
  it is not part of the pin set;
* with the pins, runs are bitwise identical whether pinned before or after
  ``import torch``; what an AVX2-only CPU would run is then what this AVX-512
  CPU runs.  Unpinned, this CPU and an (emulated) AVX2-only one differ after
  30 steps by ~1e-5 in the parameters;
* the thread count still matters: unpinned, 1 and 2 threads give different
  training results; pinned, the small CNN/MLP trainings happened to agree,
  but ATen's thread-split reductions (``sum()`` of a tensor larger than the
  grain size, 32768 elements) differ between 1 and 2 threads either way, so
  ``torch.set_num_threads`` must stay fixed (the chapters use ``threads`` = 2);
* cost on this CPU: a 512^3 sgemm is ~2.5x slower under ``MKL_CBWR=COMPATIBLE``
  (SSE2 code); training steps of the small CNN and MLP ~1.5x slower.

When the variables must be set
------------------------------
Each library reads its variable once, lazily, at its *first use*, not at
``import torch``:

* ATen at the first dispatched kernel (``torch.zeros(3) + 1`` is enough) or
  the first ``torch.backends.cpu.get_cpu_capability()`` call;
* oneDNN at the first primitive it creates (first CPU convolution);
* MKL at its first call (first ``matmul``/``Linear``).

So setting them after ``import torch`` but before the first tensor operation
works (verified; ``torch.set_num_threads`` and importing the ``kexue``
modules run no kernel and are harmless), while anything set after the first
operation is silently ignored for the rest of the process.  The robust place
is before ``import torch``: at the top of ``kexue/__init__.py`` or of the
runner's entry point, or in the environment of the subprocess (notebook
kernel, dvc stage) that runs the chapter.  This module does not import torch
at import time, for that reason.

What it does not fix: results still differ with the thread count, the torch /
oneDNN / MKL versions, the libm of the ``default`` ATen path, and oneDNN's
cache-size-dependent blocking on CPUs with different cache sizes (oneDNN has
no switch for that; ``torch.backends.mkldnn.enabled = False`` sends
convolutions to ATen + MKL sgemm instead, at a cost measured by the
benchmark).  Non-x86 CPUs (ARM, Apple) use other kernels altogether.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

# The pin set applied on import: variable -> value.  Any x86-64 CPU with AVX2
# (Intel Haswell, AMD Zen 1 and later) runs these kernels, at little cost.
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
# MKL's vendor-independent branch makes matrix products bitwise the same across CPUs too, but
# the benchmark measures it at roughly 2.4x the time of a large matmul (1.5-2x per training
# step): that budget buys more seeds, which is what verdicts rest on. Opt in by setting it in
# the environment (`MKL_CBWR=COMPATIBLE dvc repro`); `FULL_PIN_ENV` is what the benchmark
# calls the full pin set.
MKL_PIN = {"MKL_CBWR": "COMPATIBLE"}
FULL_PIN_ENV: dict[str, str] = {**PINNED_ENV, **MKL_PIN}

# Other variables with the same effect or a related one, reported by
# cpu_numerics_info() but not set.
RELATED_ENV = ("DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

# A user's setting of the legacy name counts as a setting of the new one.
_ALIASES = {"ONEDNN_MAX_CPU_ISA": ("DNNL_MAX_CPU_ISA",)}


def pin_cpu_numerics(env: dict | None = None, full: bool = False) -> dict[str, str]:
    """Set the CPU-ISA pins of :data:`PINNED_ENV` (with ``full``: :data:`FULL_PIN_ENV`, MKL
    too) unless already set; return what was set.

    Uses ``setdefault`` semantics: a variable the user has set (to any value,
    including the empty string) is left alone; ``ONEDNN_MAX_CPU_ISA`` is also
    left unset when the user has set its legacy name ``DNNL_MAX_CPU_ISA``
    (otherwise the new name would override the user's choice).

    Must run before the first tensor operation of the process, best before
    ``import torch`` (see the module docstring); later calls change the
    environment but not the kernels already chosen.  ``env`` defaults to
    ``os.environ`` (a dict can be passed to build a subprocess environment).
    """
    env = os.environ if env is None else env
    newly_set = {}
    for key, value in (FULL_PIN_ENV if full else PINNED_ENV).items():
        if key in env or any(alias in env for alias in _ALIASES.get(key, ())):
            continue
        env[key] = value
        newly_set[key] = value
    return newly_set


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device) -> str:
    """What a torch device is, in words: 'cpu (<model>)' or 'cuda (<GPU name>)'."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_model()})"


def _cpu_flags() -> list[str]:
    """The AVX/FMA-family flags of /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except OSError:
        pass
    return []


def cpu_numerics_info() -> dict:
    """What is in effect: pin variables, ATen capability, threads, versions, CPU.

    Imports torch; calling it fixes ATen's capability for the process (it
    calls ``torch.backends.cpu.get_cpu_capability()``), so call it after
    :func:`pin_cpu_numerics`, never before.
    """
    import torch

    return {
        "env": {k: os.environ.get(k) for k in (*PINNED_ENV, *RELATED_ENV)},
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "num_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "cpu_model": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "machine": platform.machine(),
    }
