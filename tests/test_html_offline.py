"""The built smoke book read offline in a real browser: headless Chromium, every non-file:// request blocked.

On every page of ``_toc.yml``: the formulas are typeset by the book's own MathJax, every image has loaded,
no JavaScript error reaches the console, the page has its title and (for an executed notebook) as many
tables and figures as its outputs hold, and nothing was requested from the network. One screenshot per
page goes to ``_build/screenshots/`` beside the tested book (the status page links them there) and is
copied to this checkout's ``_build/screenshots/`` for people to look at.

At a laptop's 1280x800 viewport, no table of the Claims page and none of a chapter's Verdicts section is
wider than the page's content column (issue #27: the ledger scrolled sideways), with the ``<details>``
blocks closed (as a reader first sees the page) and all opened; the Verdicts sections get a screenshot of
their own with the details open (``<chapter>-verdicts.png``), and so does the Claims page's article
(``claims-details-open.png``; ``claims.png`` shows it as first seen).

Chromium is driven over the DevTools protocol through ``--remote-debugging-pipe`` (``chromium_driver.py``,
shared with the JupyterLab test): no Python package beyond the standard library. Debian's ``chromium`` is
used; ``.ci/run`` installs it with apt when missing; where it is absent the tests skip and say so.

Set ``CIFAR_UTILS_BUILT_BOOK=/path`` (a folder holding ``_build/html`` and ``_build/src``) to check an
existing build instead of building the smoke book.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from chromium_driver import VIEWPORT, Browser, chromium_or_skip, open_tab, page_errors

from cifar_utils.book.runner import toc_files

ROOT = Path(__file__).resolve().parents[1]
PAGES = [Path(name).stem for name in toc_files(ROOT)]
MAX_SHOT_HEIGHT = 16000  # px; a longer page's screenshot shows its first 16000 px

pytestmark = pytest.mark.slow


# Runs in the page after load: waits for MathJax and saved widgets, then reports what a reader sees.
WAIT_JS = """
(async () => {
  const deadline = Date.now() + 30000;
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  while (document.querySelector('.math') && !(window.MathJax && MathJax.startup && MathJax.startup.promise)
         && Date.now() < deadline) await sleep(100);
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  if (document.querySelector('script[type="application/vnd.jupyter.widget-view+json"]'))
    while (!document.querySelector('.jupyter-widgets') && Date.now() < deadline) await sleep(100);
  if (document.fonts) await document.fonts.ready;
  const pending = [...document.images].filter(i => !i.complete);
  pending.forEach(i => { i.loading = 'eager'; });
  await Promise.race([Promise.all(pending.map(i => new Promise(r => { i.onload = i.onerror = r; }))),
                      sleep(Math.max(0, deadline - Date.now()))]);
  return true;
})()
"""

CHECK_JS = """
(() => {
  const main = document.querySelector('main') || document.body;
  const h1 = main.querySelector('h1');
  const visible = main.cloneNode(true);
  visible.querySelectorAll('pre, code, script, style, textarea, mjx-assistive-mml').forEach(e => e.remove());
  const text = visible.textContent;
  return JSON.stringify({
    title: document.title,
    h1: h1 ? h1.textContent.replace(/[#\\u00b6]/g, '').trim() : '',
    math_nodes: document.querySelectorAll('.math').length,
    mathjax_output: document.querySelectorAll('mjx-container').length,
    raw_tex: ['\\\\(', '\\\\[', '$$'].filter(s => text.includes(s)),
    images: [...document.images].map(i => ({src: i.currentSrc || i.src, loaded: i.complete && i.naturalWidth > 0})),
    main_images: main.querySelectorAll('img').length,
    tables: main.querySelectorAll('table').length,
    widget_state: !!document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]'),
    widget_views: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
    widgets: document.querySelectorAll('.jupyter-widgets').length,
    links: [...main.querySelectorAll('a[href]')].map(a => ({href: a.getAttribute('href'), cls: a.className})),
    xref_unresolved: [...main.querySelectorAll('code.xref')].filter(c => !c.closest('a')).map(c => c.textContent),
  });
})()
"""


def visit(browser: Browser, session: str, html: Path, screenshot: Path) -> dict:
    """Open one page, wait for it to settle, check it, and save a full-page screenshot."""
    browser.take_events()
    nav = browser.send("Page.navigate", {"url": html.as_uri()}, session)
    if nav.get("errorText"):
        raise RuntimeError(f"{html}: {nav['errorText']}")
    browser.wait_event("Page.loadEventFired", session)
    browser.send("Runtime.evaluate", {"expression": WAIT_JS, "awaitPromise": True, "timeout": 40000}, session)
    result = browser.send("Runtime.evaluate", {"expression": CHECK_JS, "returnByValue": True}, session)
    checks = json.loads(result["result"]["value"])
    # the whole page: a viewport as tall as the content (up to MAX_SHOT_HEIGHT), then back for the next page
    height = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
    browser.send("Emulation.setDeviceMetricsOverride", dict(VIEWPORT, height=min(int(height), MAX_SHOT_HEIGHT)),
                 session)
    browser.send("Runtime.evaluate", {"expression": "window.scrollTo(0, 0)"}, session)
    shot = browser.send("Page.captureScreenshot", {"format": "png"}, session)
    browser.send("Emulation.setDeviceMetricsOverride", VIEWPORT, session)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    time.sleep(0.2)  # late console messages of this page arrive before the next navigation clears them
    checks["errors"], checks["remote"] = page_errors(browser.take_events(), session)
    return checks


# Every table inside `scope` (a CSS selector, within the page's content column) against the column's width.
# The column is sphinx-book-theme's article element; a table wider than it makes the page (or the table's
# wrapper) scroll sideways. `open` opens every <details> first (their tables count too).
WIDTHS_JS = """
((scope, open) => {
  const column = document.querySelector('article.bd-article') || document.querySelector('main');
  if (open) document.querySelectorAll('details').forEach(d => { d.open = true; });
  const root = scope ? column.querySelector(scope) : column;
  if (!root) return JSON.stringify({column: column.clientWidth, found: false, tables: []});
  const tables = [...root.querySelectorAll('table')].map((t, i) => ({
    index: i,
    head: [...t.querySelectorAll('th')].slice(0, 4).map(h => h.textContent.trim()).join(' | ')
          || (t.querySelector('td') || {textContent: ''}).textContent.trim().slice(0, 60),
    width: Math.max(t.scrollWidth, Math.ceil(t.getBoundingClientRect().width)),
    shown: t.getClientRects().length > 0,
  }));
  const details = root.querySelectorAll('details').length;
  return JSON.stringify({column: column.clientWidth, found: true, tables, details,
                         page_scrolls: document.documentElement.scrollWidth > document.documentElement.clientWidth});
})
"""

# The bounding box of `selector` in page coordinates, for a clipped screenshot.
BOX_JS = """
((selector) => {
  const el = document.querySelector(selector);
  if (!el) return null;
  const r = el.getBoundingClientRect();
  return JSON.stringify({x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height});
})
"""


def table_widths(browser: Browser, session: str, scope: str | None, open_details: bool) -> dict:
    """What :data:`WIDTHS_JS` finds on the current page."""
    expr = f"({WIDTHS_JS})({json.dumps(scope)}, {json.dumps(open_details)})"
    result = browser.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
    return json.loads(result["result"]["value"])


def screenshot_of(browser: Browser, session: str, selector: str, path: Path) -> bool:
    """A screenshot of one element (e.g. a chapter's Verdicts section); False if the page has none."""
    box = browser.send("Runtime.evaluate", {"expression": f"({BOX_JS})({json.dumps(selector)})",
                                            "returnByValue": True}, session)["result"].get("value")
    if not box:
        return False
    box = json.loads(box)
    height = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
    browser.send("Emulation.setDeviceMetricsOverride", dict(VIEWPORT, height=min(int(height), MAX_SHOT_HEIGHT)),
                 session)
    clip = {"x": box["x"], "y": box["y"], "width": box["width"],
            "height": min(box["height"], MAX_SHOT_HEIGHT), "scale": 1}
    shot = browser.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True},
                        session)
    browser.send("Emulation.setDeviceMetricsOverride", VIEWPORT, session)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return True


