"""The chapters' experiments as run configurations, so a notebook only states its parameters.

Every chapter trains through :func:`cifar_utils.engine.run_many`; this module turns a chapter's
parameters into the :class:`~cifar_utils.engine.RunConfig` objects of its runs. Identical configs
(e.g. chapter 3's ReLU + cross-entropy + Adam baseline, shared by its three sweeps) are trained once:
the results store finds them by their hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .engine import RunConfig

#: Chapter 3's sweeps: what varies, and the variants in the report's order. The loss sweep's MSE and
#: Huber are computed on the logits (see :mod:`cifar_utils.engine.losses` for why they have new names).
SWEEPS: dict[str, tuple[str, ...]] = {
    "activation": ("relu", "sigmoid", "leaky_relu", "elu", "gelu"),
    "loss": ("ce", "bce", "mse_logits", "huber_logits"),
    "optimizer": ("sgd", "adagrad", "adadelta", "adam"),
}
#: Variants a sweep accepts beyond its defaults: the softmax-probability MSE / Huber the chapter used
#: first (Huber = MSE / 2 there), to show that degenerate pair next to the logit versions.
EXTRA_VARIANTS: dict[str, tuple[str, ...]] = {"loss": ("mse", "huber")}
LABELS: dict[str, str] = {
    "relu": "ReLU", "sigmoid": "Sigmoid", "leaky_relu": "LeakyReLU", "elu": "ELU", "gelu": "GELU",
    "ce": "CrossEntropy", "bce": "BCE", "mse_logits": "MSE", "huber_logits": "Huber",
    "mse": "MSE (softmax)", "huber": "Huber (softmax)",
    "sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta", "adam": "Adam",
}
#: Each optimizer's conventional learning rate (chapter 3's ``optimizer_lrs`` default): SGD 0.1 with
#: momentum 0.9 as in chapter 1; Adagrad 1e-2 (PyTorch's default); Adadelta 1.0 (its update is
#: already scaled by the ratio of running RMS values; PyTorch's default); Adam 1e-3 (its default).
#: The report gives one learning rate, 1e-3, without saying whether it changed it per optimizer.
DEFAULT_OPTIMIZER_LRS: dict[str, float] = {"sgd": 0.1, "adagrad": 1e-2, "adadelta": 1.0, "adam": 1e-3}
#: The opt-in learning-rate grid: factors applied to each optimizer's learning rate.
LR_GRID_FACTORS: tuple[float, ...] = (0.1, 1.0, 10.0)


@dataclass(frozen=True)
class DataChoice:
    """Where a chapter's images come from and how many it uses (None: the whole split)."""

    source: str = "auto"
    data_root: str | None = None
    train_size: int | None = None
    test_size: int | None = None

    def fields(self) -> dict:
        return {"source": self.source, "data_root": self.data_root,
                "train_size": self.train_size, "test_size": self.test_size}


def protocol_configs(models: Iterable[str], *, epochs: int, batch_size: int, seeds: Sequence[int],
                     data: DataChoice, device: str = "auto", precision: str = "auto",
                     val_size: int = 0) -> dict[str, list[RunConfig]]:
    """Chapters 1-2: each model under the report's fixed protocol (the RunConfig defaults:
    SGD 0.1, momentum 0.9, wd 5e-4, LR x0.5 on test-error plateau, crop + flip), one run per seed.

    ``val_size > 0`` holds that many training images out, evaluates them every epoch and lets the
    learning-rate schedule watch them instead of the test set (``monitor="val"``), so the test error
    at the epoch that was best on the held-out images is chosen without the test set at all (the
    tables' ``val_selected_error``). ``val_size=0`` is the report's protocol (the test set steers)."""
    models = list(models)
    if not models:
        raise ValueError("models is empty: name at least one network (see cifar_utils.models.list_models())")
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed, e.g. [0]")
    return {m: [RunConfig(model=m, epochs=epochs, batch_size=batch_size, seed=s, device=device,
                          precision=precision, val_size=val_size, monitor="val" if val_size else "test",
                          **data.fields())
                for s in seeds] for m in models}


def training_choice_base(*, epochs: int, batch_size: int, lr: float, data: DataChoice, seed: int = 0,
                         device: str = "auto", precision: str = "auto") -> RunConfig:
    """Chapter 3's base run: ResNet-18, ReLU, cross-entropy, Adam at ``lr``, LR x0.5 on plateau."""
    return RunConfig(model="resnet18", optimizer="adam", lr=lr, epochs=epochs, batch_size=batch_size,
                     seed=seed, device=device, precision=precision, **data.fields())


def _check_lrs(optimizers: Sequence[str], lrs: Mapping[str, float]) -> None:
    missing = [o for o in optimizers if o not in lrs]
    if missing:
        raise ValueError(f"optimizer_lrs has no learning rate for {', '.join(missing)}; give one per optimizer, "
                         f"e.g. {DEFAULT_OPTIMIZER_LRS}")
    bad = {o: lr for o, lr in lrs.items() if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0}
    if bad:
        raise ValueError(f"optimizer_lrs must map optimizer names to learning rates > 0, got {bad}")


