"""Showing the ledger: a table (pandas), Markdown, HTML (what the book's pages display) and one generated
sentence per claim, each citing the computed effect and interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..plan import SETTLE_SEEDS
from .declared import Claim
from .rules import CONTRADICTED, INCONCLUSIVE, SUPPORTED, VERDICTS, Outcome
from .verdicts import Result


# --- tables ------------------------------------------------------------------------------------------

def _num(v: float | None, digits: int = 2, signed: bool = True) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def table(results: Sequence[Result]) -> pd.DataFrame:
    """One row per claim: id, chapter, the report's sentence, verdict, reason, effect, 95 % interval,
    what the effect measures, the interval's source, the runs behind it, estimated GPU hours to settle."""
    rows = []
    for r in results:
        o = r.outcome
        rows.append({"claim": r.claim.id, "chapter": r.claim.chapter, "report says": r.claim.sentence,
                     "verdict": o.verdict, "reason": o.reason, "effect": o.effect,
                     "interval": f"[{_num(o.low)}, {_num(o.high)}]" if o.low is not None else "-",
                     "measure": r.claim.measure, "noise": o.noise, "rule": r.claim.rule_text,
                     "runs": r.runs_text(),
                     f"GPU h to settle ({len(SETTLE_SEEDS)} seeds, projected)": r.gpu_hours})
    return pd.DataFrame(rows)


def _cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def markdown(results: Sequence[Result], links: bool = True) -> str:
    """The ledger as a Markdown table (the verdict in bold, the chapter linked when ``links``)."""
    head = ["claim", "report says", "verdict", "effect", "95 % interval", "runs", "GPU h (est.)"]
    if links:
        head.insert(1, "chapter")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        o = r.outcome
        row = [f"`{r.claim.id}`", _cell(r.claim.sentence), f"**{o.verdict}** ({_cell(o.reason)})",
               _num(o.effect), f"[{_num(o.low)}, {_num(o.high)}]" if o.low is not None else "-",
               _cell(r.runs_text()), _num(r.gpu_hours, 1, signed=False)]
        if links:
            section = f", {r.claim.section}" if r.claim.section != "-" else ""
            chapter = f"[{r.claim.chapter}]({r.claim.link})"
            row.insert(1, chapter + section)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def sentences(results: Sequence[Result]) -> str:
    """One generated sentence per claim, citing the computed effect and interval (Markdown bullets)."""
    out = []
    for r in results:
        o = r.outcome
        number = f" The effect ({r.claim.measure}) is {_num(o.effect)}" if o.effect is not None else ""
        if number and o.low is not None:
            number += f", 95 % interval [{_num(o.low)}, {_num(o.high)}] ({o.noise})"
        elif number:
            number += f" ({o.noise})"
        out.append(f"- *{r.claim.sentence}* **{o.verdict.capitalize()}**: {o.reason}.{number + '.' if number else ''}")
    return "\n".join(out)


#: CSS class of each verdict's word (styled in book/_static/book.css; the word itself carries the meaning).
_VERDICT_CLASS = {SUPPORTED: "supported", CONTRADICTED: "contradicted", INCONCLUSIVE: "inconclusive"}


def _anchor(claim: Claim) -> str:
    """The id of a claim's details block on a page."""
    return f"claim-{claim.id}"


def _verdict_html(verdict: str, reason: str = "") -> str:
    """The verdict as a word in a ``<span>`` whose class colours it; ``reason`` becomes its tooltip."""
    from html import escape

    title = f' title="{escape(reason)}"' if reason else ""
    return (f'<span class="claim-verdict verdict-{_VERDICT_CLASS.get(verdict, "other")}"{title}>'
            f'{escape(verdict)}</span>')


def _chapter_html(claim: Claim, short: bool = False) -> str:
    """The chapter, linked; ``short``: only its number (``01``, the full id in the link's title), for the
    ledger's narrow column."""
    from html import escape

    number = claim.chapter.split("_", 1)[0]
    name = escape(number if short and number.isdigit() else claim.chapter)
    return f'<a href="{escape(claim.link)}" title="{escape(claim.chapter)}">{name}</a>'


