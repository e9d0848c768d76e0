"""The plan: every run of every chapter, from the chapters' parameters, defined once.

Each chapter's runs are written here and nowhere else (:data:`CHAPTER_RUNS`, one function per chapter,
built with the config factories of :mod:`cifar_utils.experiments`). Everything that needs a chapter's
runs asks this module: the notebook itself (:func:`chapter` with its ``globals()``, then
:meth:`ChapterRuns.train`), the claims ledger (:mod:`cifar_utils.claims`), ``python -m cifar_utils.train``
(which trains the whole plan before the book renders) and ``bench/gpu_check.py``'s projection.

A chapter's runs are **arms**: a label in the chapter (``"resnet18"``, chapter 3's ``"ReLU"`` of the
``activation`` sweep, chapter 5's ``0.001`` of ``vgg_a``), where it sits (``path``: ``()``,
``("activation",)``, ``("vgg_a",)``), its configs (one per seed) and the callbacks whose records the
chapter reads (``records``: a picklable factory, ``config -> [Callback]``, with ``has_records(run)``;
chapter 5's :class:`~cifar_utils.bn_metrics.MetricsFactory`, chapter 6's
:class:`~cifar_utils.sparsity.SLBIPathRecords`).

:func:`for_profile` builds the whole plan of a profile (each chapter's parameters as the book runner
gives them: the notebook's defaults updated by ``params/<profile>.yaml``). Runs shared between chapters
appear once (chapter 4 reuses chapter 1's ResNet-18 and WRN-28-10; chapter 6's Adam run is chapter 3's
baseline): the same config is the same run (:meth:`RunConfig.key`). Apart from the book's runs, the
plan lists the optional extra seeds that settling the claims would train (:data:`SETTLE_SEEDS` per
arm, :mod:`cifar_utils.claims`), never part of the book's total.

``python -m cifar_utils.plan --profile full`` prints the table: one row per distinct run, its
chapter(s) and label, model, epochs, store status and projected GPU time
(:mod:`cifar_utils.projection`), totals per chapter and for the book, one run at a time and packed on
one GPU (:mod:`cifar_utils.packing`), then the settling seeds with their own totals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import experiments as ex
from .chapters import CH1, CH2, CH3, CH4, CH5, CH6, CHAPTERS
from .engine import Run, RunConfig, RunStore, run_many
from .engine import store as st

#: Seeds per arm that settling a claim trains (the chapter's own seed among them).
SETTLE_SEEDS: tuple[int, ...] = (0, 1, 2)
#: Where settling runs are "used".
CLAIMS = "claims"

Label = Any  # str, or a float (chapter 5's learning rates)


@dataclass(frozen=True)
class Arm:
    """One label of a chapter: its runs, one config per seed, and the callbacks they are trained with."""

    chapter: str
    path: tuple[str, ...]
    label: Label
    configs: tuple[RunConfig, ...]
    records: Any = None

    @property
    def where(self) -> str:
        """``"03_training_choices: activation / ReLU"``."""
        return f"{self.chapter}: " + " / ".join([*self.path, _text(self.label)])


def _text(label: Label) -> str:
    return f"{label:g}" if isinstance(label, float) else str(label)


@dataclass(frozen=True)
class RecordsByKey:
    """One callbacks factory for runs that need different records: dispatches on the config's key.
    Picklable when its factories are (they are sent to ``run_many``'s workers)."""

    factories: tuple[tuple[str, Any], ...]

    def _factory(self, config: RunConfig):
        return dict(self.factories).get(config.key())

    def __call__(self, config: RunConfig) -> list:
        factory = self._factory(config)
        return list(factory(config)) if factory is not None else []

    def has_records(self, run: Run) -> bool:
        factory = self._factory(run.config)
        check = getattr(factory, "has_records", None)
        return True if check is None else bool(check(run))


def train_configs(configs: Sequence[RunConfig], records: Mapping[str, Any] | None = None, *, jobs: int = 1,
                  runs_dir: str | Path | None = None, progress: bool = True, backend: str = "local",
                  ray_address: str | None = None, gpus_per_run: float | None = None,
                  cpus_per_run: float | None = None) -> list[Run]:
    """``run_many`` over ``configs`` with each run's records (config key -> callbacks factory): what the
    chapters and ``python -m cifar_utils.train`` call. A stored run without its records is trained again."""
    records = {k: f for k, f in (records or {}).items() if f is not None}
    callbacks = RecordsByKey(tuple(sorted(records.items()))) if records else None
    return run_many(configs, jobs=jobs, runs_dir=runs_dir, progress=progress, callbacks=callbacks, backend=backend,
                    ray_address=ray_address, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run)


class Trained:
    """A chapter's runs after training (or loading): by arm, in the chapter's own shapes."""

    def __init__(self, arms: Sequence[Arm], runs: Mapping[str, Run]) -> None:
        self.arms = list(arms)
        self._runs = dict(runs)  # config key -> Run

    def runs(self, arm: Arm) -> list[Run]:
        """The arm's runs, one per seed."""
        return [self._runs[c.key()] for c in arm.configs]

    def tree(self, first: bool = False) -> dict:
        """Nested dicts along each arm's path, label -> its runs (a list, one per seed), or with
        ``first=True`` the first seed's run: chapter 1 ``{model: [runs]}``, chapter 3
        ``{"activation": {"ReLU": run, ...}, ...}``, chapter 5 ``{"vgg_a": {0.001: run, ...}, ...}``."""
        out: dict = {}
        for arm in self.arms:
            node = out
            for part in arm.path:
                node = node.setdefault(part, {})
            runs = self.runs(arm)
            node[arm.label] = runs[0] if first else runs
        return out


@dataclass
class ChapterRuns:
    """One chapter's runs under given parameters."""

    chapter: str
    params: dict[str, Any]
    arms: list[Arm]

    def configs(self) -> list[RunConfig]:
        """The chapter's distinct runs, in the chapter's order."""
        return list({c.key(): c for arm in self.arms for c in arm.configs}.values())

    def records(self) -> dict[str, Any]:
        """Config key -> the callbacks factory its run is trained with (runs without any left out)."""
        return {c.key(): arm.records for arm in self.arms if arm.records is not None for c in arm.configs}

    def arm(self, path: Sequence[str], label: Label) -> Arm | None:
        """The arm with this path and label, or None."""
        for a in self.arms:
            if a.path == tuple(path) and a.label == label:
                return a
        return None

    def group(self, path: Sequence[str] = ()) -> dict[Label, Arm]:
        """The arms at ``path``, by label."""
        return {a.label: a for a in self.arms if a.path == tuple(path)}

    def train(self, *, jobs: int = 1, runs_dir: str | Path | None = None, progress: bool = True,
              backend: str = "local", ray_address: str | None = None, gpus_per_run: float | None = None,
              cpus_per_run: float | None = None) -> Trained:
        """Train what the store lacks of this chapter's runs (with their records), load the rest."""
        configs = self.configs()
        runs = train_configs(configs, self.records(), jobs=jobs, runs_dir=runs_dir, progress=progress,
                             backend=backend, ray_address=ray_address, gpus_per_run=gpus_per_run,
                             cpus_per_run=cpus_per_run)
        return Trained(self.arms, {c.key(): r for c, r in zip(configs, runs)})


# --- each chapter's runs, from its parameters: the one definition -------------------------------------

#: Chapter -> (the parameters it reads, the function building its arms from them).
CHAPTER_RUNS: dict[str, tuple[tuple[str, ...], Callable[[Mapping[str, Any]], list[Arm]]]] = {}

_DATA = ("source", "data_root", "train_size", "test_size")
_DEVICE = ("device", "precision")
#: How the training step runs: every chapter's runs take them as they are (:func:`chapter`).
_STEP = ("compile", "compile_mode")


def _chapter_runs(name: str, *params: str):
    def register(build):
        CHAPTER_RUNS[name] = (params, build)
        return build
    return register


def _data(p: Mapping[str, Any], prefix: str = "") -> ex.DataChoice:
    return ex.DataChoice(source=p[f"{prefix}source"], data_root=p[f"{prefix}data_root"],
                         train_size=p[f"{prefix}train_size"], test_size=p[f"{prefix}test_size"])


def _protocol(chapter: str, p: Mapping[str, Any]) -> list[Arm]:
    configs = ex.protocol_configs(p["models"], epochs=p["epochs"], batch_size=p["batch_size"], seeds=p["seeds"],
                                  data=_data(p), device=p["device"], precision=p["precision"], val_size=p["val_size"])
    return [Arm(chapter, (), model, tuple(cs)) for model, cs in configs.items()]


_PROTOCOL = ("models", "epochs", "batch_size", "seeds", *_DATA, *_DEVICE, *_STEP, "val_size")


@_chapter_runs(CH1, *_PROTOCOL)
def architectures(p: Mapping[str, Any]) -> list[Arm]:
    """Chapter 1: each model of ``models`` under the report's protocol, one run per seed."""
    return _protocol(CH1, p)


@_chapter_runs(CH2, *_PROTOCOL)
def ablations(p: Mapping[str, Any]) -> list[Arm]:
    """Chapter 2: as chapter 1, with its own ``models`` (ResNet-18 is chapter 1's run)."""
    return _protocol(CH2, p)


def _choice_base(p: Mapping[str, Any]) -> RunConfig:
    lrs = p["optimizer_lrs"]
    return ex.training_choice_base(epochs=p["epochs"], batch_size=p["batch_size"],
                                   lr=lrs.get("adam", ex.DEFAULT_OPTIMIZER_LRS["adam"]), data=_data(p), seed=p["seed"],
                                   device=p["device"], precision=p["precision"])


@_chapter_runs(CH3, "epochs", "batch_size", "optimizer_lrs", "lr_grid", "grid_val_size", "seed", "activations",
               "losses", "optimizers", *_DATA, *_DEVICE, *_STEP)
def training_choices(p: Mapping[str, Any]) -> list[Arm]:
    """Chapter 3: the activation, loss and optimizer sweeps on ResNet-18 + Adam (their shared baseline
    is one run), and with ``lr_grid`` each optimizer at its rate times each factor, path
    ``("lr_grid", <optimizer label>)``, label the learning rate."""
    base = _choice_base(p)
    arms = []
    for sweep, variants, lrs in (("activation", p["activations"], None), ("loss", p["losses"], None),
                                 ("optimizer", p["optimizers"], p["optimizer_lrs"])):
        for label, config in ex.sweep_configs(sweep, base, variants, lrs=lrs).items():
            arms.append(Arm(CH3, (sweep,), label, (config,)))
    if p["lr_grid"]:
        grid = ex.lr_grid_configs(base, p["optimizer_lrs"], p["optimizers"], factors=p["lr_grid"],
                                  val_size=p["grid_val_size"])
        for label, rates in grid.items():
            arms += [Arm(CH3, ("lr_grid", label), lr, (config,)) for lr, config in rates.items()]
    return arms


@_chapter_runs(CH4, "epochs", "batch_size", "seed", "cutout", *_DATA, *_DEVICE, *_STEP)
def best_model(p: Mapping[str, Any]) -> list[Arm]:
    """Chapter 4: chapter 1's ResNet-18 and WRN-28-10 (the same configs under chapter 1's parameters)
    and the WRN-28-10 with Cutout (labels of :data:`cifar_utils.experiments.BEST_MODEL_RUNS`)."""
    configs = ex.best_model_configs(epochs=p["epochs"], batch_size=p["batch_size"], data=_data(p), seed=p["seed"],
                                    cutout=p["cutout"], device=p["device"], precision=p["precision"])
    return [Arm(CH4, (), role, (config,)) for role, config in configs.items()]


@_chapter_runs(CH5, "epochs", "batch_size", "lrs", "weight_decay", "augment", "probe_every", "probe_factors", "seed",
               *_DATA, *_DEVICE, *_STEP)
def batchnorm(p: Mapping[str, Any]) -> list[Arm]:
    """Chapter 5: VGG-A and VGG-A-BN at each learning rate (path ``(model,)``, label the rate), recorded
    with the per-step BatchNorm metrics (and probes, with ``probe_every``)."""
    from .bn_metrics import MetricsFactory

    records = MetricsFactory(probe_every=p["probe_every"], probe_factors=tuple(p["probe_factors"]))
    configs = ex.batchnorm_configs(lrs=p["lrs"], epochs=p["epochs"], batch_size=p["batch_size"], data=_data(p),
                                   seed=p["seed"], weight_decay=p["weight_decay"], augment=p["augment"],
                                   device=p["device"], precision=p["precision"])
    return [Arm(CH5, (model,), lr, (config,), records) for model, by_lr in configs.items() for lr, config in by_lr.items()]


@_chapter_runs(CH6, "epochs", "batch_size", "lr", "lr_step", "kappa", "mu", "lam", "seeds", *_DATA, "resnet",
               "resnet_seed", "resnet_epochs", "resnet_batch_size", "resnet_lr", "resnet_kappa", "resnet_mu",
               "resnet_lam", "cifar_source", "cifar_data_root", "cifar_train_size", "cifar_test_size", *_DEVICE,
               *_STEP)
def dessilbi(p: Mapping[str, Any]) -> list[Arm]:
    """Chapter 6: LeNet on MNIST with SLBI and with SGD, one run per seed (path ``("lenet",)``); with
    ``resnet``, ResNet-18 with SLBI-Adam and chapter 3's Adam baseline (path ``("resnet",)``). SLBI runs
    record their path (:class:`~cifar_utils.sparsity.SLBIPathRecords`)."""
    from .sparsity import SLBIPathRecords

    if not p["seeds"]:
        raise ValueError("seeds is empty: give at least one seed, e.g. [0]")
    per_seed = [ex.dessilbi_lenet_configs(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], kappa=p["kappa"],
                                          mu=p["mu"], lam=p["lam"], lr_step=p["lr_step"], data=_data(p), seed=seed,
                                          device=p["device"], precision=p["precision"]) for seed in p["seeds"]]
    arms = [Arm(CH6, ("lenet",), label, tuple(c[label] for c in per_seed),
                SLBIPathRecords() if label == "SLBI" else None) for label in ex.DESSILBI_LENET]
    if p["resnet"]:
        base = ex.training_choice_base(epochs=p["resnet_epochs"], batch_size=p["resnet_batch_size"], lr=p["resnet_lr"],
                                       data=_data(p, "cifar_"), seed=p["resnet_seed"], device=p["device"],
                                       precision=p["precision"])
        configs = ex.dessilbi_resnet_configs(base, kappa=p["resnet_kappa"], mu=p["resnet_mu"], lam=p["resnet_lam"])
        arms += [Arm(CH6, ("resnet",), label, (configs[label],), SLBIPathRecords() if label == "SLBI-Adam" else None)
                 for label in ex.DESSILBI_RESNET]
    return arms


