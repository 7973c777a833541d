"""The one notebook runner: `python -m kexue.run CHAPTER [--scale smoke]`.

jupytext text notebook `notebooks/CHAPTER.py`
  -> papermill, with the chapter's params section plus `common` injected after
     the cell tagged `parameters`, and `report_dir` pointing at a staging folder
  -> executed `.ipynb` with volatile metadata stripped -> HTML (`kexue.html`)
  -> `params.yaml` (the values that ran, scale preset applied) and `status.json`
     (scale, device, stage time, date, git revision: kept out of DVC metrics)
  -> the staging folder replaces `reports/CHAPTER/` only when all of that worked.

While it runs, the terminal shows the section being executed; the notebook's
own progress bars (`kexue.report.progress`) draw there too, never in the notebook.

A failing cell raises `NotebookFailed`, which names the cell; the previous report
stays where it was. `--prepare-only DIR` writes the parameterised notebook
without running it (used by the nbval tests).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
import yaml
from jupyter_client.manager import KernelManager

from .chapters import CHAPTERS
from .config import ROOT, Common, ParamsError, chapter_params
from .numerics import PINNED_ENV

NOTEBOOKS = ROOT / "notebooks"
REPORTS = ROOT / "reports"
KERNEL = "python3"
SECTIONS = {chapter: section for chapter, (section, _) in CHAPTERS.items()}
VOLATILE_CELL_KEYS = ("start_time", "end_time", "duration", "status", "exception")


class NotebookFailed(RuntimeError):
    """A cell raised; the message names the cell and the error."""


class LocalKernelManager(KernelManager):
    """Kernel over local IPC sockets (no TCP port, so no unencrypted-TCP warning)."""
    def __init__(self, **kw):
        super().__init__(transport="ipc", **kw)


# The kernel leaves its own stderr alone (no fd capture): progress bars written to
# sys.__stderr__ reach the terminal and stay out of the notebook.
KERNEL_ARGS = ["--IPKernelApp.capture_fd_output=False"]


def chapter_section(chapter: str) -> str:
    if chapter not in SECTIONS:
        raise ParamsError(f"unknown chapter {chapter!r}; known: {sorted(SECTIONS)}")
    return SECTIONS[chapter]


def read_text_notebook(chapter: str) -> nbformat.NotebookNode:
    path = NOTEBOOKS / f"{chapter}.py"
    nb = jupytext.read(path)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{path}: needs exactly one cell tagged 'parameters', found {len(tagged)}")
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)
    return nb


def strip_volatile(nb: nbformat.NotebookNode, staging: str | None = None, final: str | None = None
                   ) -> nbformat.NotebookNode:
    """Drop papermill timestamps and durations and number the cells, so reruns diff cleanly.

    The injected parameters cell names the staging folder the kernel wrote into; with
    `staging`/`final` given it shows the folder the report ends up in instead.
    """
    pm = nb.metadata.get("papermill", {})
    for key in ("start_time", "end_time", "duration", "exception", "environment_variables"):
        pm.pop(key, None)
    for path_key in ("input_path", "output_path"):    # staging paths change every run
        if path_key in pm:
            pm[path_key] = Path(pm[path_key]).name
    for i, cell in enumerate(nb.cells):
        if staging and "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell["source"] = cell["source"].replace(repr(staging), repr(final)).replace(f'"{staging}"', f'"{final}"')
        cell["id"] = f"cell-{i}"                       # nbformat draws random ids; make them stable
        cpm = cell.get("metadata", {}).get("papermill")
        if cpm is not None:
            for key in VOLATILE_CELL_KEYS:
                cpm.pop(key, None)
        cell.get("metadata", {}).pop("execution", None)
    return nb


def first_error(nb: nbformat.NotebookNode) -> str:
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                src = cell.source.strip().splitlines()
                head = src[0] if src else ""
                return f"cell {i} ({head[:70]!r}): {out.get('ename')}: {out.get('evalue')}"
    return "unknown cell"


def section_headings(nb: nbformat.NotebookNode) -> dict[int, str]:
    """Cell index -> the last Markdown heading (`#`, `##`) above it: what the terminal shows."""
    out, current = {}, ""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            heads = re.findall(r"^#{1,2}\s+(.+)$", cell.source, flags=re.M)
            if heads:
                current = heads[-1].strip()
        out[i] = current
    return out


def section_seconds(nb: nbformat.NotebookNode) -> dict[str, float]:
    """Seconds spent in each section (papermill's per-cell durations summed under each heading),
    read before `strip_volatile` drops them: where a stage's time budget goes."""
    headings, out = section_headings(nb), {}
    for i, cell in enumerate(nb.cells):
        d = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if d is not None:
            key = headings.get(i) or "(before the first heading)"
            out[key] = out.get(key, 0.0) + float(d)
    return {k: round(v, 1) for k, v in out.items()}


def section_printer(chapter: str, nb: nbformat.NotebookNode):
    """An nbclient `on_cell_start` hook printing each new section to stderr."""
    headings, n, last = section_headings(nb), len(nb.cells), [None]

    def hook(cell, cell_index, **_):
        heading = headings.get(cell_index, "")
        if heading and heading != last[0]:
            last[0] = heading
            print(f"[{chapter}] cell {cell_index + 1}/{n}: {heading}", file=sys.stderr, flush=True)
    return hook


def git_revision() -> str:
    """Short commit hash, with `+dirty` when tracked files differ from it; 'unknown' outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "notebooks",
                                "params.yaml", "scales.yaml"], cwd=ROOT, capture_output=True, text=True).stdout
        return rev + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_label(device: str) -> str:
    """What the chapter ran on, in words: 'cpu (model)' or 'cuda (GPU name)'."""
    from .config import pick_device
    from .numerics import device_name
    return device_name(pick_device(device))


def effective_params(section: str, params: dict) -> dict:
    """The flat parameters split back into `common` and the chapter's section, for params.yaml."""
    common_keys = set(Common.__dataclass_fields__)
    out = {"common": {k: v for k, v in params.items() if k in common_keys}}
    if section != "common":
        out[section] = {k: v for k, v in params.items() if k not in common_keys and k != "report_dir"}
    return out


def to_html(ipynb: Path, html: Path, chapter: str) -> None:
    from .html import render_chapter
    render_chapter(ipynb, html, chapter)


def replace_entries(staging: Path, final: Path) -> None:
    """Move each top-level entry of `staging` into `final`, replacing the same name.

    Entries of `final` the run did not produce (another stage's benchmark, say) stay.
    Called only once the new report is complete, so a failed run changes nothing.
    """
    final.mkdir(parents=True, exist_ok=True)
    for entry in sorted(staging.iterdir()):
        target = final / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        entry.rename(target)


def prepare(chapter: str, out_ipynb: Path, report_dir: Path, overrides: dict | None = None) -> dict:
    """Write the parameterised (unexecuted) notebook; return the injected parameters."""
    import papermill as pm
    section = chapter_section(chapter)
    params = chapter_params(section, overrides=overrides)      # validated before any work
    params["report_dir"] = str(report_dir)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{chapter}.ipynb"
        nbformat.write(read_text_notebook(chapter), src)
        pm.execute_notebook(str(src), str(out_ipynb), parameters=params, prepare_only=True,
                            kernel_name=KERNEL, progress_bar=False, cwd=str(ROOT))
    nb = strip_volatile(nbformat.read(out_ipynb, as_version=4))
    nbformat.write(nb, out_ipynb)
    return params


def run_chapter(chapter: str, overrides: dict | None = None, reports: Path = REPORTS) -> Path:
    """Execute a chapter into `reports/CHAPTER/`; return that folder."""
    import papermill as pm
    section = chapter_section(chapter)
    params = chapter_params(section, overrides=overrides)      # fails fast on bad params
    final = reports / chapter
    reports.mkdir(parents=True, exist_ok=True)
    staging = reports / f".staging-{chapter}"   # fixed name: the injected path is the same every run
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        params["report_dir"] = str(staging.relative_to(ROOT)) if staging.is_relative_to(ROOT) else str(staging)
        src = staging / f".{chapter}.input.ipynb"
        out = staging / f"{chapter}.ipynb"
        text_nb = read_text_notebook(chapter)
        nbformat.write(text_nb, src)
        t0 = time.time()
        print(f"[{chapter}] running at scale {params['scale']} ({len(text_nb.cells)} cells)", file=sys.stderr)
        try:
            pm.execute_notebook(str(src), str(out), parameters=params, kernel_name=KERNEL,
                                progress_bar=False, cwd=str(ROOT), log_output=False,
                                kernel_manager_class=LocalKernelManager, extra_arguments=KERNEL_ARGS,
                                on_cell_start=section_printer(chapter, text_nb))
        except pm.PapermillExecutionError as e:
            raise NotebookFailed(f"{chapter}: cell {e.cell_index} (execution count {e.exec_count}) "
                                 f"failed: {e.ename}: {e.evalue}") from None
        except Exception as e:
            if out.exists():
                raise NotebookFailed(f"{chapter}: {first_error(nbformat.read(out, as_version=4))}") from e
            raise
        src.unlink()
        shown = str(final.relative_to(ROOT)) if final.is_relative_to(ROOT) else str(final)
        nb = nbformat.read(out, as_version=4)
        sections = section_seconds(nb)
        nb = strip_volatile(nb, params["report_dir"], shown)
        nbformat.write(nb, out)
        seconds = time.time() - t0
        with open(staging / "params.yaml", "w") as fh:
            fh.write("# The parameters this report ran with (scale preset applied); written by kexue.run.\n")
            yaml.safe_dump(effective_params(section, params), fh, sort_keys=False)
        status = {"chapter": chapter, "scale": params["scale"], "device": device_label(params["device"]),
                  "threads": params["threads"], "stage_seconds": round(seconds, 1),
                  "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                  "git_revision": git_revision(), "python": platform.python_version(),
                  "cpu_pins": {k: os.environ.get(k) for k in PINNED_ENV},
                  "torch": __import__("torch").__version__, "section_seconds": sections}
        (staging / "status.json").write_text(json.dumps(status, indent=1) + "\n")
        to_html(out, staging / f"{chapter}.html", chapter)
        replace_entries(staging, final)
        print(f"{chapter}: report in {final.relative_to(ROOT) if final.is_relative_to(ROOT) else final} "
              f"({seconds:.0f} s)")
        return final
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapters", nargs="+", help=f"one or more of {sorted(SECTIONS)}")
    ap.add_argument("--scale", choices=["smoke", "default", "gpu"], help="override common.scale")
    ap.add_argument("--prepare-only", metavar="DIR", type=Path,
                    help="write parameterised notebooks to DIR without executing them")
    args = ap.parse_args(argv)
    overrides = {"common": {"scale": args.scale}} if args.scale else None
    try:
        for chapter in args.chapters:
            if args.prepare_only:
                args.prepare_only.mkdir(parents=True, exist_ok=True)
                report_dir = args.prepare_only / f"{chapter}_report"
                prepare(chapter, args.prepare_only / f"{chapter}.ipynb", report_dir, overrides)
                print(f"{chapter}: prepared {args.prepare_only / (chapter + '.ipynb')}")
            else:
                run_chapter(chapter, overrides)
    except (ParamsError, NotebookFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
