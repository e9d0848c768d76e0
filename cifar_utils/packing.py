"""How many runs share one GPU: the packing table, its estimates, the decision, and the packed wall time.

At batch 128 a CIFAR network leaves most of an H200 idle (kernel launches and Python bind it, not
arithmetic), so several runs in separate processes on one GPU train more images per second in total than
one. :func:`decide` chooses, for a list of runs, how many of each model share a GPU (``k``, its runs'
``share = 1/k``); ``python -m cifar_utils.train`` gives the shares to ``run_many`` (the local scheduler and
Ray's fractional ``num_gpus`` both honour them) and :func:`simulate` projects the wall time of one GPU.

The table (:func:`row`): per model and ``k`` in :data:`KS` runs at once, the total images/s of the ``k``
runs and the peak memory of one run. Entries are **measured** where :data:`MEASURED_TOTAL` /
:data:`MEASURED_PEAK_BYTES` hold them (``bench/gpu_check.py``'s ``packing`` part prints them in this
format; see :data:`SOURCE`), else **estimated**, under these assumptions:

* one run alone trains at its model's single-run speed ``S1`` (:func:`cifar_utils.projection.speed`:
  measured, or estimated from FLOPs);
* ``k`` runs together follow the contention term of the universal scalability law,
  ``T(k) = k S1 / (1 + (k-1) sigma)``, with ``sigma`` fitted on the one measured point: four ResNet-18
  runs at once gave 2.80x one run on 2026-12-01 (call 1; call 2 gave 3.09x: the lower is used, so
  ``sigma = 0.143``, ``T(2) = 1.75``, ``T(4) = 2.80``, ``T(8) = 4.0`` times ``S1``);
* and never more than the compute ceiling ``C / F`` (``F``: the model's training FLOPs per image), where
  ``C`` is the highest training FLOP/s any measured model reached alone (:func:`ceiling`; 252 TFLOP/s,
  ResNeXt-29 8x64d, a quarter of the H200's ~990 TFLOP/s dense bf16): runs sharing a GPU are assumed not
  to use its tensor cores better than the most arithmetic-bound network of the project did alone;
* peak memory of one run (bytes): ``16 x parameters`` (fp32 weights, gradients and two optimizer
  states, Adam's worst case) ``+ 4 x`` every floating-point element the forward pass creates at batch
  128 (counted on the meta device; all of them fp32, though bf16 autocast halves many), an upper bound
  of what autograd keeps; a run's footprint on the GPU is that peak (measured or estimated) times
  :data:`MEMORY_MARGIN` plus :data:`PROCESS_BYTES` (CUDA context, cuDNN workspaces, the data set);
* each run pays :data:`START_SECONDS` before it trains (process start, CUDA, data to the GPU, cuDNN
  autotuning), counted in its wall time but not in :func:`cifar_utils.projection.run_seconds`;
* a run holding share ``1/k`` trains at its model's per-run speed at ``k`` at once, ``T(k)/k``, whatever
  else (other models) fills the rest of the GPU.

The decision (:func:`decide`, pure given the table): each model's ``k`` is the one with the highest
total images/s (within :data:`TOLERANCE`, the largest such ``k``: sharing that costs nothing lets other
runs fill the GPU beside a compute-bound one) whose footprints fit in the GPU's memory (``k`` runs of
the model fill it at most to :data:`USABLE_MEMORY`, so shares summing to at most 1 keep any mix within
memory); then, while that shortens the simulated wall time, the longest runs get a larger share (their
``k`` halved), so that one slow run does not outlast all the others. A model whose best ``k`` is 1 runs
alone. Runs start longest first, those that need the GPU alone before the others (:func:`order`,
:func:`cifar_utils.engine.batch.startable`, :func:`simulate`).
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .engine.batch import startable
from .projection import MEASURED, run_seconds, speed, train_flops

#: How many runs at once the table holds (and the decision chooses from).
KS: tuple[int, ...] = (1, 2, 4, 8)
#: Where the measured entries come from.
SOURCE = ("bench/gpu_check.py on one NVIDIA H200 (torch 2.11.0+cu130), 2026-12-01, engine default mode, batch "
          "128: ../shared/gpu-check/2026-12-01/call2-maxautotune-projection.json (4 ResNet-18 runs at once through "
          "run_many, the same call as projection.MEASURED); the 4-at-once speed-up of call1-throughput-projection"
          ".json calibrates the estimates")
#: One line on where the packed projection comes from (the plan's table prints it).
NOTE = ("cifar_utils.packing: runs of a model k at a time (k = 1, 2, 4, 8) per its table; measured on one H200 "
        "(2026-12-01): the single-run speeds and 4 ResNet-18 runs at once; every other entry (the speed at k "
        "at once, every peak memory) estimated; `python -m cifar_utils.train --dry-run` shows each model's k")
#: Total images/s of k runs of a model at once, measured (k >= 2; k = 1 is :data:`projection.MEASURED`).
MEASURED_TOTAL: dict[str, dict[int, float]] = {"resnet18": {4: 32185.6}}
#: Peak memory of one run (``torch.cuda.max_memory_allocated``, bytes) at batch 128, measured. None yet.
MEASURED_PEAK_BYTES: dict[str, int] = {}
#: The measured speed-ups of 4 ResNet-18 runs at once over one (call 1: 34,263 / 12,229; call 2:
#: 32,186 / 10,421 images/s); the estimates take the lower.
CALIBRATION_K = 4
CALIBRATION_SPEEDUPS: tuple[float, ...] = (34263.1 / 12229.2, 32185.6 / 10421.3)
#: Memory of the GPU the projection assumes: one H200 as torch reports it (about 139 GiB).
GPU_BYTES = 139 * 2**30
#: The fraction of the GPU's memory the runs on it may fill.
USABLE_MEMORY = 0.9
#: A run's footprint = its peak allocated memory x this (allocator cache, fragmentation) + PROCESS_BYTES.
MEMORY_MARGIN = 1.25
PROCESS_BYTES = 2**30
#: Batch size of the table's entries (the report's protocol).
BATCH_SIZE = 128
#: Seconds a run costs before its first step (estimated): process start, CUDA, data, cuDNN autotuning.
START_SECONDS = 15.0
#: A larger k within this fraction of the best total images/s counts as just as fast.
TOLERANCE = 0.02


@dataclass(frozen=True)
class Row:
    """One model at ``k`` runs at once: the total images/s of the ``k`` runs, the peak memory of one run
    (bytes), and whether each was measured (else estimated, see the module doc)."""

    model: str
    k: int
    images_per_s: float
    peak_bytes: float
    speed_measured: bool
    memory_measured: bool

    @property
    def footprint(self) -> float:
        """Bytes one run holds on the GPU: peak x :data:`MEMORY_MARGIN` + :data:`PROCESS_BYTES`."""
        return self.peak_bytes * MEMORY_MARGIN + PROCESS_BYTES


Table = Mapping[str, Mapping[int, Row]]


def _contention() -> float:
    """sigma of ``T(k) = k S1 / (1 + (k-1) sigma)``, fitted on the lower measured speed-up."""
    k, speedup = CALIBRATION_K, min(CALIBRATION_SPEEDUPS)
    return (k / speedup - 1) / (k - 1)


@functools.lru_cache(maxsize=None)
def ceiling() -> float:
    """Training FLOP/s no packing may exceed: the highest any measured model reached alone."""
    return max(MEASURED[m] * train_flops(m) for m in MEASURED)


@functools.lru_cache(maxsize=None)
def estimated_peak_bytes(model: str, batch_size: int = BATCH_SIZE) -> float:
    """Estimated peak memory of one run (see the module doc): 16 bytes per parameter + 4 per floating-point
    element the forward pass creates at ``batch_size``, counted on the meta device (no memory used)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    from .models import create_model

    class Count(TorchDispatchMode):
        elements = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.elements += sum(t.numel() for t in tree_leaves(out)
                                 if isinstance(t, torch.Tensor) and t.is_floating_point())
            return out

    with torch.device("meta"):
        net = create_model(model).train()
        x = torch.empty(batch_size, *net.input_size)
        with Count() as count:
            net(x)
    params = sum(p.numel() for p in net.parameters())
    return float(16 * params + 4 * count.elements)


