"""The claims ledger: every conclusion of the report, declared once, with a verdict computed from the runs.

* :mod:`~cifar_utils.claims.rules` -- the measures, the noise (seed spread, Welch's interval) and the
  rules that turn runs into an :class:`Outcome`: **supported**, **contradicted** or **inconclusive**;
* :mod:`~cifar_utils.claims.declared` -- the claims (:data:`CLAIMS`): chapter, the report's sentence,
  the arms among the chapter's planned runs (:mod:`cifar_utils.plan`), the rule;
* :mod:`~cifar_utils.claims.verdicts` -- :func:`evaluate` / :func:`evaluate_chapter` / :func:`ledger` on a
  store (loading only, never training) and the projected cost of settling a claim;
* :mod:`~cifar_utils.claims.render` -- tables, HTML and generated sentences.

``python -m cifar_utils.claims --profile full`` prints the ledger; the extra seeds that settle the claims
are trained by ``python -m cifar_utils.train --profile full --settle``.
"""

from .declared import CLAIMS, Claim, chapters, claim_by_id, claims
from .rules import (CONTRADICTED, EQUIVALENCE_MARGIN, INCONCLUSIVE, SUPPORTED, VERDICTS, Outcome, SeedSpread, beats,
                    bn_rule, difference, equivalent, judge, judge_equivalent, lags, not_worse, ordered, pruning_safe,
                    seed_spread, t975)
from .verdicts import Result, chapter_params, evaluate, evaluate_chapter, gpu_hours, ledger
from .render import html_details, html_table, markdown, sentences, show, summary, table

__all__ = [
    "CLAIMS", "Claim", "chapters", "claim_by_id", "claims", "CONTRADICTED", "EQUIVALENCE_MARGIN", "INCONCLUSIVE",
    "SUPPORTED", "VERDICTS", "Outcome", "SeedSpread", "beats", "bn_rule", "difference", "equivalent", "judge",
    "judge_equivalent", "lags", "not_worse", "ordered", "pruning_safe", "seed_spread", "t975", "Result", "chapter_params", "evaluate", "evaluate_chapter", "gpu_hours", "ledger", "html_details", "html_table",
    "markdown", "sentences", "show", "summary", "table",
]