def sweep_configs(sweep: str, base: RunConfig, variants: Sequence[str] | None = None,
                  lrs: Mapping[str, float] | None = None) -> dict[str, RunConfig]:
    """Chapter 3: one config per variant of ``sweep`` (activation, loss or optimizer), keyed by label.

    ``lrs`` (optimizer sweep only): each optimizer's learning rate, e.g. :data:`DEFAULT_OPTIMIZER_LRS`;
    None runs every optimizer at ``base.lr`` (the report's choice). An optimizer whose config equals
    ``base`` (Adam at the base's lr) is the same run as the other sweeps' baseline."""
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r}; choose one of {', '.join(SWEEPS)}")
    variants = list(variants or SWEEPS[sweep])
    allowed = SWEEPS[sweep] + EXTRA_VARIANTS.get(sweep, ())
    unknown = [v for v in variants if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {sweep} variant(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")
    if lrs is not None:
        if sweep != "optimizer":
            raise ValueError("lrs (per-optimizer learning rates) applies to the optimizer sweep only")
        _check_lrs(variants, lrs)
    out = {}
    for v in variants:
        if sweep == "activation":
            options = {k: o for k, o in base.model_options.items() if k != "activation"}
            if v != "relu":  # ReLU is the model's default: leave it implicit so the baseline run is shared
                options["activation"] = v
            cfg = base.replace(model_options=options)
        elif sweep == "loss":
            cfg = base.replace(loss=v)
        else:
            cfg = base.replace(optimizer=v, lr=float(lrs[v]) if lrs is not None else base.lr)
        out[LABELS[v]] = cfg
    return out


def lr_grid_configs(base: RunConfig, lrs: Mapping[str, float], optimizers: Sequence[str] | None = None,
                    factors: Sequence[float] = LR_GRID_FACTORS, val_size: int = 5000) -> dict[str, dict[float, RunConfig]]:
    """Chapter 3's opt-in tuning: each optimizer at ``lrs[optimizer] * factor`` for every factor, with
    ``val_size`` training images held out; the schedule watches them (``monitor="val"``), so the
    test set steers nothing and :func:`cifar_utils.tables.lr_grid_table` can choose on them alone.
    Label -> {learning rate -> config}."""
    optimizers = list(optimizers or SWEEPS["optimizer"])
    unknown = [o for o in optimizers if o not in SWEEPS["optimizer"]]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {', '.join(unknown)}; choose from {', '.join(SWEEPS['optimizer'])}")
    _check_lrs(optimizers, lrs)
    if not factors or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not f > 0 for f in factors):
        raise ValueError(f"lr_grid must be a non-empty list of factors > 0, e.g. {list(LR_GRID_FACTORS)}; got {factors!r}")
    if not (isinstance(val_size, int) and val_size > 0):
        raise ValueError(f"the learning-rate grid chooses on a held-out split: val_size must be > 0, got {val_size!r}")
    held_out = base.replace(val_size=val_size, monitor="val")
    grid = {}
    for o in optimizers:
        rates = [float(f"{float(lrs[o]) * f:.6g}") for f in factors]  # 0.01 * 0.1 -> 0.001, not 0.0010000000000000002
        grid[LABELS[o]] = {lr: held_out.replace(optimizer=o, lr=lr) for lr in rates}
    return grid


def results_note(profile: str, data: DataChoice, epochs: int, protocol_epochs: int) -> str | None:
    """A label for figures and tables whose numbers do not come from the report's protocol (None when
    they do): the profile, the data subset and the epoch count."""
    reduced = []
    if data.train_size is not None:
        reduced.append(f"{data.train_size} training images")
    if data.test_size is not None:
        reduced.append(f"{data.test_size} test images")
    if data.source == "sample":
        reduced.append("embedded sample")
    if epochs != protocol_epochs:
        reduced.append(f"{epochs} of {protocol_epochs} epochs")
    if not reduced and profile != "smoke":
        return None
    return f"{profile} profile: " + ", ".join(reduced or ["reduced run"]) + "; not comparable with the report"


#: Chapter 5's networks (VGG-A without and with BatchNorm) and the report's learning rates.
BN_MODELS: tuple[str, ...] = ("vgg_a", "vgg_a_bn")
BN_LRS: tuple[float, ...] = (2e-3, 1e-3, 5e-4, 1e-4)


def batchnorm_configs(*, lrs: Sequence[float] = BN_LRS, epochs: int = 20, batch_size: int = 128, data: DataChoice,
                      seed: int = 0, weight_decay: float = 0.0, augment: bool = True,
                      device: str = "auto", precision: str = "auto") -> dict[str, dict[float, RunConfig]]:
    """Chapter 5: VGG-A and VGG-A-BN trained with Adam at each learning rate, kept constant
    (``scheduler="none"``: the per-step measurements compare learning rates, and a plateau schedule
    would change them mid-run). ``weight_decay`` defaults to 0 so that the gradient the callbacks
    measure is the one Adam follows (the report does not state one). Returns model -> {lr: config}."""
    lrs = [float(lr) for lr in lrs]
    if not lrs:
        raise ValueError("lrs is empty: give at least one learning rate, e.g. [1e-3]")
    if any(not lr > 0 for lr in lrs):
        raise ValueError(f"learning rates must be > 0, got {lrs}")
    return {m: {lr: RunConfig(model=m, optimizer="adam", lr=lr, weight_decay=float(weight_decay), scheduler="none",
                              epochs=epochs, batch_size=batch_size, augment=augment, seed=seed, device=device,
                              precision=precision, **data.fields())
                for lr in lrs} for m in BN_MODELS}


#: Chapter 4's runs, by role: chapter 1's ResNet-18 and WRN-28-10, and the WRN-28-10 with Cutout.
BEST_MODEL_RUNS: dict[str, str] = {"resnet18": "ResNet-18", "wrn28_10": "WRN-28-10",
                                   "wrn28_10_cutout": "WRN-28-10 + Cutout"}


def best_model_configs(*, epochs: int, batch_size: int, data: DataChoice, seed: int = 0, cutout: int = 16,
                       device: str = "auto", precision: str = "auto") -> dict[str, RunConfig]:
    """Chapter 4's runs (keys of :data:`BEST_MODEL_RUNS`). The ResNet-18 whose maps are shown and the
    WRN-28-10 without Cutout are built by :func:`protocol_configs` exactly as chapter 1 builds them, so
    with chapter 1's parameters they are chapter 1's runs (same key: ``run()`` loads them from the
    store). The Cutout run differs from that WRN-28-10 in ``cutout`` alone."""
    if not (isinstance(cutout, int) and not isinstance(cutout, bool) and cutout >= 1):
        raise ValueError(f"cutout must be the hole side in pixels, an integer >= 1 (the paper: 16), got {cutout!r}")
    ch1 = protocol_configs(["resnet18", "wrn28_10"], epochs=epochs, batch_size=batch_size, seeds=[seed], data=data,
                           device=device, precision=precision)
    wrn = ch1["wrn28_10"][0]
    return {"resnet18": ch1["resnet18"][0], "wrn28_10": wrn, "wrn28_10_cutout": wrn.replace(cutout=cutout)}


# --- chapter 6: DessiLBI ---------------------------------------------------------------------------

#: Chapter 6's labels of the two LeNet runs and of the two ResNet-18 runs.
DESSILBI_LENET = ("SLBI", "SGD")
DESSILBI_RESNET = ("SLBI-Adam", "Adam")


def dessilbi_lenet_configs(*, epochs: int, batch_size: int, lr: float, kappa: float, mu: float, lam: float,
                           lr_step: int, data: DataChoice, momentum: float = 0.9, seed: int = 0,
                           device: str = "auto", precision: str = "auto") -> dict[str, RunConfig]:
    """Chapter 6, Figure 18: LeNet on MNIST, SLBI against SGD with momentum, both at ``lr`` with no
    weight decay, LR x0.1 every ``lr_step`` epochs, no augmentation (report: 60 epochs, batch 128,
    lr 0.1, kappa 1, mu 20, step 20). SLBI's momentum is the same ``momentum`` field."""
    if lr_step < 1:
        raise ValueError(f"lr_step must be >= 1 (epochs between LR x0.1 steps), got {lr_step!r}")
    base = RunConfig(model="lenet", dataset="mnist", optimizer="sgd", lr=lr, momentum=momentum, weight_decay=0.0,
                     batch_size=batch_size, epochs=epochs, scheduler="step",
                     scheduler_options={"step_size": lr_step, "gamma": 0.1}, augment=False, seed=seed,
                     device=device, precision=precision, **data.fields())
    slbi = base.replace(optimizer="slbi", optimizer_options={"kappa": kappa, "mu": mu, "lam": lam})
    return {"SLBI": slbi, "SGD": base}


def dessilbi_resnet_configs(base: RunConfig, *, kappa: float, mu: float, lam: float) -> dict[str, RunConfig]:
    """Chapter 6, Figure 20: chapter 3's Adam baseline (``base``, from :func:`training_choice_base`,
    shared through the store) and the same run with SLBI-Adam."""
    if base.optimizer != "adam":
        raise ValueError(f"the base run must be chapter 3's Adam baseline, got optimizer={base.optimizer!r}")
    slbi = base.replace(optimizer="slbi_adam", optimizer_options={"kappa": kappa, "mu": mu, "lam": lam})
    return {"SLBI-Adam": slbi, "Adam": base}
