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

Safe to run concurrently: each run stages its report and keeps the kernel's connection
file and IPC sockets in its own temporary folder outside the repository (removed on any
exit, the kernel killed with it), and holds a lock on the chapter's output folder while it
runs, so a second run of the same chapter into the same folder refuses at once with a
message naming the first (or waits for it, `--wait`). Different chapters, and the same
chapter in different DVC experiments (other folders), run side by side.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jupytext
import nbformat
import yaml
from jupyter_client.manager import KernelManager

from .chapters import CHAPTERS
from .config import ROOT, Common, ParamsError, chapter_params
from .numerics import PINNED_ENV, pin_cpu_numerics

NOTEBOOKS = ROOT / "notebooks"
REPORTS = ROOT / "reports"
KERNEL = "python3"
SECTIONS = {chapter: section for chapter, (section, _) in CHAPTERS.items()}
VOLATILE_CELL_KEYS = ("start_time", "end_time", "duration", "status", "exception")


class NotebookFailed(RuntimeError):
    """A cell raised; the message names the cell and the error."""


class ChapterBusy(RuntimeError):
    """Another run holds the lock on this chapter's output folder."""


class LocalKernelManager(KernelManager):
    """Kernel over local IPC sockets (no TCP port, so no unencrypted-TCP warning).

    `run_folder` (a per-run temporary folder) holds the connection file and the sockets, so
    kernels of simultaneous runs never share a socket name; `kernel_env` is added to the
    kernel's environment (project root, source path, CPU pins). `started` keeps every
    manager so the runner can kill a kernel left alive by an interrupt.
    """
    run_folder: Path | None = None
    kernel_env: dict[str, str] = {}
    started: list = []

    def __init__(self, **kw):
        if self.run_folder is not None:
            kw.setdefault("connection_file", str(self.run_folder / "kernel.json"))
            kw.setdefault("ip", str(self.run_folder / "kernel-ipc"))
        super().__init__(transport="ipc", **kw)
        self.shutdown_wait_time = 2.0          # a busy kernel ignores a polite shutdown: kill it soon
        type(self).started.append(self)

    async def _async_pre_start_kernel(self, **kw):
        kw["env"] = {**kw.get("env", os.environ), **self.kernel_env}
        return await super()._async_pre_start_kernel(**kw)


def kernel_manager_for(folder: Path, env: dict[str, str]) -> type[LocalKernelManager]:
    """A kernel-manager class bound to one run's folder and kernel environment."""
    return type("RunKernelManager", (LocalKernelManager,),
                {"run_folder": folder, "kernel_env": dict(env), "started": []})


def kernel_environment(root: Path = ROOT) -> dict[str, str]:
    """What the runner adds to the kernel's environment: the project root the stage runs in
    (`KEXUE_ROOT`), that checkout's `src/` first on `PYTHONPATH` (an experiment's copy runs
    its own code), and the CPU pins of `kexue.numerics` unless `KEXUE_CPU_PINS=0` (applied
    here, explicitly: importing kexue changes no environment variable)."""
    env = {"KEXUE_ROOT": str(root)}
    src = root / "src"
    if (src / "kexue").is_dir():
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])
    if os.environ.get("KEXUE_CPU_PINS", "1") != "0":
        pins = pin_cpu_numerics(env=dict(os.environ))   # what the environment lacks
        env.update({k: v for k, v in pins.items()})
    return env


