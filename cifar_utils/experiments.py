"""The chapters' experiments as run configurations, so a notebook only states its parameters.

Every chapter trains through :func:`cifar_utils.engine.run_many`; this module turns a chapter's
parameters into the :class:`~cifar_utils.engine.RunConfig` objects of its runs. Identical configs
(e.g. chapter 3's ReLU + cross-entropy + Adam baseline, shared by its three sweeps) are trained once:
the results store finds them by their hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .engine import RunConfig

#: Chapter 3's sweeps: what varies, and the variants in the report's order.
SWEEPS: dict[str, tuple[str, ...]] = {
    "activation": ("relu", "sigmoid", "leaky_relu", "elu", "gelu"),
    "loss": ("ce", "bce", "mse", "huber"),
    "optimizer": ("sgd", "adagrad", "adadelta", "adam"),
}
LABELS: dict[str, str] = {
    "relu": "ReLU", "sigmoid": "Sigmoid", "leaky_relu": "LeakyReLU", "elu": "ELU", "gelu": "GELU",
    "ce": "CrossEntropy", "bce": "BCE", "mse": "MSE", "huber": "Huber",
    "sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta", "adam": "Adam",
}


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
                     data: DataChoice, device: str = "auto") -> dict[str, list[RunConfig]]:
    """Chapters 1-2: each model under the report's fixed protocol (the RunConfig defaults:
    SGD 0.1, momentum 0.9, wd 5e-4, LR x0.5 on test-error plateau, crop + flip), one run per seed."""
    models = list(models)
    if not models:
        raise ValueError("models is empty: name at least one network (see cifar_utils.models.list_models())")
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed, e.g. [0]")
    return {m: [RunConfig(model=m, epochs=epochs, batch_size=batch_size, seed=s, device=device, **data.fields())
                for s in seeds] for m in models}


def training_choice_base(*, epochs: int, batch_size: int, lr: float, data: DataChoice, seed: int = 0,
                         device: str = "auto") -> RunConfig:
    """Chapter 3's base run: ResNet-18, ReLU, cross-entropy, Adam at ``lr``, LR x0.5 on plateau."""
    return RunConfig(model="resnet18", optimizer="adam", lr=lr, epochs=epochs, batch_size=batch_size,
                     seed=seed, device=device, **data.fields())


def sweep_configs(sweep: str, base: RunConfig, variants: Sequence[str] | None = None) -> dict[str, RunConfig]:
    """Chapter 3: one config per variant of ``sweep`` (activation, loss or optimizer), keyed by label."""
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r}; choose one of {', '.join(SWEEPS)}")
    variants = list(variants or SWEEPS[sweep])
    unknown = [v for v in variants if v not in SWEEPS[sweep]]
    if unknown:
        raise ValueError(f"unknown {sweep} variant(s) {', '.join(unknown)}; choose from {', '.join(SWEEPS[sweep])}")
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
            cfg = base.replace(optimizer=v)
        out[LABELS[v]] = cfg
    return out


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


# --- chapter 6: DessiLBI ---------------------------------------------------------------------------

#: Chapter 6's labels of the two LeNet runs and of the two ResNet-18 runs.
DESSILBI_LENET = ("SLBI", "SGD")
DESSILBI_RESNET = ("SLBI-Adam", "Adam")


def dessilbi_lenet_configs(*, epochs: int, batch_size: int, lr: float, kappa: float, mu: float, lam: float,
                           lr_step: int, data: DataChoice, momentum: float = 0.9, seed: int = 0,
                           device: str = "auto") -> dict[str, RunConfig]:
    """Chapter 6, Figure 18: LeNet on MNIST, SLBI against SGD with momentum, both at ``lr`` with no
    weight decay, LR x0.1 every ``lr_step`` epochs, no augmentation (report: 60 epochs, batch 128,
    lr 0.1, kappa 1, mu 20, step 20). SLBI's momentum is the same ``momentum`` field."""
    if lr_step < 1:
        raise ValueError(f"lr_step must be >= 1 (epochs between LR x0.1 steps), got {lr_step!r}")
    base = RunConfig(model="lenet", dataset="mnist", optimizer="sgd", lr=lr, momentum=momentum, weight_decay=0.0,
                     batch_size=batch_size, epochs=epochs, scheduler="step",
                     scheduler_options={"step_size": lr_step, "gamma": 0.1}, augment=False, seed=seed,
                     device=device, **data.fields())
    slbi = base.replace(optimizer="slbi", optimizer_options={"kappa": kappa, "mu": mu, "lam": lam})
    return {"SLBI": slbi, "SGD": base}


def dessilbi_resnet_configs(base: RunConfig, *, kappa: float, mu: float, lam: float) -> dict[str, RunConfig]:
    """Chapter 6, Figure 20: chapter 3's Adam baseline (``base``, from :func:`training_choice_base`,
    shared through the store) and the same run with SLBI-Adam."""
    if base.optimizer != "adam":
        raise ValueError(f"the base run must be chapter 3's Adam baseline, got optimizer={base.optimizer!r}")
    slbi = base.replace(optimizer="slbi_adam", optimizer_options={"kappa": kappa, "mu": mu, "lam": lam})
    return {"SLBI-Adam": slbi, "Adam": base}
