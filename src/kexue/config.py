"""Project paths, `params.yaml` validation, scales, device and seeding.

Every chapter reads its parameters through `chapter_params(section)`: the
`common` section plus the chapter's own, validated against its schema (a
dataclass beside the chapter's code, found through `kexue.chapters`),
with the scale preset of `scales.yaml` filling in the values left at their
defaults when `common.scale` is not `default` (a value set by hand wins).
The runner writes the values that ran to `reports/CHAPTER/params.yaml`, which
`dvc exp show` lists (dvc.yaml's top-level `params`).
"""
from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

PACKAGE_ROOT = Path(__file__).resolve().parents[2]   # src/kexue/config.py -> the checkout it came from
ROOT_ENV = "KEXUE_ROOT"


def is_project_root(path: Path) -> bool:
    """A folder holding the workbook: `dvc.yaml`, `params.yaml` and `notebooks/`."""
    return (path / "dvc.yaml").is_file() and (path / "params.yaml").is_file() and (path / "notebooks").is_dir()


def find_root(cwd: Path | None = None, env: dict | None = None) -> Path:
    """The project root this process works in, decided once at import.

    In order: `$KEXUE_ROOT` (must be a project root; an error otherwise); the nearest folder
    at or above the working directory that is a project root (DVC runs a stage in the
    experiment's own copy of the repository, so `dvc exp run --temp` and queue workers read
    the experiment's `params.yaml` and write the experiment's reports); else the checkout the
    package was installed from (library use from anywhere else).
    """
    env = os.environ if env is None else env
    if env.get(ROOT_ENV):
        root = Path(env[ROOT_ENV]).resolve()
        if not is_project_root(root):
            raise RuntimeError(f"{ROOT_ENV}={env[ROOT_ENV]!r} is not a kexue-workbook folder "
                               "(needs dvc.yaml, params.yaml and notebooks/)")
        return root
    here = Path.cwd() if cwd is None else Path(cwd)
    for folder in (here.resolve(), *here.resolve().parents):
        if is_project_root(folder):
            return folder
    return PACKAGE_ROOT


ROOT = find_root()
PARAMS_FILE = ROOT / "params.yaml"
SCALES_FILE = ROOT / "scales.yaml"
SCALES = ("smoke", "default", "gpu")


def _range(lo=None, hi=None, choices=None):
    return {"lo": lo, "hi": hi, "choices": choices}


def param(default, lo=None, hi=None, choices=None, doc: str = ""):
    """A parameter with its default, allowed range or choices, and a one-line meaning."""
    return field(default=default, metadata={**_range(lo, hi, choices), "doc": doc})


@dataclass
class Common:
    seed: int = param(0, lo=0, doc="base random seed; chapter seeds are seed, seed+1, ...")
    device: str = param("auto", choices=("auto", "cpu", "cuda"), doc="auto picks cuda when present")
    scale: str = param("default", choices=SCALES, doc="smoke (CI), default (2-core CPU), gpu")
    threads: int = param(2, lo=1, hi=256, doc="torch CPU threads (fixed so CPU runs repeat exactly)")


def schema() -> dict[str, type]:
    """`common` plus each chapter's parameter dataclass (kexue.chapters registry)."""
    import importlib
    from .chapters import CHAPTERS, STAGE_SECTIONS
    out: dict[str, type] = {"common": Common}
    for section, target in [*CHAPTERS.values(), *STAGE_SECTIONS.items()]:
        module, name = target.split(":")
        out[section] = getattr(importlib.import_module(module), name)
    return out


class ParamsError(ValueError):
    """A parameter file entry that is unknown, mistyped or out of range."""


def _check_value(section: str, f: dataclasses.Field, value: Any) -> Any:
    where = f"{section}.{f.name}={value!r}"
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str, "bool": bool}[f.type]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is bool or isinstance(value, bool):
        ok = isinstance(value, bool) and kind is bool
    else:
        ok = isinstance(value, kind)
    if not ok:
        hint = ""
        if kind in (int, float) and isinstance(value, str):
            hint = _string_number_hint(value)
        raise ParamsError(f"{where}: expected {kind.__name__}, got {type(value).__name__}{hint}")
    m = f.metadata
    if m.get("choices") is not None and value not in m["choices"]:
        raise ParamsError(f"{where}: must be one of {list(m['choices'])}")
    if kind in (int, float):
        if kind is float and not np.isfinite(value):
            raise ParamsError(f"{where}: must be finite")
        if m.get("lo") is not None and value < m["lo"]:
            raise ParamsError(f"{where}: must be >= {m['lo']}")
        if m.get("hi") is not None and value > m["hi"]:
            raise ParamsError(f"{where}: must be <= {m['hi']}")
    return value