@functools.lru_cache(maxsize=None)
def row(model: str, k: int) -> Row:
    """The table's entry for ``model`` at ``k`` runs at once: measured where measured, else estimated."""
    if k not in KS:
        raise ValueError(f"k must be one of {', '.join(map(str, KS))}, got {k!r}")
    single = speed(model)
    measured = MEASURED_TOTAL.get(model, {}).get(k) if k > 1 else (single.images_per_s if single.measured else None)
    if measured is not None:
        total = measured
    else:
        usl = k * single.images_per_s / (1 + (k - 1) * _contention())
        total = min(usl, max(single.images_per_s, ceiling() / train_flops(model)))
    peak = MEASURED_PEAK_BYTES.get(model)
    return Row(model, k, float(total), float(peak if peak is not None else estimated_peak_bytes(model)),
               speed_measured=measured is not None, memory_measured=peak is not None)


def table(models: Sequence[str]) -> dict[str, dict[int, Row]]:
    """The table for ``models``: model -> k -> :class:`Row`."""
    return {m: {k: row(m, k) for k in KS} for m in dict.fromkeys(models)}


def best_k(rows: Mapping[int, Row], gpu_bytes: float = GPU_BYTES) -> int:
    """The ``k`` of the highest total images/s (the largest within :data:`TOLERANCE`) whose ``k`` runs fit
    in ``gpu_bytes`` x :data:`USABLE_MEMORY`; 1 when none does (the run then has the GPU alone)."""
    fits = {k: r for k, r in rows.items() if k * r.footprint <= gpu_bytes * USABLE_MEMORY}
    if not fits:
        return 1
    top = max(r.images_per_s for r in fits.values())
    return max(k for k, r in fits.items() if r.images_per_s >= (1 - TOLERANCE) * top)