def parameter_names(chapter_name: str) -> tuple[str, ...]:
    """The parameters :func:`chapter` reads for ``chapter_name`` (each declared in its notebook)."""
    return _builder(chapter_name)[0]


def _builder(chapter_name: str):
    if chapter_name not in CHAPTER_RUNS:
        raise ValueError(f"unknown chapter {chapter_name!r}; chapters that train: {', '.join(CHAPTER_RUNS)}")
    return CHAPTER_RUNS[chapter_name]


def chapter(chapter_name: str, params: Mapping[str, Any]) -> ChapterRuns:
    """A chapter's runs under ``params``: its notebook's ``globals()`` (the notebook asks for its own
    runs), or its parameters as ``cifar_utils.book.params.chapter_parameters`` rebuilds them."""
    names, build = _builder(chapter_name)
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"chapter {chapter_name!r} needs the parameter(s) {', '.join(missing)} (its notebook's "
                         "parameters cell declares them)")
    chosen = {n: params[n] for n in names}
    step = {n: chosen[n] for n in _STEP if n in chosen}
    arms = [arm if not step else replace(arm, configs=tuple(c.replace(**step) for c in arm.configs))
            for arm in build(chosen)]
    return ChapterRuns(chapter_name, chosen, arms)


# --- the whole plan ----------------------------------------------------------------------------------