def _string_number_hint(value: str) -> str:
    """Why YAML gave a string where a number was meant, and what to write instead."""
    import re
    m = re.fullmatch(r"\s*([+-]?\d+)([eE][+-]?\d+)\s*", value)
    if m:                                   # YAML 1.1 (PyYAML) needs a dot in a float's mantissa
        return (f" (YAML reads {value} as a string: a float in exponent form needs a dot, "
                f"write {m.group(1)}.0{m.group(2)})")
    try:
        float(value)
    except ValueError:
        return ""
    return f" (YAML read {value!r} as a string, probably quoted: write it without quotes)"


def validate_section(section: str, values: dict | None) -> dict:
    """Check one section against its schema; return it complete (defaults filled in)."""
    schemas = schema()
    if section not in schemas:
        raise ParamsError(f"unknown params section {section!r}; known: {sorted(schemas)}")
    values = values or {}
    if not isinstance(values, dict):
        raise ParamsError(f"params section {section!r} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(schemas[section])}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ParamsError(f"unknown key {section}.{unknown[0]}={values[unknown[0]]!r}; "
                          f"known keys of {section!r}: {sorted(fields)}")
    out = {}
    for name, f in fields.items():
        out[name] = _check_value(section, f, values[name]) if name in values else f.default
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error (PyYAML
    keeps the last value silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ParamsError(f"{getattr(self, 'path', 'YAML')}: duplicate key {key!r} (line {seen[key]} and "
                                  f"line {key_node.start_mark.line + 1}): keep one")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> dict:
    """A YAML mapping of sections; a duplicate key anywhere is a `ParamsError` naming both lines."""
    with open(path) as fh:
        loader = _UniqueKeyLoader(fh)
        loader.path = str(path)
        try:
            data = loader.get_single_data() or {}
        finally:
            loader.dispose()
    if not isinstance(data, dict):
        raise ParamsError(f"{path} must hold a mapping of sections")
    return data


def validate_params(params: dict, scales: dict | None = None, sections: list[str] | None = None) -> dict:
    """Validate `sections` of a params mapping (default: every section) and their scale presets.

    A chapter validates only `common` and its own section, so a bad value in another
    chapter's section cannot stop it.
    """
    known = schema()
    unknown = sorted(set(params) - set(known))
    if unknown and sections is None:
        raise ParamsError(f"unknown params section {unknown[0]!r}; known: {sorted(known)}")
    sections = list(known) if sections is None else sections
    out = {s: validate_section(s, params.get(s)) for s in sections}
    for section, presets in (scales or {}).items():
        if section not in sections:
            continue
        for scale, overrides in (presets or {}).items():
            if scale not in SCALES or scale == "default":
                raise ParamsError(f"scales.yaml: {section}.{scale}: scale must be 'smoke' or 'gpu'")
            validate_section(section, {**params.get(section, {}), **(overrides or {})})
    return out


def schema_defaults(section: str) -> dict:
    """The default-scale value of every key of `section` (its dataclass defaults = params.yaml's)."""
    return {f.name: f.default for f in dataclasses.fields(schema()[section])}


def apply_preset(section: str, values: dict, preset: dict) -> dict:
    """A scale preset fills in only keys still at their default value: a value set by hand
    (`dvc exp run -S gan.image_steps=500`, or an edit of params.yaml) wins over the preset."""
    defaults = schema_defaults(section)
    return {k: (preset[k] if k in preset and v == defaults[k] else v) for k, v in values.items()}


def chapter_params(section: str, params_file: Path = PARAMS_FILE, scales_file: Path = SCALES_FILE,
                   overrides: dict | None = None) -> dict:
    """The parameters a chapter runs with: `common` + `section`, validated, preset applied; flat dict.

    Only `common` and `section` are validated. `overrides` (e.g. {"common": {"scale": "smoke"}})
    are applied before validation. With `common.scale` smoke or gpu, the preset of `scales.yaml`
    replaces the values still at their defaults (`apply_preset`). Keys of `common` and of the
    section never clash (checked).
    """
    params = load_yaml(params_file)
    scales = load_yaml(scales_file) if scales_file.exists() else {}
    for s, vals in (overrides or {}).items():
        params[s] = {**(params.get(s) or {}), **vals}
    wanted = ["common"] if section == "common" else ["common", section]
    full = validate_params(params, scales, sections=wanted)
    common, chapter = full["common"], {} if section == "common" else full[section]
    if chapter and common["scale"] != "default":
        preset = (scales.get(section) or {}).get(common["scale"]) or {}
        chapter = validate_section(section, apply_preset(section, chapter, preset))
    clash = set(common) & set(chapter)
    if clash:
        raise ParamsError(f"section {section!r} repeats common keys {sorted(clash)}")
    return {**common, **chapter}


def pick_device(device: str = "auto") -> torch.device:
    """`auto` -> cuda when present, else cpu; `cuda` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParamsError("common.device='cuda' but no CUDA device is available")
    return torch.device(device)


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed python, numpy and torch; fix the CPU thread count so CPU results repeat."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