def _interval(o: Outcome) -> str:
    return f"[{_num(o.low)}, {_num(o.high)}]" if o.low is not None else "-"


def html_details(results: Sequence[Result], links: bool = True) -> str:
    """Per claim, a ``<details>`` block (closed) with everything the ledger's table leaves out: the
    report's sentence, the chapter and section, the verdict's reason, what the effect measures, the
    rule, where the interval comes from, the runs behind it (each arm's seeds, epochs, device and
    precision) and the estimated GPU hours to settle it. Its id is ``claim-<id>``, which the table links."""
    from html import escape

    blocks = ['<p class="claim-details-intro">Each claim in detail (click to open): the reason for its verdict, '
              'the measure, the rule, where the interval comes from, the runs and the GPU hours to settle it.</p>']
    for r in results:
        c, o = r.claim, r.outcome
        runs = "".join(f"<li>{escape(part)}</li>" for part in r.runs_text().split(" | "))
        section = f", {escape(c.section)}" if c.section != "-" else ""
        chapter = (_chapter_html(c) if links else escape(c.chapter)) + section
        interval = f", 95 % interval {_interval(o)}" if o.low is not None else " (no interval)"
        items = [("verdict", f"{_verdict_html(o.verdict)}: {escape(o.reason)}"),
                 ("effect", _num(o.effect) + interval),
                 ("measure", escape(c.measure)),
                 ("rule", escape(c.rule_text)),
                 ("interval from", escape(o.noise)),
                 ("runs", f"<ul>{runs}</ul>"),
                 ("GPU h to settle", f"{_num(r.gpu_hours, 1, signed=False)} ({len(SETTLE_SEEDS)} seeds per model, "
                                     "projected)"),
                 ("chapter", chapter)]
        body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
        blocks.append(f'<details class="claim-details" id="{_anchor(c)}"><summary><code>{escape(c.id)}</code> '
                      f'{_verdict_html(o.verdict)} {escape(c.sentence)}</summary><dl>{body}</dl></details>')
    return "".join(blocks)


def html_table(results: Sequence[Result], links: bool = True, details: bool = True) -> str:
    """The ledger as HTML, narrow enough to scan on a laptop: a table with one row per claim (the
    report's sentence, linked to its details; the chapter's number, linked, when ``links``; the verdict as a
    word, coloured by the book's CSS; the effect and its 95 % interval), then, when ``details``,
    :func:`html_details`: one closed ``<details>`` block per claim with the rest (reason, measure, rule,
    noise source, runs, GPU hours to settle). The book renders a generated Markdown output as
    CommonMark, which has no tables, so pages show this. The classes (``claims-ledger``,
    ``claim-verdict verdict-<verdict>``, ``claim-details``) are styled in ``book/_static/book.css``;
    without it the same words show."""
    from html import escape

    head = ["claim", "verdict", "effect", "95 % interval"]
    if links:
        head.insert(1, "chapter")
    rows = []
    for r in results:
        c, o = r.claim, r.outcome
        claim = (f'<a href="#{_anchor(c)}" title="{escape(c.id)}: details below">{escape(c.sentence)}</a>'
                 if details else f'{escape(c.sentence)} <code>{escape(c.id)}</code>')
        cells = [(claim, "claim"), (_verdict_html(o.verdict, o.reason), "verdict"), (_num(o.effect), "num"),
                 (_interval(o), "num")]
        if links:
            cells.insert(1, (_chapter_html(c, short=True), "chapter"))
        rows.append("<tr>" + "".join(f'<td class="{cls}">{text}</td>' for text, cls in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
    table = f'<table class="claims-ledger"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table>'
    return table + (html_details(results, links) if details else "")


def show(results: Sequence[Result], links: bool = False) -> None:
    """Display a chapter's (or the book's) claims: the narrow table and each claim's details (HTML, see
    :func:`html_table`), then one generated sentence each."""
    from IPython.display import HTML, Markdown, display

    display(HTML(html_table(results, links=links)))
    display(Markdown(sentences(results)))


def summary(results: Sequence[Result]) -> dict[str, int]:
    """How many claims have each verdict."""
    counts = {v: 0 for v in VERDICTS}
    for r in results:
        counts[r.verdict] += 1
    return counts
