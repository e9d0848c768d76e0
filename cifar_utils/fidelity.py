"""Does the engine cost accuracy? Chapter 6's LeNet protocol trained two ways: through the engine
(:func:`cifar_utils.engine.run`) and in a plain loop that shares only the model, the optimizer and the data
arrays with it (its own shuffling, batching, schedule and evaluation, as a reader would write it). Both
distributions over seeds side by side, with a 95 % interval of the difference of means (Welch), and how
often a run of the protocol ends low or collapses.

``bench/slbi_fidelity.py`` runs it; chapter 6 reads its committed result (:func:`load_result`,
:func:`rates_sentence`) so that a reader does not mistake a bad seed for a bad method.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .claims.rules import difference
from .engine import RunConfig
from .engine.health import collapse

#: A run "ends low" when its final accuracy is this many points or more below the median final of the
#: arm's runs that did not collapse (a declared threshold, stated wherever the rate is).
LOW_MARGIN = 1.0
#: The bench's committed result, relative to the book's root.
RESULT = Path("bench") / "results" / "slbi_fidelity" / "slbi_fidelity.json"


def plain_loop(config: RunConfig, *, progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``config`` (a LeNet-on-MNIST config of chapter 6, SGD or SLBI, ``scheduler="step"``) in a plain
    loop on the CPU in fp32: every batch of a ``torch.randperm`` order (the last, partial one included),
    cross entropy, ``optimizer.step()``, the LR multiplied by ``gamma`` every ``step_size`` epochs, the test
    accuracy after each epoch. Returns one record per epoch (``epoch``, ``train_loss``, ``test_acc``,
    ``lr``, ``seconds``), the engine's history fields."""
    from .data import load_dataset, normalize
    from .models import create_model
    from .optim import create_optimizer

    if config.scheduler != "step":
        raise ValueError(f"plain_loop runs the step schedule of chapter 6, got scheduler={config.scheduler!r}")
    ds = load_dataset(config.dataset, source=config.source, data_root=config.data_root,
                      train_size=config.train_size, test_size=config.test_size)
    x_train, y_train = normalize(ds.x_train, ds.name), ds.y_train
    x_test, y_test = normalize(ds.x_test, ds.name), ds.y_test
    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=len(ds.classes), in_channels=int(ds.x_train.shape[1]))
    optimizer = create_optimizer(config.optimizer, model, lr=config.lr, momentum=config.momentum,
                                 weight_decay=config.weight_decay, **dict(config.optimizer_options))
    options = dict(config.scheduler_options)
    step_size, gamma = int(options["step_size"]), float(options.get("gamma", 0.1))
    order = torch.Generator().manual_seed(config.seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    history = []
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        lr = config.lr * gamma ** (epoch // step_size)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        perm = torch.randperm(len(y_train), generator=order)
        total, seen = 0.0, 0
        for i in range(0, len(perm), config.batch_size):
            idx = perm[i:i + config.batch_size]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        model.eval()
        with torch.no_grad():
            right = sum(int((model(x_test[i:i + 1000]).argmax(1) == y_test[i:i + 1000]).sum())
                        for i in range(0, len(y_test), 1000))
        record = {"epoch": epoch + 1, "train_loss": total / seen, "test_acc": 100.0 * right / len(y_test),
                  "lr": lr, "seconds": time.perf_counter() - t0}
        history.append(record)
        if progress is not None:
            progress(record)
    return history


# --- the comparison ------------------------------------------------------------------------------------

def outcome(history: Sequence[Mapping]) -> dict[str, Any]:
    """One run's figures: final and epoch-1 test accuracy, epochs, its collapse (the run ended at chance) or
    None, and ``recovered`` (a stretch at chance it recovered from) or None."""
    accs = [float(r["test_acc"]) for r in history if r.get("test_acc") is not None]
    found = collapse(history)
    ended = found is not None and found.to_end
    return {"final": accs[-1] if accs else None, "epoch1": accs[0] if accs else None, "epochs": len(accs),
            "collapse": found.describe() if ended else None,
            "recovered": found.describe() if found is not None and not ended else None}


def _used(outcomes: Mapping[int, Mapping[str, Any]]) -> dict[int, float]:
    """Seed -> final accuracy of the runs that enter the means: they have one and did not collapse."""
    return {s: o["final"] for s, o in outcomes.items() if o["collapse"] is None and o["final"] is not None}


def arm_summary(finals: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Per seed outcomes -> the arm's figures: ``n``; over the runs that did not collapse the mean, std,
    min, max and median of the final accuracy and the mean epoch-1 accuracy; the seeds that collapsed and
    those that ended low (:data:`LOW_MARGIN` or more below the median)."""
    ok = _used(finals)
    values = list(ok.values())
    median = statistics.median(values) if values else None
    low = sorted(s for s, final in ok.items() if median is not None and final <= median - LOW_MARGIN)
    return {"n": len(finals), "used": len(values),
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values) if values else None, "max": max(values) if values else None, "median": median,
            "epoch1_mean": statistics.fmean(o["epoch1"] for o in finals.values() if o["epoch1"] is not None)
            if finals else None,
            "collapsed": sorted(s for s, o in finals.items() if o["collapse"] is not None), "low": low}


def compare(engine: Mapping[int, Mapping[str, Any]], loop: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Engine minus loop: each arm's :func:`arm_summary`, the difference of mean final accuracy over the runs
    that did not collapse, its 95 % interval (Welch) and the :func:`verdict` in words."""
    a, b = arm_summary(engine), arm_summary(loop)
    ea, lb = list(_used(engine).values()), list(_used(loop).values())
    out: dict[str, Any] = {"engine": a, "loop": b, "difference": None, "low": None, "high": None, "noise": None}
    if ea and lb:
        effect, half, noise = difference(ea, lb, None)
        out.update(difference=effect, noise=noise,
                   low=effect - half if half is not None else None, high=effect + half if half is not None else None)
        out["verdict"] = verdict(out)
    return out


def verdict(c: Mapping[str, Any]) -> str:
    """In words: ``engine worse`` when the 95 % interval of engine - loop lies wholly below 0, ``engine better``
    when wholly above, ``no significant difference`` when it contains 0, ``unknown`` without an interval."""
    if c.get("low") is None:
        return "unknown"
    if c["high"] < 0:
        return "engine worse"
    return "engine better" if c["low"] > 0 else "no significant difference"


def rates(result: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Over every run of the bench, per optimizer: runs, collapsed, ended low (both paths pooled: the
    protocol's own rate, whichever loop trains it)."""
    out: dict[str, dict[str, int]] = {}
    for name, comp in (result.get("optimizers") or {}).items():
        n = comp["engine"]["n"] + comp["loop"]["n"]
        out[name] = {"runs": n, "collapsed": len(comp["engine"]["collapsed"]) + len(comp["loop"]["collapsed"]),
                     "low": len(comp["engine"]["low"]) + len(comp["loop"]["low"])}
    return out


def load_result(root: str | Path | None = None) -> dict[str, Any] | None:
    """The committed bench result (``bench/results/slbi_fidelity/slbi_fidelity.json`` under ``root``), or
    None when it does not exist."""
    from .plan import book_root

    path = book_root(root) / RESULT
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _pct(k: int, n: int) -> str:
    return f"{k} of {n}" + (f" ({100 * k / n:.0f} %)" if n else "")


def rates_sentence(result: Mapping[str, Any] | None) -> str:
    """What the bench found, for chapter 6: per optimizer how many runs of the protocol collapsed or ended
    low, and whether the engine costs accuracy (its difference to the plain loop with the interval)."""
    if not result:
        return ("The fidelity bench (`bench/slbi_fidelity.py`) has no committed result here, so this page cannot "
                "say how often a run of this protocol collapses or ends low.")
    parts = []
    for name, r in rates(result).items():
        comp = result["optimizers"][name]
        diff = comp.get("difference")
        tail = ""
        if diff is not None and comp.get("low") is not None:
            tail = (f"; the engine minus the plain loop: {diff:+.2f} points (95 % interval {comp['low']:+.2f} to "
                    f"{comp['high']:+.2f}, {comp.get('verdict', verdict(comp))})")
        parts.append(f"{name}: {_pct(r['collapsed'], r['runs'])} runs collapsed and {_pct(r['low'], r['runs'])} "
                     f"ended {LOW_MARGIN:g} point or more below the median{tail}")
    when = result.get("finished_at") or f"NOT FINISHED, {len(result.get('runs') or {})} runs so far, {result.get('updated', '?')}"
    return (f"How often this protocol goes wrong, measured by `bench/slbi_fidelity.py` ({result.get('seeds_per_side', '?')} "
            f"seeds a side, engine and plain loop, {result.get('epochs', '?')} epochs, {result.get('device', 'CPU')}, "
            f"{when}): " + "; ".join(parts) + ". A low or collapsed seed is the protocol's instability at lr "
            "0.1 with momentum 0.9, not the method's (see the per-seed table).")