@dataclass
class PlannedRun:
    """One distinct run of the plan: its config, where it is used (``Arm.where`` strings), the callbacks
    factory it is trained with, and whether it is an optional settling seed (not part of the book)."""

    config: RunConfig
    uses: list[str] = field(default_factory=list)
    chapters: list[str] = field(default_factory=list)
    records: Any = None
    settling: bool = False

    @property
    def name(self) -> str:
        return self.config.name

    def seconds(self) -> float:
        """Projected GPU seconds (:func:`cifar_utils.projection.run_seconds`)."""
        from .projection import run_seconds

        return run_seconds(self.config)


@dataclass
class Plan:
    """Every run of a profile: ``runs`` (the book's, distinct) and ``settling`` (the claims' extra seeds)."""

    profile: str
    chapters: dict[str, ChapterRuns]
    runs: list[PlannedRun]
    settling: list[PlannedRun]

    def select(self, chapters: Iterable[str] | None = None, settle: bool = False) -> list[PlannedRun]:
        """The book's runs used by ``chapters`` (all when None), plus the settling seeds of their claims
        with ``settle``."""
        wanted = set(chapters) if chapters is not None else set(self.chapters)
        out = [r for r in self.runs if wanted & set(r.chapters)]
        if settle:
            out += [r for r in self.settling if wanted & set(r.chapters)]
        return out


