"""Showing the ledger: a table (pandas), Markdown, HTML (what the book's pages display) and one generated
sentence per claim, each citing the computed effect and interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..plan import SETTLE_SEEDS
from .judge import VERDICTS
from .ledger import Result


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


def html_table(results: Sequence[Result], links: bool = True) -> str:
    """The ledger as an HTML table (the chapter linked when ``links``): the book renders a generated
    Markdown output as CommonMark, which has no tables, so pages show this one."""
    from html import escape

    head = ["claim", "report says", "verdict", "effect", "95 % interval", "runs", "GPU h (est.)"]
    if links:
        head.insert(1, "chapter")
    rows = []
    for r in results:
        o = r.outcome
        cells = [f"<code>{escape(r.claim.id)}</code>", escape(r.claim.sentence),
                 f"<b>{escape(o.verdict)}</b> ({escape(o.reason)})", _num(o.effect),
                 f"[{_num(o.low)}, {_num(o.high)}]" if o.low is not None else "-",
                 "<br>".join(escape(part) for part in r.runs_text().split(" | ")), _num(r.gpu_hours, 1, signed=False)]
        if links:
            section = f", {escape(r.claim.section)}" if r.claim.section != "-" else ""
            chapter = f'<a href="{escape(r.claim.link)}">{escape(r.claim.chapter)}</a>'
            cells.insert(1, chapter + section)
        rows.append("<tr>" + "".join(f"<td style=\"text-align:left\">{c}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th style=\"text-align:left\">{h}</th>" for h in head) + "</tr>"
    return f"<table class=\"claims-ledger\"><thead>{header}</thead><tbody>{''.join(rows)}</tbody></table>"


def show(results: Sequence[Result], links: bool = False) -> None:
    """Display a chapter's (or the book's) claims: the table (HTML), then one generated sentence each."""
    from IPython.display import HTML, Markdown, display

    display(HTML(html_table(results, links=links)))
    display(Markdown(sentences(results)))


def summary(results: Sequence[Result]) -> dict[str, int]:
    """How many claims have each verdict."""
    counts = {v: 0 for v in VERDICTS}
    for r in results:
        counts[r.verdict] += 1
    return counts
