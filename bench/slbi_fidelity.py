"""Does the engine cost chapter 6's LeNet accuracy? The LeNet-on-MNIST protocol (60 epochs, batch 128, lr 0.1
x0.1 every 20 epochs, momentum 0.9; SLBI kappa 1, mu 20, lambda 1), trained for N seeds two ways:

* **engine**: chapter 6's own runs, as the plan gives them for ``--profile`` (default ``full``), trained by
  :func:`cifar_utils.engine.run` into ``--runs-dir`` with their records: the very runs ``cifar_utils.publish``
  can then publish;
* **loop**: :func:`cifar_utils.fidelity.plain_loop`, sharing only the model, the optimizer and the data arrays.

Prints, per optimizer, both distributions side by side (per-seed final and epoch-1 accuracy, mean, std, min,
max, collapsed and low runs) and the 95 % interval (Welch) of engine minus loop. Writes
``<out>/slbi_fidelity.{json,md}`` after every finished run (``"finished": false`` until the last), and each
run's history to ``<out>/runs/``: a second call resumes (the engine's runs from the store, the loop's from
their files). Each run gets one CPU thread; ``--jobs`` runs at a time (default 2, the two cores here).
A run taking longer than ``--timeout`` minutes stops the bench (a hang guard, not a speed claim).

    CIFAR_UTILS_DATA=../shared/data .venv/bin/python bench/slbi_fidelity.py --seeds 0-7 [--jobs 2]
    .venv/bin/python bench/slbi_fidelity.py --dry-run     # the runs it would train, and nothing else
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHAPTER = "06_dessilbi"


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    if not out:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}; give e.g. 0-7 or 0,2,5")
    return out


def jobs_for(profile: str, seeds: list[int], optimizers: list[str], epochs: int | None) -> list[dict]:
    """One job per (seed, optimizer, side): engine first, then loop, seed by seed, so that any prefix of the
    bench compares balanced samples."""
    from cifar_utils import plan
    from cifar_utils.book.params import chapter_parameters

    params = chapter_parameters(ROOT, CHAPTER, profile)
    params.update(seeds=seeds, resnet=False)
    if epochs is not None:
        params["epochs"] = epochs
    runs = plan.chapter(CHAPTER, params)
    arms = runs.group(("lenet",))
    unknown = [o for o in optimizers if o not in arms]
    if unknown:
        raise SystemExit(f"unknown optimizer(s) {unknown}; chapter 6's LeNet arms: {', '.join(arms)}")
    jobs = []
    for i, seed in enumerate(seeds):
        for name in optimizers:
            config = arms[name].configs[i]
            for side in ("engine", "loop"):
                jobs.append({"side": side, "optimizer": name, "seed": seed, "config": config,
                             "records": arms[name].records if side == "engine" else None,
                             "file": f"{side}-{name}-seed{seed}.json"})
    return jobs


def work(job: dict, runs_dir: str) -> dict:
    """In a worker process, one thread: train one job, return its history and wall time."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if job["side"] == "engine":
        from cifar_utils.engine import run

        callbacks = list(job["records"](job["config"])) if job["records"] is not None else []
        r = run(job["config"], runs_dir=runs_dir, callbacks=callbacks, progress=False)
        history, status, name = r.history, r.status, r.name
    else:
        from cifar_utils.fidelity import plain_loop

        history, status, name = plain_loop(job["config"]), "finished", "plain loop"
    return {"side": job["side"], "optimizer": job["optimizer"], "seed": job["seed"], "history": history,
            "status": status, "run": name, "wall_seconds": time.perf_counter() - t0,
            "torch": torch.__version__, "key": job["config"].key()}


def report(done: dict[str, dict], jobs: list[dict], args, finished: bool) -> dict:
    from cifar_utils import fidelity

    result: dict = {"finished": finished, "updated": dt.datetime.now().isoformat(timespec="seconds"),
                    "command": "bench/slbi_fidelity.py " + " ".join(sys.argv[1:]), "profile": args.profile,
                    "epochs": next((len(d["history"]) for d in done.values()), None),
                    "seeds_per_side": len(args.seeds), "seeds": args.seeds, "device": f"CPU ({platform.processor() or platform.machine()}), one thread per run, {args.jobs} at a time",
                    "torch": next((d["torch"] for d in done.values()), None), "low_margin": fidelity.LOW_MARGIN,
                    "optimizers": {}, "runs": {}}
    if finished:
        result["finished_at"] = result["updated"]
    for name in args.optimizers:
        sides = {}
        for side in ("engine", "loop"):
            sides[side] = {d["seed"]: fidelity.outcome(d["history"]) for d in done.values()
                           if d["optimizer"] == name and d["side"] == side}
        comp = fidelity.compare(sides["engine"], sides["loop"]) if sides["engine"] and sides["loop"] else {
            "engine": fidelity.arm_summary(sides["engine"]), "loop": fidelity.arm_summary(sides["loop"])}
        comp["per_seed"] = {side: {str(s): o for s, o in sorted(v.items())} for side, v in sides.items()}
        result["optimizers"][name] = comp
    result["runs"] = {f: {k: d[k] for k in ("side", "optimizer", "seed", "status", "run", "wall_seconds", "key")}
                      for f, d in done.items()}
    return result