def _add(table: dict[str, PlannedRun], config: RunConfig, where: str, chapter_name: str, records: Any,
         settling: bool) -> None:
    run = table.setdefault(config.key(), PlannedRun(config, settling=settling))
    if where not in run.uses:
        run.uses.append(where)
    if chapter_name not in run.chapters:
        run.chapters.append(chapter_name)
    if records is not None:
        if run.records is not None and run.records != records:
            raise ValueError(f"run {config.name} is recorded with two different callbacks factories "
                             f"({run.records!r} and {records!r}); give the arms one")
        run.records = records


def build(chapters: Mapping[str, ChapterRuns], profile: str = "") -> Plan:
    """The plan of these chapters' runs, with the claims' settling seeds (:func:`settling_arms`)."""
    book: dict[str, PlannedRun] = {}
    for ch in chapters.values():
        for arm in ch.arms:
            for config in arm.configs:
                _add(book, config, arm.where, ch.chapter, arm.records, settling=False)
    extra: dict[str, PlannedRun] = {}
    for claim_id, arm in settling_arms(chapters):
        for config in arm.configs:
            if config.key() not in book:
                _add(extra, config, f"{CLAIMS}: {claim_id} ({arm.where})", arm.chapter, arm.records, settling=True)
    return Plan(profile, dict(chapters), list(book.values()), list(extra.values()))


