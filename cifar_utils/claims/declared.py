"""Every conclusion of the report, declared once: its chapter, the report's sentence, the arms it compares
and the rule that judges them (:mod:`cifar_utils.claims.rules`).

A claim's arms are chosen among its chapter's runs as the plan gives them (:mod:`cifar_utils.plan`, the
one definition of every chapter's runs): ``arms(chapter_runs) -> {arm name: Arm}``, so the ledger judges
exactly the runs the chapter trains. An arm the chapter does not train under its parameters (a model left
out of ``models``, say) is missing, and the claim reads inconclusive. ``settle=False`` marks a claim that
more seeds would not settle (chapter 5's uses its learning rates as replicates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..chapters import CH1, CH2, CH3, CH4, CH5, CH6
from .rules import (EQUIVALENCE_MARGIN, Rule, beats, bn_rule, equivalent, lags, not_worse, ordered,
                    pruning_safe)

#: ``chapter_runs -> {arm name: Arm or None}`` (a :class:`cifar_utils.plan.ChapterRuns`; None: not planned).
Select = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class Claim:
    """One conclusion of the report (see the module doc)."""

    id: str
    chapter: str
    section: str
    sentence: str
    measure: str
    rule_text: str
    arms: Select
    rule: Rule
    settle: bool = True

    @property
    def link(self) -> str:
        """The chapter's page in the HTML book, relative to the other pages (a generated Markdown
        output is rendered as CommonMark, so a link to the notebook would not be resolved)."""
        return f"{self.chapter}.html"


def labels(*names: str, path: Sequence[str] = ()) -> Select:
    """The arms ``names`` at ``path`` (chapters 1, 2 and 4: model names / roles; chapter 6: ``("lenet",)``
    or ``("resnet",)``)."""
    return lambda chapter: {name: chapter.arm(path, name) for name in names}


def group(path: Sequence[str]) -> Select:
    """Every arm at ``path`` (chapter 3: one sweep, ``("activation",)``...)."""
    return lambda chapter: dict(chapter.group(path))


def bn_arms(chapter) -> dict[str, Any]:
    """Chapter 5: every model at every learning rate, named ``"<model> @ <lr>"`` (what :func:`bn_rule` reads)."""
    return {f"{a.path[0]} @ {a.label:g}": a for a in chapter.arms}


_ERR = "best-epoch test error, points"
_OTHERS_CH1 = ("resnet18", "preact_resnet18", "resnext29_32x4d", "densenet121", "dpn26", "dla")
_OTHERS_CH2 = ("resnet50", "resnext50_2x40d", "resnext50_8x14d")

#: Every claim of the report, declared once, in the book's order.
CLAIMS: tuple[Claim, ...] = (
    Claim("wrn_best", CH1, "Verdicts",
          "WRN-28-10 has the lowest error of the seven architectures.",
          f"error(best other) - error(WRN-28-10), {_ERR}", "supported if the 95 % interval lies above 0",
          labels(*_OTHERS_CH1, "wrn28_10"), beats(list(_OTHERS_CH1), "wrn28_10")),
    Claim("resnext29_matches_resnet18", CH1, "Verdicts",
          "ResNeXt-29 32x4d reaches ResNet-18's error with less than half its parameters.",
          f"error(ResNet-18) - error(ResNeXt-29 32x4d), {_ERR}",
          f"supported if the interval lies above -{EQUIVALENCE_MARGIN:g} (at most {EQUIVALENCE_MARGIN:g} pts worse)",
          labels("resnet18", "resnext29_32x4d"), not_worse("resnext29_32x4d", "resnet18")),
    Claim("densenet_matches_resnet18", CH1, "Verdicts",
          "DenseNet-121 reaches ResNet-18's error with less than half its parameters.",
          f"error(ResNet-18) - error(DenseNet-121), {_ERR}",
          f"supported if the interval lies above -{EQUIVALENCE_MARGIN:g} (at most {EQUIVALENCE_MARGIN:g} pts worse)",
          labels("resnet18", "densenet121"), not_worse("densenet121", "resnet18")),
    Claim("depth", CH2, "Verdicts",
          "Deeper is not always better: ResNet-18 beats ResNet-50.",
          f"error(ResNet-50) - error(ResNet-18), {_ERR}", "supported if the 95 % interval lies above 0",
          labels("resnet18", "resnet50"), beats("resnet50", "resnet18")),
    Claim("width", CH2, "Verdicts",
          "Wider is better: ResNeXt-29 2x64d beats 2x32d.",
          f"error(2x32d) - error(2x64d), {_ERR}", "supported if the 95 % interval lies above 0",
          labels("resnext29_2x32d", "resnext29_2x64d"), beats("resnext29_2x32d", "resnext29_2x64d")),
    Claim("cardinality", CH2, "Verdicts",
          "More cardinality helps: ResNeXt-29 8x64d beats 2x64d.",
          f"error(2x64d) - error(8x64d), {_ERR}", "supported if the 95 % interval lies above 0",
          labels("resnext29_2x64d", "resnext29_8x64d"), beats("resnext29_2x64d", "resnext29_8x64d")),
    Claim("cardinality_over_width", CH2, "Verdicts",
          "More cardinality beats more width at equal complexity: ResNeXt-50 32x4d is the best of ResNet-50, "
          "ResNeXt-50 2x40d and 8x14d.",
          f"error(best other) - error(32x4d), {_ERR}", "supported if the 95 % interval lies above 0",
          labels(*_OTHERS_CH2, "resnext50_32x4d"), beats(list(_OTHERS_CH2), "resnext50_32x4d")),
    Claim("representation_not_regularisation", CH2, "Verdicts",
          "ResNeXt-50 32x4d gains from representation, not regularisation: it also has the lowest training error.",
          "train error(best other) - train error(32x4d), last epoch, points",
          "supported if the 95 % interval lies above 0",
          labels(*_OTHERS_CH2, "resnext50_32x4d"), beats(list(_OTHERS_CH2), "resnext50_32x4d", metric="train_error")),
    Claim("sigmoid_lags", CH3, "Verdicts",
          "Sigmoid lags far behind the other activations.",
          f"error(Sigmoid) - error(worst other activation), {_ERR}", "supported if the 95 % interval lies above 0",
          group(("activation",)), lags("Sigmoid")),
    Claim("loss_order", CH3, "Verdicts",
          "CE > BCE > MSE > Huber.",
          f"smallest adjacent gap error(next) - error(previous), {_ERR}",
          "supported if every adjacent gap's interval lies above 0; contradicted if any lies below",
          labels("CrossEntropy", "BCE", "MSE", "Huber", path=("loss",)), ordered(["CrossEntropy", "BCE", "MSE", "Huber"])),
    Claim("adagrad_worst", CH3, "Verdicts",
          "Adagrad is the worst optimizer.",
          f"error(Adagrad) - error(worst other optimizer), {_ERR}", "supported if the 95 % interval lies above 0",
          group(("optimizer",)), lags("Adagrad")),
    Claim("cutout_helps", CH4, "Verdicts",
          "Cutout helps WRN-28-10 (3.35 % error with it against 4.27 % without).",
          f"error(WRN-28-10) - error(WRN-28-10 + Cutout), {_ERR}", "supported if the 95 % interval lies above 0",
          labels("wrn28_10", "wrn28_10_cutout"), beats("wrn28_10", "wrn28_10_cutout")),
    Claim("bn_smoother", CH5, "Verdicts",
          "BN reduces the loss variance and makes the gradients more predictive.",
          "smallest median no-BN / BN ratio (loss variation, last-layer gradient change) over the learning rates",
          "supported if every ratio > 1 (learning rates as replicates), contradicted if every ratio < 1",
          bn_arms, bn_rule, settle=False),
    Claim("prune_conv3_60", CH6, "Verdicts", "Pruning conv3 is safe up to about 60 %.",
          "test accuracy drop at 60 % of conv3 pruned, points",
          f"supported if the drop's 95 % interval lies below {EQUIVALENCE_MARGIN:g} points",
          labels("SLBI", path=("lenet",)), pruning_safe("conv3", 60)),
    Claim("slbi_adam_equal", CH6, "Verdicts", "SLBI-Adam and Adam do not differ significantly.",
          f"error(SLBI-Adam) - error(Adam), {_ERR}",
          f"supported if the 95 % interval lies within +-{EQUIVALENCE_MARGIN:g}",
          labels("SLBI-Adam", "Adam", path=("resnet",)), equivalent("SLBI-Adam", "Adam")),
)


def claims(chapter: str | None = None) -> list[Claim]:
    """The declared claims, all or one chapter's (``"02_ablations"``...)."""
    return [c for c in CLAIMS if chapter is None or c.chapter == chapter]


def chapters() -> list[str]:
    """The chapters with claims, in order."""
    return list(dict.fromkeys(c.chapter for c in CLAIMS))


def claim_by_id(claim_id: str) -> Claim:
    """The declared claim ``claim_id``; an unknown id names the known ones."""
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise ValueError(f"unknown claim {claim_id!r}; claims: {', '.join(c.id for c in CLAIMS)}")
