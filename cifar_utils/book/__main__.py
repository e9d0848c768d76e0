"""Command line: ``python -m cifar_utils.book --profile smoke [--chapters 01,03] [--no-html] [--cell-timeout S]``.

Exit status: 0 when every notebook ran, 1 when a chapter failed (exception, cell timeout, dead
kernel: the others still run and the HTML is built from what there is), 2 for bad input.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time

from .params import ProfileError
from .runner import DEFAULT_CELL_TIMEOUT, DEFAULT_START_TIMEOUT, ChapterFailed, build_book


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
    parser.add_argument("--cell-timeout", type=int, default=None, metavar="SECONDS",
                        help="longest a single cell may run before its chapter fails (default: the profile's "
                        "runner: cell_timeout, else %d; 0: no limit)" % DEFAULT_CELL_TIMEOUT)
    parser.add_argument("--start-timeout", type=int, default=None, metavar="SECONDS",
                        help="longest a kernel may take to start (default: the profile's, else %d)"
                        % DEFAULT_START_TIMEOUT)
    args = parser.parse_args(argv)
    for name in ("cell_timeout", "start_timeout"):
        value = getattr(args, name)
        if value is not None and (value < 0 or (value == 0 and name == "start_timeout")):
            parser.error(f"--{name.replace('_', '-')} must be a number of seconds "
                         f"{'>= 0' if name == 'cell_timeout' else '> 0'}, got {value}")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    t0 = time.monotonic()
    try:
        result = build_book(args.root, args.profile, args.chapters, args.output_dir,
                            build_html=not args.no_html, kernel_name=args.kernel,
                            cell_timeout=args.cell_timeout, start_timeout=args.start_timeout)
    except (ProfileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ChapterFailed as exc:
        if exc.result is None:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        result = exc.result
        print(result.summary())
        print(f"profile {result.profile}: {len(result.failed)} of {len(result.chapters)} notebooks FAILED "
              f"in {time.monotonic() - t0:.1f} s")
        if result.html_index:
            print(f"book (built from what there is): {result.html_index}")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"error: jupyter-book build failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    except OSError as exc:  # an unreadable file or folder: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    print(f"profile {result.profile}: {len(result.chapters)} notebooks in {time.monotonic() - t0:.1f} s")
    if result.html_index:
        print(f"book: {result.html_index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
