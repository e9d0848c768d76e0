"""Whether a run collapsed: a network that predicts one class (test accuracy at chance, training loss
stuck at ln(classes)) for several epochs has stopped learning, and its final accuracy says nothing
about the method. LeNet on MNIST at lr 0.1 with momentum 0.9 sits near the edge of stability: some
seeds collapse within the first epochs (measured in ``bench/slbi_fidelity.py``). Tables name such a run
rather than averaging it with the others (:func:`cifar_utils.replicates.status`).

Depends on nothing but the history records (``test_acc`` in percent, ``train_loss``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: How many epochs in a row at chance make a collapse (one bad epoch early in training is not one).
MIN_EPOCHS = 3
#: "At chance": test accuracy at most this many times the chance level (10 % for ten classes -> 15 %).
CHANCE_FACTOR = 1.5
#: "Loss stuck at ln(classes)": the training loss within this fraction of ln(classes).
LOSS_TOLERANCE = 0.05


@dataclass(frozen=True)
class Collapse:
    """A collapse: from ``first_epoch`` (1-based) for ``epochs`` epochs, to the end when ``to_end``."""

    first_epoch: int
    epochs: int
    to_end: bool
    accuracy: float  # the last collapsed epoch's test accuracy (percent)

    def describe(self) -> str:
        if self.to_end:
            return f"collapsed (at chance, {self.accuracy:.2f} %, from epoch {self.first_epoch} to the end)"
        return f"recovered from a collapse (at chance for {self.epochs} epochs from epoch {self.first_epoch})"

    def as_dict(self) -> dict:
        return {"first_epoch": self.first_epoch, "epochs": self.epochs, "to_end": self.to_end,
                "accuracy": self.accuracy}


def at_chance(record: Mapping, num_classes: int = 10) -> bool:
    """Whether one epoch's record is at chance: test accuracy <= ``CHANCE_FACTOR`` x chance and, where the
    record has it, the training loss within ``LOSS_TOLERANCE`` of ln(classes) (or not finite)."""
    acc = record.get("test_acc")
    if acc is None or not math.isfinite(float(acc)) or float(acc) > CHANCE_FACTOR * 100.0 / num_classes:
        return False
    loss = record.get("train_loss")
    if loss is None or not math.isfinite(float(loss)):
        return True
    return abs(float(loss) - math.log(num_classes)) <= LOSS_TOLERANCE * math.log(num_classes)


def collapse(history: Sequence[Mapping], num_classes: int = 10, min_epochs: int = MIN_EPOCHS) -> Collapse | None:
    """The run's longest stretch of ``min_epochs`` or more epochs at chance (the latest if tied), or None. A
    stretch that lasts to the last epoch is a collapse (the run ended at chance); an earlier one, a collapse
    the run recovered from (``to_end`` False: its final accuracy is a result like any other). A run of fewer
    than ``min_epochs`` epochs (a smoke run that has not learned yet) is never called collapsed."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
    if min_epochs < 1:
        raise ValueError(f"min_epochs must be >= 1, got {min_epochs!r}")
    flags = [at_chance(r, num_classes) for r in history]
    need = min_epochs
    best: tuple[int, int] | None = None  # (start index, length)
    start = None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            length = i - start
            if length >= need and (best is None or length >= best[1]):
                best = (start, length)
            start = None
    if best is None:
        return None
    s, n = best
    return Collapse(first_epoch=s + 1, epochs=n, to_end=s + n == len(flags),
                    accuracy=float(history[s + n - 1]["test_acc"]))