def lock_path(final: Path) -> Path:
    """The lock file of one output folder, outside the repository: one per resolved path, so the
    same chapter in two DVC experiments (two folders) never waits, and the same folder always does."""
    key = hashlib.sha1(str(Path(final).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "kexue-locks" / f"{Path(final).name}-{key}.lock"


@contextlib.contextmanager
def chapter_lock(final: Path, wait: bool = False):
    """Hold an exclusive lock on `final` (a chapter's report folder) while the block runs.

    A second holder refuses at once with `ChapterBusy` naming the first (pid, start time),
    or, with `wait`, says it waits and blocks. The operating system drops the lock when the
    process ends, however it ends, so a killed run never leaves a stale lock. The lock file
    is removed on release (a waiter that then holds the removed file's lock notices and
    locks the new file instead).
    """
    path = lock_path(final)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                if not wait:
                    raise ChapterBusy(f"{final} is being written by {holder}; wait for that run to finish "
                                      "(or pass --wait to queue behind it)") from None
                print(f"waiting for {holder}, which is writing {final}", file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)                      # the holder removed that file: lock the current one
    try:
        started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"run pid {os.getpid()} (started {started})\n".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)               # while still holding it
        os.close(fd)


def kill_kernels(manager: type[LocalKernelManager]) -> None:
    """Kill every kernel of this run still alive, with its children (after an interrupt or a
    crash). The kernel runs in its own session, so its process group is its pid."""
    for km in manager.started:
        process = getattr(getattr(km, "provisioner", None), "process", None)
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                process.wait(timeout=10)


def execute_interruptibly(fn, manager: type[LocalKernelManager]):
    """Run `fn()` (papermill) in a worker thread while this thread waits for it.

    nbclient waits for the kernel's output with a blocking call inside its event loop, and puts
    its own SIGINT/SIGTERM handlers on that loop, which cannot run while it blocks: Ctrl-C did
    nothing until the cell ended (minutes under `dvc exp run`). In a worker thread it installs no
    handlers; the main thread gets the KeyboardInterrupt at once, kills the kernel and raises.
    """
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: B036 - handed to the main thread
            box["error"] = e
    worker = threading.Thread(target=target, name="kexue-papermill", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        kill_kernels(manager)
        raise
    if "error" in box:
        raise box["error"]
    return box.get("result")


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
    if staging and pm.get("parameters", {}).get("report_dir") == staging:
        pm["parameters"]["report_dir"] = final
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


def run_chapter(chapter: str, overrides: dict | None = None, reports: Path = REPORTS, wait: bool = False,
                force_gpu_scale: bool = False) -> Path:
    """Execute a chapter into `reports/CHAPTER/` (or `reports` given); return that folder.

    Parameters are validated (and the scale checked against the machine) before anything is
    written; the run then holds the chapter's lock (`chapter_lock`), stages the report in a
    temporary folder outside the repository, and moves it into place only when all of it worked.
    """
    import papermill as pm
    section = chapter_section(chapter)
    params = chapter_params(section, overrides=overrides)      # fails fast on bad params
    check_scale(params, force=force_gpu_scale)
    reports = Path(reports)
    final = reports / chapter
    manager = None
    with chapter_lock(final, wait=wait), tempfile.TemporaryDirectory(prefix=f"kexue-{chapter}-") as tmp:
        # Outside the repository, one per run; named after the chapter, as the report folder is
        # (a Report finds its chapter from its folder's name).
        staging = Path(tmp) / chapter
        staging.mkdir()
        incoming = reports / f".staging-{chapter}-{os.getpid()}"   # same filesystem as `final`, briefly
        try:
            params["report_dir"] = str(staging)
            src = Path(tmp) / f".{chapter}.input.ipynb"
            out = staging / f"{chapter}.ipynb"
            text_nb = read_text_notebook(chapter)
            nbformat.write(text_nb, src)
            manager = kernel_manager_for(Path(tmp), kernel_environment())
            t0 = time.time()
            print(f"[{chapter}] running at scale {params['scale']} ({len(text_nb.cells)} cells)", file=sys.stderr)
            try:
                execute_interruptibly(lambda: pm.execute_notebook(
                    str(src), str(out), parameters=params, kernel_name=KERNEL, progress_bar=False, cwd=str(ROOT),
                    log_output=False, kernel_manager_class=manager, extra_arguments=KERNEL_ARGS,
                    on_cell_start=section_printer(chapter, text_nb)), manager)
            except pm.PapermillExecutionError as e:
                if e.ename == "KeyboardInterrupt":
                    raise KeyboardInterrupt from None
                raise NotebookFailed(f"{chapter}: cell {e.cell_index} (execution count {e.exec_count}) "
                                     f"failed: {e.ename}: {e.evalue}") from None
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:
                if out.exists():
                    raise NotebookFailed(f"{chapter}: {first_error(nbformat.read(out, as_version=4))}") from e
                raise
            shown = str(final.relative_to(ROOT)) if final.is_relative_to(ROOT) else str(final)
            nb = nbformat.read(out, as_version=4)
            sections = section_seconds(nb)
            nb = strip_volatile(nb, params["report_dir"], shown)
            nbformat.write(nb, out)
            seconds = time.time() - t0
            with open(staging / "params.yaml", "w") as fh:
                fh.write("# The parameters this report ran with (scale preset applied); written by kexue.run.\n")
                yaml.safe_dump(effective_params(section, params), fh, sort_keys=False)
            env = {**os.environ, **manager.kernel_env}
            status = {"chapter": chapter, "scale": params["scale"], "device": device_label(params["device"]),
                      "threads": params["threads"], "stage_seconds": round(seconds, 1),
                      "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                      "git_revision": git_revision(), "python": platform.python_version(),
                      "cpu_pins": {k: env.get(k) for k in PINNED_ENV},
                      "torch": __import__("torch").__version__, "section_seconds": sections}
            (staging / "status.json").write_text(json.dumps(status, indent=1) + "\n")
            to_html(out, staging / f"{chapter}.html", chapter)
            reports.mkdir(parents=True, exist_ok=True)
            shutil.copytree(staging, incoming)
            replace_entries(incoming, final)
            print(f"{chapter}: report in {shown} ({seconds:.0f} s)")
            return final
        finally:
            if manager is not None:
                kill_kernels(manager)
            if incoming.exists():
                shutil.rmtree(incoming)


def check_scale(params: dict, force: bool = False) -> None:
    """`gpu` scale on a machine without CUDA would be a run of many hours on the CPU: refuse it
    (before any work) unless forced (`--force-gpu-scale`, or `KEXUE_FORCE_GPU_SCALE=1` under dvc)."""
    import torch
    force = force or os.environ.get("KEXUE_FORCE_GPU_SCALE", "") == "1"
    if params.get("scale") == "gpu" and not force:
        if params.get("device") == "cpu" or not torch.cuda.is_available():
            raise ParamsError("common.scale='gpu' but no CUDA device is available (or common.device='cpu'): "
                              "the gpu preset would run for hours on the CPU. Use the default scale, or force it "
                              "with --force-gpu-scale (KEXUE_FORCE_GPU_SCALE=1 under dvc)")


SMOKE_OUT = ROOT / "build" / "smoke"


def output_folder(scale_flag: str | None, out: Path | None) -> Path:
    """Where reports go: `--out` if given; a `--scale smoke` run without it goes to the
    scratch folder `build/smoke/` (git-ignored), never over the committed `reports/`."""
    if out is not None:
        out = out if out.is_absolute() else Path.cwd() / out
        if scale_flag == "smoke" and out.resolve() == REPORTS.resolve():
            raise ParamsError(f"--out {out}: a smoke run never writes the committed reports; pick a scratch folder")
        return out
    return SMOKE_OUT if scale_flag == "smoke" else REPORTS


def _raise_interrupt(signum, frame):
    """SIGTERM handled as Ctrl-C (the same clean-up path; asyncio, which papermill runs, turns
    SIGINT into a cancellation of its task, where raising from a handler would leave it stuck)."""
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapters", nargs="+", help=f"one or more of {sorted(SECTIONS)}")
    ap.add_argument("--scale", choices=["smoke", "default", "gpu"], help="override common.scale")
    ap.add_argument("--out", type=Path, metavar="DIR",
                    help="write reports to DIR/CHAPTER (default: reports/; with --scale smoke: build/smoke/)")
    ap.add_argument("--wait", action="store_true",
                    help="if another run is writing the same chapter, wait for it instead of refusing")
    ap.add_argument("--force-gpu-scale", action="store_true",
                    help="run the gpu scale even without CUDA (hours on a CPU)")
    ap.add_argument("--prepare-only", metavar="DIR", type=Path,
                    help="write parameterised notebooks to DIR without executing them")
    args = ap.parse_args(argv)
    overrides = {"common": {"scale": args.scale}} if args.scale else None
    signal.signal(signal.SIGTERM, _raise_interrupt)   # `kill`, `dvc queue kill`: clean up like Ctrl-C
    chapter = args.chapters[0]
    try:
        for chapter in args.chapters:
            chapter_section(chapter)                   # every name checked before any work
        if args.prepare_only:
            for chapter in args.chapters:
                args.prepare_only.mkdir(parents=True, exist_ok=True)
                report_dir = args.prepare_only / f"{chapter}_report"
                prepare(chapter, args.prepare_only / f"{chapter}.ipynb", report_dir, overrides)
                print(f"{chapter}: prepared {args.prepare_only / (chapter + '.ipynb')}")
            return 0
        reports = output_folder(args.scale, args.out)
        if reports != REPORTS:
            print(f"reports go to {reports} (not the committed reports/)", file=sys.stderr)
        for chapter in args.chapters:
            run_chapter(chapter, overrides, reports=reports, wait=args.wait, force_gpu_scale=args.force_gpu_scale)
    except (ParamsError, NotebookFailed, ChapterBusy) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{chapter}: interrupted; previous report kept", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)            # clean-up is done (run_chapter's finally); a thread blocked on the
        #                          killed kernel must not keep the process (or its atexit hooks) alive
    return 0


if __name__ == "__main__":
    sys.exit(main())
