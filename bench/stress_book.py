"""Stress check for the book runner (issue #9): execute chapters many times, each in a fresh kernel.

Not part of CI. Each execution goes through the runner's own ``execute_notebook`` (same papermill
call, same kernel environment, same per-cell timeout), into a scratch build folder, so a hang shows
up as a cell timeout and a dead kernel as a failure instead of stopping the check::

    PYTHONPATH=$PWD .venv/bin/python bench/stress_book.py --profile smoke --chapters 01,02,03 --repeat 10

prints one line per execution and a summary (ok / failed / timed out / kernel died, seconds), and
exits non-zero if anything but "ok" happened. Results of training are cached in the profile's
store as usual, so after the first execution a chapter mostly re-runs its figures and widgets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from cifar_utils.book.params import load_profile, validate_profile
    from cifar_utils.book.runner import (BookLayout, ChapterFailed, execute_notebook, kernel_environment,
                                         runner_settings, select_chapters, toc_notebooks)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--chapters", default=None, help="e.g. 01,03 (default: every chapter of the profile)")
    parser.add_argument("--repeat", type=int, default=10, help="executions per chapter")
    parser.add_argument("--cell-timeout", type=int, default=None, help="seconds (default: the profile's)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    root = Path(args.root).resolve()
    notebooks = toc_notebooks(root)
    profile_path = root / "params" / f"{args.profile}.yaml"
    profile = load_profile(profile_path)
    named = [c for c in notebooks if c in (profile.get("chapters") or {})]
    chosen = select_chapters(named, args.chapters)
    values = validate_profile(profile, notebooks, source=str(profile_path), required=chosen)
    settings = runner_settings(profile, cell_timeout=args.cell_timeout)
    env = kernel_environment(root, args.profile)
    results = []
    with tempfile.TemporaryDirectory(prefix="stress_book_") as tmp:
        layout = BookLayout(root, Path(tmp))
        for rep in range(1, args.repeat + 1):
            for chapter in chosen:
                t0 = time.monotonic()
                try:
                    execute_notebook(chapter, notebooks[chapter], dict(values[chapter], profile=args.profile),
                                     layout, settings=settings, env=env)
                    outcome, detail = "ok", ""
                except ChapterFailed as exc:
                    outcome, detail = exc.kind, str(exc).splitlines()[0]
                seconds = time.monotonic() - t0
                results.append({"chapter": chapter, "repeat": rep, "outcome": outcome, "seconds": round(seconds, 1),
                                "detail": detail})
                print(f"[{rep}/{args.repeat}] {chapter:<24} {outcome:<10} {seconds:7.1f} s {detail}", flush=True)

    print("\nsummary (profile %s, cell timeout %s s):" % (args.profile, settings.cell_timeout or "none"))
    bad = 0
    for chapter in chosen:
        rows = [r for r in results if r["chapter"] == chapter]
        counts = Counter(r["outcome"] for r in rows)
        secs = [r["seconds"] for r in rows]
        bad += len(rows) - counts["ok"]
        print(f"  {chapter:<24} {counts['ok']}/{len(rows)} ok  " + ", ".join(f"{k}: {v}" for k, v in counts.items()
                                                                         if k != "ok")
              + f"  seconds min/median/max {min(secs):.1f}/{statistics.median(secs):.1f}/{max(secs):.1f}")
    print(f"  total: {len(results) - bad}/{len(results)} ok, {bad} hang(s)/failure(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
