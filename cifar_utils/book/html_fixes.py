"""A Sphinx extension that removes two JavaScript console errors the Jupyter Book 1 stack puts on every page.

The offline browser test (tests/test_html_offline.py) fails a page on any console error; these two come
from the pinned theme stack, not from the book:

* sphinx-thebe 0.3.1 under Sphinx 7.4 adds its inline configuration script twice, so every page throws
  ``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared``. Identical scripts are kept once.
* Jupyter Book sets no colour mode for pydata-sphinx-theme, whose script then logs ``Got invalid theme
  mode: . Resetting to auto.``. The mode defaults to ``auto`` (the reader's system setting).

Listed in ``_config.yml`` under ``sphinx: extra_extensions``. Imports no torch.
"""

from __future__ import annotations


def _script_key(js) -> tuple:
    attributes = getattr(js, "attributes", None) or {}
    # an inline script's filename is None or "" depending on who added it
    return getattr(js, "filename", str(js)) or "", tuple(sorted((k, str(v)) for k, v in attributes.items()))


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep the first of identical <script> entries (same source, same attributes and inline body)."""
    files = context.get("script_files")
    if not files:
        return
    seen: set[tuple] = set()
    unique = []
    for js in files:
        key = _script_key(js)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    files[:] = unique


def default_colour_mode(app, config) -> None:
    """Give pydata-sphinx-theme a valid default colour mode (its ``html_context`` key) when none is set."""
    context = dict(config.html_context or {})
    if not context.get("default_mode"):
        context["default_mode"] = "auto"
    config.html_context = context


def setup(app):
    app.connect("config-inited", default_colour_mode)
    app.connect("html-page-context", dedupe_scripts, priority=900)  # after the extensions that add scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