@dataclass(frozen=True)
class PackedRun:
    """One run in the packing: its config, ``k`` runs of its model fill a GPU, its ``share`` (1/k), its
    per-run images/s at that share, and its projected duration (start cost included)."""

    config: object
    k: int
    share: float
    images_per_s: float
    seconds: float


@dataclass(frozen=True)
class Packing:
    """What :func:`decide` chose: the runs in start order, the models' rows, the GPU-seconds the runs hold
    (sum of share x duration: one GPU's wall time if nothing were ever idle) and the simulated wall time of
    one GPU (:func:`simulate`)."""

    runs: tuple[PackedRun, ...]
    rows: Mapping[str, Mapping[int, Row]]
    gpu_seconds: float
    wall_seconds: float

    def shares(self) -> dict[str, float]:
        """Config key -> its GPU share."""
        return {r.config.key(): r.share for r in self.runs}

    def lines(self) -> list[str]:
        """One line per model: runs, k at once, the total images/s and the footprint per run (measured or
        estimated)."""
        out = []
        for model in dict.fromkeys(r.config.model for r in self.runs):
            mine = [r for r in self.runs if r.config.model == model]
            for k in sorted({r.k for r in mine}):
                n = sum(r.k == k for r in mine)
                entry = self.rows[model][k]
                how = "measured" if entry.speed_measured else "estimated"
                mem = "measured" if entry.memory_measured else "estimated"
                out.append(f"  {model:<18} {n:>3} run(s): {k} at once (share {1 / k:.3g}), {entry.images_per_s:>8.0f} "
                           f"images/s in all ({how}), {entry.footprint / 2**30:5.1f} GiB per run ({mem})")
        return out


