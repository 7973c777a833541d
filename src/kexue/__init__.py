"""kexue-workbook: techniques from Su Jianlin's blog (kexue.fm), re-derived and reproduced.

Chapters' modules: `gan` (01, single-loss GAN), `ebm` (02, energy-based model), `diffusion`
(03, Skip-Tuning of an EDM U-Net), `optim` (04, AdaX), `simbert` (05, SimBERT).
Shared pieces: `config` (params, scales, device, seeds, project root), `chapters` (registry),
`data`, `nets`, `toy2d`, `metrics`, `verdicts`, `report`, `html`, `index` (front page),
`numerics` (CPU pinning), the notebook runner `run`, `verify` (reruns on disjoint seeds),
`compare` (two runs side by side) and `plots` (`dvc plots` pages that work offline).
DESIGN.md describes the layout.

Importing the package or any of its modules changes no environment variable. The CPU pins of
`kexue.numerics` (the kernels' instruction set, so CPU runs repeat bit for bit across x86-64
machines with AVX2) are applied by the workbook's entry points: `python -m kexue.<module>`
and the scripts in `benchmarks/` pin before their first tensor operation, and the runner
passes the pins to the notebook kernel; `KEXUE_CPU_PINS=0` in the environment leaves the
kernels native. In your own code, call `kexue.numerics.pin_cpu_numerics()` first if you want
the same kernels.
"""
import os
import sys
from pathlib import Path

__version__ = "0.1.0"


def _modules() -> tuple[str, ...]:
    import pkgutil
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


MODULES = _modules()          # every module of the package, found on disk (no import)
__doc__ += "\nEvery module: " + ", ".join(f"`{m}`" for m in MODULES) + ".\n"
__all__ = [*MODULES, "started_as_entry_point", "pin_entry_point"]


def started_as_entry_point(argv: list[str] | None = None) -> bool:
    """Whether this process is one of the workbook's entry points: `python -m kexue.<module>`
    (a DVC stage, the runner, a CLI) or a script in the project's `benchmarks/` folder."""
    argv = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
    args = argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-m":
            return i + 1 < len(args) and args[i + 1].startswith("kexue.")
        if a.startswith("-m"):
            return a[2:].startswith("kexue.")
        if a in ("-c", "-"):
            return False
        if a in ("-W", "-X", "-Q"):
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        script = Path(a).resolve()
        return script.parent.name == "benchmarks" and (script.parent.parent / "dvc.yaml").is_file()
    return False


def pin_entry_point(env: dict | None = None) -> dict[str, str]:
    """Apply the CPU pins (`kexue.numerics.pin_cpu_numerics`) unless `KEXUE_CPU_PINS=0`; return what was set."""
    env = os.environ if env is None else env
    if env.get("KEXUE_CPU_PINS", "1") == "0":
        return {}
    from .numerics import pin_cpu_numerics
    return pin_cpu_numerics(env)


if started_as_entry_point():      # the entry point's own process, before its first tensor operation
    pin_entry_point()
