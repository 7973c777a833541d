"""Does a verdict survive a rerun? `python -m kexue.verify CHAPTER` (a chapter's `_verify` stage).

Reruns the chapter's notebook with a disjoint set of seeds (`common.seed` + `--seed-offset`;
a chapter's seeds are seed, seed+1, ..., so an offset larger than any seed count is disjoint)
into a scratch folder, and keeps what the comparison needs in `reports/CHAPTER/rerun/`:
the rerun's `claims.csv`, `metrics.json` and `params.yaml`. The chapter's own run then reads
them (`Report.verify`): `tables/verify.csv` (claim, verdict, verdict_on_rerun) and a metrics
table (each metric, its value on the rerun, the change against the seed spread), shown in the
chapter's report. The stage comes first, so both halves have their own time budget.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from .config import ROOT, ParamsError, chapter_params
from .run import ChapterBusy, NotebookFailed, _raise_interrupt, chapter_lock, chapter_section, check_scale, run_chapter

RERUN = "rerun"
SEED_OFFSET = 1000


def rerun_chapter(chapter: str, seed_offset: int = SEED_OFFSET, reports: Path = ROOT / "reports",
                  overrides: dict | None = None) -> Path:
    """Run `chapter` with seeds shifted by `seed_offset` into a scratch folder; keep the
    comparison files in `reports/CHAPTER/rerun/`. Returns that folder."""
    if seed_offset < 1:
        raise ParamsError(f"--seed-offset={seed_offset}: must be >= 1 (a disjoint set of seeds)")
    section = chapter_section(chapter)
    base = chapter_params(section, overrides=overrides)
    shifted = {**(overrides or {})}
    shifted["common"] = {**shifted.get("common", {}), "seed": base["seed"] + seed_offset}
    check_scale(base)
    out = Path(reports) / chapter / RERUN
    with chapter_lock(out), tempfile.TemporaryDirectory(prefix=f"verify-{chapter}-") as tmp:
        from .report import RERUN_ENV
        before = os.environ.get(RERUN_ENV)
        os.environ[RERUN_ENV] = "1"                       # the rerun's own claims table is not compared again
        try:
            done = run_chapter(chapter, overrides=shifted, reports=Path(tmp))
        finally:
            if before is None:
                os.environ.pop(RERUN_ENV, None)
            else:
                os.environ[RERUN_ENV] = before
        staged = Path(tmp) / "kept"
        staged.mkdir()
        for name in ("tables/claims.csv", "metrics.json", "params.yaml"):
            if (done / name).exists():
                shutil.copyfile(done / name, staged / Path(name).name)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapter")
    ap.add_argument("--seed-offset", type=int, default=SEED_OFFSET)
    ap.add_argument("--scale", choices=["smoke", "default", "gpu"], help="override common.scale")
    args = ap.parse_args(argv)
    overrides = {"common": {"scale": args.scale}} if args.scale else None
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        out = rerun_chapter(args.chapter, args.seed_offset, overrides=overrides)
    except (ParamsError, NotebookFailed, ChapterBusy) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{args.chapter}: interrupted; previous rerun kept", file=sys.stderr, flush=True)
        os._exit(130)            # as kexue.run: nothing may wait on the killed kernel
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"{args.chapter}: rerun with seeds +{args.seed_offset} kept in {shown}; "
          f"the chapter's run compares its verdicts with it (tables/verify.csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