def decide(configs: Sequence, rows: Table | None = None, gpu_bytes: float = GPU_BYTES,
           start_seconds: float = START_SECONDS) -> Packing:
    """How the runs ``configs`` (RunConfigs) share one GPU (see the module doc). ``rows`` defaults to
    :func:`table` of their models; a test passes its own."""
    configs = list(configs)
    rows = dict(rows) if rows is not None else table([c.model for c in configs])
    missing = sorted({c.model for c in configs} - set(rows))
    if missing:
        raise ValueError(f"the packing table has no rows for model(s) {', '.join(missing)}")
    ks = {c.key(): best_k(rows[c.model], gpu_bytes) for c in configs}

    def images(c) -> float:  # the run's work, in seconds at 1 image/s
        return run_seconds(c, images_per_s=1.0)

    def packed(ks: Mapping[str, int]) -> list[PackedRun]:
        runs = []
        for c in configs:
            k = ks[c.key()]
            per_run = rows[c.model][k].images_per_s / k
            runs.append(PackedRun(c, k, 1 / k, per_run, start_seconds + images(c) / per_run))
        return order(runs, share=lambda r: r.share, seconds=lambda r: r.seconds)

    def wall(runs: Sequence[PackedRun]) -> float:
        return simulate([(r.share, r.seconds) for r in runs])

    runs = packed(ks)
    best = wall(runs)
    while True:  # the longest runs get a larger share while that shortens the wall time
        longest = max((r.seconds for r in runs if r.k > 1), default=None)
        if longest is None:
            break
        trial = dict(ks)
        for r in runs:
            if r.k > 1 and r.seconds >= longest * (1 - TOLERANCE):
                trial[r.config.key()] = r.k // 2
        trial_runs = packed(trial)
        if wall(trial_runs) >= best:
            break
        ks, runs, best = trial, trial_runs, wall(trial_runs)
    return Packing(tuple(runs), rows, sum(r.share * r.seconds for r in runs), best)


def order(items: Sequence, share: Callable, seconds: Callable) -> list:
    """Start order: runs that need the GPU alone (share 1) first, then the longest first."""
    return sorted(items, key=lambda r: (share(r) < 1, -seconds(r)))


def simulate(items: Sequence[tuple[float, float]], slots: int | None = None) -> float:
    """Wall seconds of one GPU running ``items`` ``(share, seconds)`` in this order under the local
    scheduler's rule (:func:`cifar_utils.engine.batch.startable`: a run starts when its share is free, and
    one that needs the GPU alone is not overtaken; at most ``slots`` at once)."""
    queue = list(range(len(items)))
    running: list[tuple[float, int]] = []
    now, free = 0.0, 1.0
    slots = slots or len(items) or 1
    while queue or running:
        for i in startable(queue, free, slots - len(running), lambda i: items[i][0]):
            queue.remove(i)
            free -= items[i][0]
            heapq.heappush(running, (now + items[i][1], i))
        if not running:  # a share above 1: it could never start
            raise ValueError(f"a share must be in (0, 1], got {items[queue[0]][0]!r}")
        now, i = heapq.heappop(running)
        free += items[i][0]
    return now


def one_at_a_time(configs: Sequence) -> float:
    """Seconds of the runs one after the other, each alone on the GPU (:func:`run_seconds`, no start cost)."""
    return sum(run_seconds(c) for c in configs)


def entries_text(measured: Mapping[str, Mapping[int, Mapping[str, float]]]) -> str:
    """``MEASURED_TOTAL`` / ``MEASURED_PEAK_BYTES`` as Python, from ``{model: {k: {"images_per_s": ...,
    "peak_bytes": ...}}}`` (what ``bench/gpu_check.py``'s packing part measured), to paste into this
    module with the new :data:`SOURCE`."""
    total = {m: {k: round(v["images_per_s"], 1) for k, v in by_k.items() if k > 1 and v.get("images_per_s")}
             for m, by_k in measured.items()}
    peak = {m: max(int(v["peak_bytes"]) for v in by_k.values() if v.get("peak_bytes"))
            for m, by_k in measured.items() if any(v.get("peak_bytes") for v in by_k.values())}
    single = {m: round(by_k[1]["images_per_s"], 1) for m, by_k in measured.items()
              if 1 in by_k and by_k[1].get("images_per_s")}
    return "\n".join([f"MEASURED_TOTAL = {({m: v for m, v in total.items() if v})!r}",
                      f"MEASURED_PEAK_BYTES = {peak!r}",
                      f"# single runs, for projection.MEASURED: {single!r}"])