#: Pages whose tables must fit the content column: the Claims page (all of it) and each chapter's Verdicts.
CLAIMS_PAGE = "claims"
VERDICTS_SECTION = "section#verdicts"


def check_layout(browser: Browser, session: str, stem: str, shots: Path) -> dict | None:
    """Table widths of the Claims page or a chapter's Verdicts section (details closed, then open), and
    their screenshots; None for other pages."""
    if stem == CLAIMS_PAGE:
        scope = None
    elif stem[:2].isdigit():
        scope = VERDICTS_SECTION
    else:
        return None
    found = {"closed": table_widths(browser, session, scope, open_details=False)}
    found["open"] = table_widths(browser, session, scope, open_details=True)  # details stay open below
    if stem == CLAIMS_PAGE:
        screenshot_of(browser, session, "article.bd-article", shots / f"{stem}-details-open.png")
        found["screenshot"] = str(shots / f"{stem}-details-open.png")
    elif found["closed"]["found"] and screenshot_of(browser, session, VERDICTS_SECTION, shots / f"{stem}-verdicts.png"):
        found["screenshot"] = str(shots / f"{stem}-verdicts.png")
    return found


def expected_outputs(notebook: Path) -> tuple[int, int, bool]:
    """(tables, images, has widget state) the executed notebook's outputs hold."""
    if not notebook.exists():
        return 0, 0, False
    nb = json.loads(notebook.read_text())
    tables = images = 0
    for cell in nb["cells"]:
        if "remove-output" in cell.get("metadata", {}).get("tags", []) or \
                "remove-cell" in cell.get("metadata", {}).get("tags", []):
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            html = "".join(data.get("text/html", ""))
            tables += html.count("<table")
            images += "image/png" in data or "image/jpeg" in data or "image/svg+xml" in data
    widgets = bool(nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json",
                                                                   {}).get("state"))
    return tables, images, widgets