def settling_arms(chapters: Mapping[str, ChapterRuns], seeds: Sequence[int] = SETTLE_SEEDS):
    """(claim id, arm with ``seeds``) for every arm of every claim that can be settled with more seeds
    (chapter 5's claim uses its learning rates as replicates: none there)."""
    from .claims.declared import CLAIMS as DECLARED

    for claim in DECLARED:
        if not claim.settle or claim.chapter not in chapters:
            continue
        for arm in claim.arms(chapters[claim.chapter]).values():
            if arm is None:  # not planned under these parameters (chapter 6 without its ResNet part, say)
                continue
            configs = {c.replace(seed=s).key(): c.replace(seed=s) for c in arm.configs[:1] for s in seeds}
            yield claim.id, Arm(arm.chapter, arm.path, arm.label, tuple(configs.values()), arm.records)


def for_profile(profile: str, root: str | Path | None = None, chapters: Iterable[str] | None = None) -> Plan:
    """The plan of ``profile`` (``params/<profile>.yaml`` under the book's root): each chapter's
    parameters as the book runner gives them to its notebook."""
    from .book.params import chapter_parameters, load_profile

    root = book_root(root)
    data = load_profile(root / "params" / f"{profile}.yaml")
    named = [c for c in (data.get("chapters") or {}) if c in CHAPTER_RUNS]
    wanted = list(chapters) if chapters is not None else named
    unknown = [c for c in wanted if c not in CHAPTER_RUNS]
    if unknown:
        raise ValueError(f"unknown chapter(s) {', '.join(unknown)}; chapters that train: {', '.join(CHAPTER_RUNS)}")
    built = {c: chapter(c, chapter_parameters(root, c, profile)) for c in CHAPTERS if c in wanted}
    return build(built, profile)


