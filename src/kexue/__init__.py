"""kexue-workbook: techniques from Su Jianlin's blog (kexue.fm), re-derived and reproduced.

Chapters' modules: `gan` (01), `ebm` (02), `optim` (04); shared pieces `config`, `data`,
`nets`, `toy2d`, `metrics`, `verdicts`, `report`, `html`, `index` and the notebook runner
`run`. DESIGN.md describes the layout.

Importing the package pins the CPU kernels' instruction set (`kexue.numerics`) before any
tensor operation, so CPU runs repeat bit for bit across x86-64 machines with AVX2 (`KEXUE_CPU_PINS=0` in the environment leaves them native).
"""
import os

from .numerics import pin_cpu_numerics

if os.environ.get("KEXUE_CPU_PINS", "1") != "0":      # 0: leave the kernels native (benchmarks)
    pin_cpu_numerics()

__version__ = "0.1.0"
