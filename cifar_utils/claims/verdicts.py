"""Judging the declared claims on a results store: :func:`evaluate` one claim, :func:`evaluate_chapter`
(a chapter's Verdicts section), :func:`ledger` (every claim under a profile, the Claims page), and the
cost of settling a claim with more seeds (projected with :mod:`cifar_utils.projection`).

Only *loads* runs (:meth:`cifar_utils.engine.RunStore.get`); never trains. The runs a claim needs are
its chapter's, as :mod:`cifar_utils.plan` builds them from the chapter's parameters. Finished runs in the
store that differ from those only in the seed (a chapter run with more ``seeds``, or the claims'
settling seeds trained by ``python -m cifar_utils.train --settle``) join their arm, so every seed trained
counts. In the smoke profile every verdict is *inconclusive (smoke profile)*, whatever the numbers, so
nobody mistakes a smoke build for evidence, except a claim whose runs are all published runs of another
profile (read from a bundle, :mod:`cifar_utils.engine.bundle`): those are judged on their numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import plan as _plan
from ..engine import Run, RunConfig, RunStore
from ..tables import run_device
from .declared import CLAIMS, Claim, claims
from .rules import INCONCLUSIVE, METRICS, Outcome, SeedSpread, finished, seed_spread


@dataclass
class Result:
    """A claim evaluated on one store: the outcome plus the runs behind it."""

    claim: Claim
    outcome: Outcome
    runs: dict[str, list[Run | None]] = field(default_factory=dict)
    gpu_hours: float | None = None

    @property
    def verdict(self) -> str:
        return self.outcome.verdict

    def runs_text(self) -> str:
        """``model: seeds ..., N epochs, device`` per arm (``missing`` for runs not in the store)."""
        parts = []
        for arm, runs in self.runs.items():
            have = [r for r in runs if r is not None and r.config is not None]
            if not have:
                parts.append(f"{arm}: missing")
                continue
            seeds = ",".join(str(r.config.seed) for r in have)
            devices = "; ".join(sorted({run_device(r) for r in have if r.device})) or "-"
            epochs = max(len(r.history) for r in have)
            lost = len(runs) - len(have)
            parts.append(f"{arm}: seeds {seeds}, {epochs} ep, {devices}" + (f", {lost} missing" if lost else ""))
        return " | ".join(parts) or "-"


def _seed_free(config: RunConfig) -> str:
    return config.replace(seed=0).name


def gpu_hours(claim: Claim, chapter_runs: _plan.ChapterRuns) -> float:
    """Projected GPU hours of the claim's arms with :data:`cifar_utils.plan.SETTLE_SEEDS` seeds each (its
    runs once, for a claim that more seeds would not settle), one run at a time
    (:func:`cifar_utils.projection.run_seconds`)."""
    from ..projection import run_seconds

    seeds = len(_plan.SETTLE_SEEDS) if claim.settle else 1
    arms = [a for a in claim.arms(chapter_runs).values() if a is not None]
    return sum(seeds * run_seconds(a.configs[0]) for a in arms) / 3600


def evaluate(claim: Claim, params: Mapping[str, Any], store: RunStore | None = None,
             spreads: Mapping[str, SeedSpread | None] | None = None, cost_params: Mapping[str, Any] | None = None,
             stored: Sequence[Run] | None = None) -> Result:
    """Judge ``claim`` on the runs its chapter's ``params`` plan (loaded from ``store``, default the store of
    ``$CIFAR_UTILS_RUNS``); never trains. ``params`` are the chapter's parameters (all the plan reads, and
    ``profile``). ``spreads``: metric -> seed spread (default: measured in the store). ``cost_params``: the
    parameters the GPU-hour projection uses (default ``params``). ``stored``: the store's runs, when the
    caller has listed them already."""
    store = store if store is not None else RunStore()
    if stored is None:
        stored = store.list()
    chapter_runs = _plan.chapter(claim.chapter, params)
    arms = claim.arms(chapter_runs)
    cost = gpu_hours(claim, chapter_runs if cost_params is None else _plan.chapter(claim.chapter, cost_params))
    unplanned = [name for name, arm in arms.items() if arm is None]
    if unplanned:
        return Result(claim, Outcome(INCONCLUSIVE, f"not in this build's plan of {claim.chapter}: "
                                     f"{', '.join(unplanned)} (see its parameters)"), {}, cost)
    by_seed_free: dict[str, list[Run]] = {}
    for r in stored:
        if finished(r):
            by_seed_free.setdefault(_seed_free(r.config), []).append(r)
    loaded: dict[str, list[Run | None]] = {}
    for name, arm in arms.items():
        runs: list[Run | None] = [store.get(c) for c in arm.configs]
        seeds = {c.seed for c in arm.configs}
        extra = {r.config.seed: r for c in arm.configs for r in by_seed_free.get(_seed_free(c), [])
                 if r.config.seed not in seeds}
        loaded[name] = runs + [extra[s] for s in sorted(extra)]
    missing: dict[str, list[str]] = {}  # why -> arms
    for name, rs in loaded.items():
        for r in rs:
            if not finished(r):
                names = missing.setdefault("not in the store" if r is None else r.status, [])
                if name not in names:
                    names.append(name)
    reasons = []
    if params.get("profile") == "smoke" and not _all_published_full(loaded):
        reasons.append("smoke profile")
    if missing:
        reasons.append("missing runs (" + "; ".join(f"{why}: {', '.join(a)}" for why, a in missing.items()) + ")")
        return Result(claim, Outcome(INCONCLUSIVE, "; ".join(reasons)), loaded, cost)
    if spreads is None:
        spreads = {m: seed_spread(stored, m) for m in METRICS}
    outcome = claim.rule(loaded, lambda metric: spreads.get(metric))
    if reasons:  # smoke: the numbers are shown, the verdict is not theirs to give
        outcome = Outcome(INCONCLUSIVE, "; ".join(reasons + [f"the rule alone: {outcome.verdict}"]), outcome.effect,
                          outcome.low, outcome.high, outcome.noise)
    return Result(claim, outcome, loaded, cost)


def _all_published_full(loaded: Mapping[str, Sequence[Run | None]]) -> bool:
    """Whether every run behind a claim is a published run of a profile other than smoke (a smoke build may
    read the full protocol's published runs: their verdicts are theirs to give)."""
    runs = [r for rs in loaded.values() for r in rs]
    return bool(runs) and all(r is not None and r.published and r.published.get("profile") not in (None, "smoke")
                              for r in runs)


def chapter_params(chapter: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters the ledger needs, picked from a chapter notebook's namespace (``globals()``)."""
    names = (*_plan.parameter_names(chapter), "profile")
    return {k: namespace[k] for k in names if k in namespace}


def evaluate_chapter(chapter: str, namespace: Mapping[str, Any], store: RunStore | None = None) -> list[Result]:
    """A chapter's claims judged with its own parameters (its notebook's ``globals()``); the GPU-hour
    projections use the full profile's parameters."""
    params = chapter_params(chapter, namespace)
    store = store if store is not None else RunStore()
    every = store.list()
    spreads = {m: seed_spread(every, m) for m in METRICS}
    return [evaluate(c, params, store, spreads, cost_params=_full_params(c.chapter), stored=every)
            for c in claims(chapter)]


def _full_params(chapter: str) -> dict[str, Any] | None:
    """The chapter's parameters under the full profile (what the cost projections use), None if unknown."""
    from ..book.params import ProfileError, chapter_parameters

    try:
        return chapter_parameters(_plan.book_root(), chapter, "full")
    except (ProfileError, OSError, ValueError):
        return None


def ledger(profile: str = "full", root: Path | str | None = None, store: RunStore | None = None) -> list[Result]:
    """Every claim judged on ``store`` with each chapter's parameters under ``profile`` (the notebook's
    defaults updated by ``params/<profile>.yaml``, as the runner passes them); the GPU-hour projections
    use the full profile's parameters."""
    from ..book.params import chapter_parameters

    root = _plan.book_root(root)
    store = store if store is not None else RunStore()
    every = store.list()
    spreads = {m: seed_spread(every, m) for m in METRICS}
    out = []
    for c in CLAIMS:
        params = chapter_parameters(root, c.chapter, profile)
        full = _full_params(c.chapter) if profile != "full" else None
        out.append(evaluate(c, params, store, spreads, cost_params=full, stored=every))
    return out


__all__ = ["Result", "evaluate", "evaluate_chapter", "ledger", "gpu_hours", "chapter_params"]
