"""The training engine: configs, one training loop, callbacks, and a crash-safe results store.

>>> from cifar_utils.engine import RunConfig, run
>>> result = run(RunConfig(model="resnet18", epochs=200))          # doctest: +SKIP
>>> result.best_test_error, result.history_frame().tail()          # doctest: +SKIP

* :class:`RunConfig` -- every setting of a run; defaults are the report's protocol (SGD lr 0.1,
  momentum 0.9, weight decay 5e-4, batch 128, 200 epochs, crop+flip, LR halved when the *test*
  error plateaus -- the report used the test set as its validation set).
* :func:`run` -- train, or load a finished run from the store, or resume an interrupted one.
* :func:`run_many` -- several runs in parallel processes.
* :func:`train_epoch` / :func:`train_step` / :class:`StepSetup` -- the loop's own step, which
  ``bench/`` times (``run`` is what chapters call).
* :mod:`cifar_utils.engine.runtime` -- device, precision, channels_last and RNG helpers
  (:func:`resolve_device`...).
* :class:`Callback` -- hooks into the loop (``after_backward`` / ``after_step`` per step...).
* :class:`RunStore` / :func:`load_run` / :class:`Run` -- the stored results, and beneath them, read-only,
  bundles of runs published with the repository (:mod:`cifar_utils.engine.bundle`).
* :func:`create_loss` / :data:`LOSSES` -- ``ce``, ``bce``, ``mse``, ``huber`` (see
  :mod:`cifar_utils.engine.losses` for exactly what each compares).

:mod:`cifar_utils.engine.testing` (imported on demand) registers a tiny model and dataset for
tests and docs.
"""

from .callbacks import Callback, LambdaCallback, TrainState
from .config import RunConfig
from .datasets import list_datasets, register_dataset
from .losses import LOSSES, create_loss
from .loop import EpochResult, StepSetup, evaluate, run, train_epoch, train_step
from .parallel import RunManyError, run_many
from .runtime import resolve_device, resolve_precision
from .store import Run, RunStore, load_run

__all__ = [
    "Callback", "LambdaCallback", "TrainState", "RunConfig", "list_datasets", "register_dataset", "LOSSES",
    "create_loss", "EpochResult", "StepSetup", "evaluate", "run", "train_epoch", "train_step", "resolve_device",
    "resolve_precision", "RunManyError", "run_many", "Run", "RunStore", "load_run",
]