@pytest.fixture(scope="module")
def built_book(request) -> Path:
    """The folder holding the built smoke book's ``_build/``."""
    given = os.environ.get("CIFAR_UTILS_BUILT_BOOK")
    if given:
        out = Path(given).resolve()
        assert (out / "_build" / "html" / "index.html").exists(), f"CIFAR_UTILS_BUILT_BOOK={given}: no _build/html"
        return out
    return request.getfixturevalue("smoke_book")[0]


@pytest.fixture(scope="module")
def visited(built_book) -> dict[str, dict]:
    """Every page of the book, opened once in one offline browser: page -> what was found."""
    exe = chromium_or_skip()
    html_root = built_book / "_build" / "html"
    shots = built_book / "_build" / "screenshots"
    results: dict[str, dict] = {}
    with Browser(exe) as browser:
        session = open_tab(browser)
        for name in toc_files(built_book / "_build" / "src"):
            stem = Path(name).stem
            checks = visit(browser, session, html_root / f"{name}.html", shots / f"{stem}.png")
            checks["layout"] = check_layout(browser, session, stem, shots)
            checks["expected"] = expected_outputs(built_book / "_build" / "src" / f"{name}.ipynb")
            checks["screenshot"] = str(shots / f"{stem}.png")
            results[stem] = checks
    keep = ROOT / "_build" / "screenshots"
    if keep.resolve() != shots.resolve():
        keep.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy2(png, keep / png.name)
    return results


@pytest.mark.parametrize("page", PAGES)
def test_page_reads_offline(visited, page):
    assert page in visited, f"{page} is in _toc.yml but not in the built book's toc"
    c = visited[page]
    where = f"{page} (screenshot: {c['screenshot']})"
    assert not c["remote"], f"{where} requested remote URLs: {c['remote']}"
    assert not c["errors"], f"{where}: JavaScript/console errors: {c['errors']}"
    assert c["h1"] and c["h1"] in c["title"], f"{where}: title {c['title']!r}, heading {c['h1']!r}"
    broken = [i["src"] for i in c["images"] if not i["loaded"]]
    assert not broken, f"{where}: images that did not load: {broken}"
    tables, images, widgets = c["expected"]
    assert c["tables"] >= tables, f"{where}: {c['tables']} tables shown, the notebook's outputs hold {tables}"
    assert c["main_images"] >= images, f"{where}: {c['main_images']} images shown, the outputs hold {images}"
    assert c["mathjax_output"] >= c["math_nodes"], \
        f"{where}: {c['math_nodes']} formulas, {c['mathjax_output']} typeset by MathJax"
    assert not c["raw_tex"], f"{where}: raw TeX delimiters left in the visible text: {c['raw_tex']}"
    if page != "api":  # there, docstrings may name objects the reference leaves out (plain code, not a link)
        assert not c["xref_unresolved"], f"{where}: API links that resolved to nothing: {c['xref_unresolved']}"
    assert c["widget_state"] == widgets, f"{where}: the notebook's saved widget state is not on the page"
    if c["widget_views"]:  # a shown widget output (a removed one keeps only the state)
        assert c["widgets"] > 0, f"{where}: {c['widget_views']} saved widget views, none rendered"


def test_math_is_typeset_somewhere_and_chapters_link_the_api(visited):
    """The MathJax check is not vacuous, and every chapter's code links land on the API page."""
    assert sum(c["mathjax_output"] for c in visited.values()) > 0, "no page has a typeset formula"
    assert visited["api"]["math_nodes"] > 0
    for page, c in visited.items():
        if page[:2].isdigit():
            api_links = [l["href"] for l in c["links"] if l["href"].startswith("api.html#cifar_utils.")]
            assert api_links, f"{page}: no link into the API reference"


def _too_wide(found: dict) -> list[str]:
    return [f"table {t['index']} ({t['head']!r}): {t['width']} px > column {found['column']} px"
            for t in found["tables"] if t["width"] > found["column"]]