def book_root(start: str | Path | None = None) -> Path:
    """The folder with ``params/`` and ``book/``: ``start`` (default: the working directory) or a parent,
    else the folder above the package."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params").is_dir() and (folder / "book").is_dir():
            return folder
    return Path(__file__).resolve().parent.parent


def default_store(profile: str, root: str | Path | None = None) -> Path:
    """The store the book runner gives a profile's chapters: ``$CIFAR_UTILS_RUNS``, else ``runs/<profile>``."""
    import os

    return Path(os.environ.get(st.ENV_VAR) or book_root(root) / "runs" / profile)


def published_dirs(profile: str, root: str | Path | None = None) -> list[Path]:
    """The bundles of published runs a profile's store reads beneath its own runs, as the book runner gives
    them to the chapters: ``$CIFAR_UTILS_PUBLISHED`` when set (``os.pathsep``-separated; empty: none), else
    the profile's ``published:`` key (folders relative to the book root), else none."""
    import os

    from .book.params import load_profile, published_folders
    from .engine.bundle import ENV_VAR, layers_from_env

    if ENV_VAR in os.environ:
        return list(layers_from_env())
    root = book_root(root)
    return published_folders(load_profile(root / "params" / f"{profile}.yaml"), root)


def store_for(profile: str, runs_dir: str | Path | None = None, root: str | Path | None = None) -> RunStore:
    """The store of a profile, as its chapters see it: ``runs_dir`` (default :func:`default_store`) with the
    profile's bundles of published runs beneath it (:func:`published_dirs`)."""
    return RunStore(runs_dir or default_store(profile, root), published=published_dirs(profile, root))


# --- status and the table ------------------------------------------------------------------------------

def run_status(store: RunStore, config: RunConfig) -> str:
    """``finished`` / ``diverged`` / ``partial (epoch k/N)`` / ``failed at epoch k/N`` / ``missing`` /
    ``damaged`` for ``config`` in ``store``; ``finished (published)`` for a run read from a bundle."""
    existing = store.get(config)
    if existing is None:
        return "missing"
    if existing.published is not None:
        return f"{existing.status} (published)"
    if existing.status in st.DONE or existing.status == st.DAMAGED:
        return existing.status
    done = len(existing.history)
    what = "failed" if existing.status == st.FAILED else "partial"
    return f"{what} (epoch {done}/{config.epochs})"


