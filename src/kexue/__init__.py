"""kexue-workbook: techniques from Su Jianlin's blog (kexue.fm), re-derived and reproduced.

Modules: `optim` (AdaX, chapter 04); shared pieces `config`, `data`, `nets`,
`report` and the notebook runner `run`.
"""
__version__ = "0.1.0"
