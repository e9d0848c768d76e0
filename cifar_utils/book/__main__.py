"""Command line: ``python -m cifar_utils.book --profile smoke [--chapters 01,03] [--no-html]``."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time

from .params import ProfileError
from .runner import ChapterFailed, build_book


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar_utils.book", description=__doc__)
    parser.add_argument("--profile", default="smoke", help="parameter profile in params/ (smoke: CPU, minutes; "
                        "full: the report's GPU protocol)")
    parser.add_argument("--chapters", default=None, help="comma-separated chapter ids or number prefixes, "
                        "e.g. 01,03 (default: all chapters in _toc.yml)")
    parser.add_argument("--root", default=".", help="book root holding _toc.yml, _config.yml, book/, params/")
    parser.add_argument("--output-dir", default=None, help="folder that receives _build/ (default: the root)")
    parser.add_argument("--no-html", action="store_true", help="execute the notebooks but skip jupyter-book")
    parser.add_argument("--kernel", default=None, help="Jupyter kernel name (default: this Python's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    t0 = time.monotonic()
    try:
        result = build_book(args.root, args.profile, args.chapters, args.output_dir,
                            build_html=not args.no_html, kernel_name=args.kernel)
    except (ProfileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ChapterFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"error: jupyter-book build failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    for ch in result.executed:
        print(f"  {ch.chapter:<28} {ch.seconds:8.1f} s  -> {ch.output}")
    print(f"profile {result.profile}: {len(result.executed)} notebooks in {time.monotonic() - t0:.1f} s")
    if result.html_index:
        print(f"book: {result.html_index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