def test_claims_page_tables_fit_the_column(visited):
    """#27: at 1280x800 the ledger is scanned without scrolling sideways; its details open in place."""
    layout = visited[CLAIMS_PAGE]["layout"]
    where = f"claims page (screenshots: {visited[CLAIMS_PAGE]['screenshot']}, {layout.get('screenshot')})"
    closed, opened = layout["closed"], layout["open"]
    assert [t for t in closed["tables"] if t["shown"]], f"{where}: no table shown"
    for state, found in (("details closed", closed), ("details open", opened)):
        assert not _too_wide(found), f"{where}, {state}: " + "; ".join(_too_wide(found))
        assert not found["page_scrolls"], f"{where}, {state}: the page scrolls sideways"
    assert closed["details"] > 0, f"{where}: no <details> block: where are the rule, runs and noise?"
    assert Path(layout["screenshot"]).stat().st_size > 1000


@pytest.mark.parametrize("page", [p for p in PAGES if p[:2].isdigit()])
def test_chapter_verdicts_tables_fit_the_column(visited, page):
    layout = visited[page]["layout"]
    assert layout["closed"]["found"], f"{page}: no Verdicts section ({VERDICTS_SECTION})"
    where = f"{page}'s Verdicts (screenshot: {layout.get('screenshot')})"
    for state in ("closed", "open"):
        assert not _too_wide(layout[state]), f"{where}, details {state}: " + "; ".join(_too_wide(layout[state]))
    assert Path(layout["screenshot"]).stat().st_size > 1000, where


def test_status_page_links_every_screenshot(visited, built_book):
    status_html = built_book / "_build" / "html" / "book" / "status.html"
    hrefs = [l["href"] for l in visited["status"]["links"] if l["href"].endswith(".png")]
    targets = {(status_html.parent / unquote(h)).resolve() for h in hrefs}
    wanted = {Path(c["screenshot"]).resolve() for c in visited.values()}
    assert targets == wanted, f"status page links {sorted(map(str, targets))}, screenshots {sorted(map(str, wanted))}"
    for path in wanted:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000, path


@pytest.fixture(scope="module")
def mini_book(tmp_path_factory) -> tuple[Path, str]:
    """A two-page book rendered with the real _config.yml, book/_vendor and book/_static: a notebook with saved widget
    state (tests/html_fixture/widgets.ipynb) and the API page. Returns (output folder, jupyter-book's log)."""
    out = tmp_path_factory.mktemp("mini_book")
    src = out / "src"
    (src / "book").mkdir(parents=True)
    shutil.copy2(ROOT / "_config.yml", src / "_config.yml")
    for name in ("references.bib", "api.md"):
        shutil.copy2(ROOT / "book" / name, src / "book" / name)
    for static in ("_vendor", "_static"):  # both in the config's html_static_path
        shutil.copytree(ROOT / "book" / static, src / "book" / static)
    shutil.copy2(Path(__file__).parent / "html_fixture" / "widgets.ipynb", src / "book" / "widgets.ipynb")
    (src / "_toc.yml").write_text("format: jb-book\nroot: book/widgets\nchapters:\n  - file: book/api\n")
    jb = Path(sys.executable).with_name("jupyter-book")
    done = subprocess.run([str(jb) if jb.exists() else "jupyter-book", "build", str(src), "--path-output", str(out)],
                          timeout=600, capture_output=True, text=True)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    return out, log


def test_config_and_api_page_build_without_warnings(mini_book):
    """The offline settings and the autodoc reference of the whole package produce no Sphinx warning
    (a missing static folder, an unknown option, a docstring autodoc cannot parse, a missing reference)."""
    _, log = mini_book
    warnings = [line for line in log.splitlines()
                if ("WARNING" in line or "ERROR" in line) and "Kernel is running over TCP" not in line]
    assert not warnings, "\n".join(warnings)


def test_saved_widget_state_renders_offline(mini_book):
    """A page with saved ipywidgets state: the slider shows from the book's own JavaScript, the widget
    manager's MathJax 2 calls meet MathJax 3 without error, and its fonts load."""
    exe = chromium_or_skip()
    out, _ = mini_book
    with Browser(exe, timeout_s=180) as browser:
        c = visit(browser, open_tab(browser), out / "_build" / "html" / "book" / "widgets.html", out / "widgets.png")
    assert c["widget_state"] and c["widget_views"] == 1 and c["widgets"] >= 1, c
    assert not c["errors"] and not c["remote"], (c["errors"], c["remote"])
    assert c["math_nodes"] == c["mathjax_output"] == 1 and not c["raw_tex"], c