def table(plan: Plan, store: RunStore | None = None) -> str:
    """The plan as text: one row per distinct run, totals per chapter and for the book, then the
    settling seeds apart (see the module doc)."""
    from .packing import NOTE as PACKING_SOURCE
    from .packing import decide
    from .projection import SOURCE, hours, speed

    def packed(configs: list[RunConfig]) -> float:
        return decide(configs).wall_seconds if configs else 0.0

    store = store if store is not None else RunStore()
    head = f"{'run':<26} {'chapter(s): label':<58} {'epochs':>6} {'status':<22} {'GPU time':>9}"
    lines = [f"plan of profile {plan.profile!r}; store {store.root}", "", head, "-" * len(head)]
    estimated: set[str] = set()

    def row(r: PlannedRun) -> str:
        if not speed(r.config.model).measured:
            estimated.add(r.config.model)
        uses = "; ".join(u.split(": ", 1)[1] if i else u for i, u in enumerate(r.uses))
        mark = "*" if not speed(r.config.model).measured else ""
        return (f"{r.name:<26} {_cut(uses, 58):<58} {r.config.epochs:>6} {run_status(store, r.config):<22} "
                f"{hours(r.seconds()) + mark:>9}")

    for r in sorted(plan.runs, key=lambda r: (CHAPTERS.index(r.chapters[0]) if r.chapters[0] in CHAPTERS else 99)):
        lines.append(row(r))
    lines += ["", "per chapter (a run shared by chapters counts in each): one run at a time, and packed (the chapter's "
                  "runs sharing one GPU)"]
    uses = 0
    for name, ch in plan.chapters.items():
        runs = [r for r in plan.runs if name in r.chapters]
        uses += len(runs)
        lines.append(f"  {name:<24} {len(runs):>3} runs  {hours(sum(r.seconds() for r in runs)):>9}  "
                     f"{hours(packed([r.config for r in runs])):>9} packed")
    total = sum(r.seconds() for r in plan.runs)
    lines.append(f"total {len(plan.runs)} distinct runs ({uses} chapter uses), {total / 3600:.2f} GPU-hours "
                 "(chapters 1-6, one run at a time on one GPU)")
    lines.append(f"packed: {packed([r.config for r in plan.runs]) / 3600:.2f} GPU-hours (the same runs sharing one GPU, "
                 "`python -m cifar_utils.train`'s --jobs auto on a CUDA machine)")
    if plan.settling:
        lines += ["", f"optional: the claims' settling seeds ({len(SETTLE_SEEDS)} per arm; "
                      "`python -m cifar_utils.train --settle`), not part of the book:", head, "-" * len(head)]
        lines += [row(r) for r in plan.settling]
        lines.append(f"settling total {len(plan.settling)} runs, "
                     f"{sum(r.seconds() for r in plan.settling) / 3600:.2f} GPU-hours, "
                     f"{packed([r.config for r in plan.settling]) / 3600:.2f} packed")
    lines += ["", f"GPU time: {SOURCE}.", f"Packed: {PACKING_SOURCE}"]
    if estimated:
        lines.append(f"* estimated from training FLOPs (not measured): {', '.join(sorted(estimated))}")
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cifar_utils.plan --profile full [--chapters 01_architectures,...]``: print the plan."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m cifar_utils.plan", description=main.__doc__)
    ap.add_argument("--profile", default="full", help="params/<profile>.yaml (default: full)")
    ap.add_argument("--chapters", default="", help="comma-separated chapter ids (default: every chapter of the profile)")
    ap.add_argument("--runs-dir", default=None, help="the store (default: $CIFAR_UTILS_RUNS, else runs/<profile>)")
    args = ap.parse_args(argv)
    chapters = expand_chapters(args.chapters)
    plan = for_profile(args.profile, chapters=chapters)
    print(table(plan, store_for(args.profile, args.runs_dir)))
    return 0


def expand_chapters(text: str) -> list[str] | None:
    """``"01,03_training_choices"`` -> chapter ids (a number prefix is enough); empty -> None (all)."""
    if not text.strip():
        return None
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        matches = [c for c in CHAPTERS if c == part or c.startswith(part + "_") or c.split("_")[0] == part]
        if len(matches) != 1:
            raise SystemExit(f"unknown chapter {part!r}; chapters that train: {', '.join(CHAPTERS)}")
        out.append(matches[0])
    return out


if __name__ == "__main__":
    raise SystemExit(main())