def markdown(result: dict) -> str:
    def f(x, fmt="{:.2f}"):
        return fmt.format(x) if isinstance(x, (int, float)) else "-"

    lines = ["# Chapter 6's LeNet: engine against a plain loop", "",
             f"Command: `{result['command']}`; {result['device']}; torch {result['torch']}; "
             f"{'finished ' + result['finished_at'] if result['finished'] else 'NOT FINISHED (updated ' + result['updated'] + ')'}.",
             f"Final test accuracy (%) after {result['epochs']} epochs; means over the runs that did not collapse; "
             f"\"low\": {result['low_margin']:g} point or more below the arm's median.", ""]
    for name, comp in result["optimizers"].items():
        lines += [f"## {name}", "", "| seed | engine final | loop final | engine epoch 1 | loop epoch 1 |",
                  "|---|---|---|---|---|"]
        per = comp["per_seed"]
        for seed in sorted({int(s) for side in per.values() for s in side}):
            e, lo = per["engine"].get(str(seed), {}), per["loop"].get(str(seed), {})

            def cell(o, key):
                return f(o.get(key)) + (" (collapsed)" if key == "final" and o.get("collapse") else "")
            lines.append(f"| {seed} | {cell(e, 'final')} | {cell(lo, 'final')} | {cell(e, 'epoch1')} | {cell(lo, 'epoch1')} |")
        lines += ["", "| | runs | mean | std | min | max | median | epoch-1 mean | collapsed seeds | low seeds |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for side in ("engine", "loop"):
            a = comp[side]
            lines.append(f"| {side} | {a['used']} of {a['n']} | {f(a['mean'])} | {f(a['std'])} | {f(a['min'])} | "
                         f"{f(a['max'])} | {f(a['median'])} | {f(a['epoch1_mean'])} | {a['collapsed'] or '-'} | {a['low'] or '-'} |")
        if comp.get("difference") is not None:
            lines += ["", f"Engine minus loop: {comp['difference']:+.2f} points, 95 % interval "
                          f"{f(comp['low'], '{:+.2f}')} to {f(comp['high'], '{:+.2f}')} ({comp['noise']}): "
                          f"**{comp.get('verdict', '?')}**."]
        lines.append("")
    return "\n".join(lines)


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("slbi_fidelity.json", json.dumps(result, indent=1, sort_keys=True)),
                       ("slbi_fidelity.md", markdown(result))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, out / name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=_seeds, default=list(range(8)), help="e.g. 0-7 (default) or 0,3,5")
    ap.add_argument("--optimizers", nargs="+", default=["SLBI", "SGD"])
    ap.add_argument("--profile", default="full", help="whose chapter-6 parameters (default full)")
    ap.add_argument("--epochs", type=int, default=None, help="override the profile's epochs (a quick look)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "fidelity"), help="the engine runs' store")
    ap.add_argument("--out", default=str(HERE / "results" / "slbi_fidelity"))
    ap.add_argument("--timeout", type=float, default=60.0, help="minutes a run may take (hang guard)")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")

    jobs = jobs_for(args.profile, args.seeds, args.optimizers, args.epochs)
    out = Path(args.out)
    done: dict[str, dict] = {}
    for job in jobs:
        path = out / "runs" / job["file"]
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("key") == job["config"].key():
                done[job["file"]] = saved
    todo = [j for j in jobs if j["file"] not in done]
    print(f"{len(jobs)} runs ({len(args.seeds)} seeds x {args.optimizers} x engine/loop), {len(done)} done, "
          f"{len(todo)} to train, {args.jobs} at a time; engine store {args.runs_dir}", flush=True)
    if args.dry_run:
        for j in todo:
            print(f"  {j['side']:6s} {j['optimizer']:4s} seed {j['seed']}  {j['config'].key()}")
        return 0

    from tqdm import tqdm

    (out / "runs").mkdir(parents=True, exist_ok=True)
    failed = []
    ctx = mp.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx)
    try:
        started = {pool.submit(work, j, args.runs_dir): (j, time.monotonic()) for j in todo[:args.jobs]}
        queue = list(todo[args.jobs:])
        bar = tqdm(total=len(todo), desc="fidelity runs", unit="run")
        while started:
            finished, _ = cf.wait(started, timeout=30, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                job, _t = started.pop(fut)
                try:
                    res = fut.result()
                except Exception as exc:  # reported, the others go on
                    failed.append(f"{job['file']}: {type(exc).__name__}: {exc}")
                    tqdm.write(f"FAILED {job['file']}: {exc}")
                else:
                    (out / "runs" / job["file"]).write_text(json.dumps(res))
                    done[job["file"]] = res
                    o = res["history"][-1]["test_acc"] if res["history"] else float("nan")
                    tqdm.write(f"{job['side']:6s} {job['optimizer']:4s} seed {job['seed']}: final {o:.2f} % "
                               f"({res['wall_seconds'] / 60:.1f} min)")
                    write(report(done, jobs, args, finished=False), out)
                bar.update(1)
                if queue:
                    nxt = queue.pop(0)
                    started[pool.submit(work, nxt, args.runs_dir)] = (nxt, time.monotonic())
            late = [j["file"] for j, t in started.values() if time.monotonic() - t > args.timeout * 60]
            if late:
                raise TimeoutError(f"run(s) {late} took longer than --timeout {args.timeout:g} min")
        bar.close()
    except (KeyboardInterrupt, TimeoutError) as exc:
        for p in list(getattr(pool, "_processes", {}).values()):
            p.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        print(f"stopped ({type(exc).__name__}: {exc}); {len(done)} runs kept, a second call resumes", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    pool.shutdown()
    complete = len(done) == len(jobs)
    result = report(done, jobs, args, finished=complete)
    write(result, out)
    print(markdown(result))
    if failed:
        print("failed runs:\n  " + "\n  ".join(failed), file=sys.stderr)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
