"""``python -m cifar_utils.claims [--profile full]``: print the ledger judged on the profile's store."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import pandas as pd

from ..plan import book_root, store_for
from .verdicts import ledger
from .render import table


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cifar_utils.claims", description=__doc__)
    ap.add_argument("--profile", default="full")
    ap.add_argument("--runs-dir", default=None, help="the store (default: $CIFAR_UTILS_RUNS, else runs/<profile>)")
    args = ap.parse_args(argv)
    store = store_for(args.profile, args.runs_dir)  # with the profile's published runs beneath
    results = ledger(args.profile, book_root(), store)
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(table(results)[["claim", "verdict", "reason", "effect", "interval"]].to_string(index=False))
    print("\nTo settle the claims with more seeds: python -m cifar_utils.train --profile "
          f"{args.profile} --settle [claim ids]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
