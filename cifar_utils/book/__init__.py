"""The book runner: papermill executes the chapters, Jupyter Book renders them.

``python -m cifar_utils.book --profile smoke [--chapters 01,03]``. Imports no torch.
"""

from .params import ProfileError, load_profile, notebook_parameters, validate_profile
from .runner import (BookRun, ChapterFailed, RunnerSettings, build_book, runner_settings, select_chapters,
                     toc_notebooks)

__all__ = ["BookRun", "ChapterFailed", "ProfileError", "RunnerSettings", "build_book", "load_profile",
           "notebook_parameters", "runner_settings", "select_chapters", "toc_notebooks", "validate_profile"]
