"""The four explorers live in JupyterLab: a real server and kernel, headless Chromium, controls moved by mouse.

``cifar_utils.book.lab.LabServer`` starts JupyterLab on a free localhost port with a random token, its
Jupyter and JupyterLab folders in a temporary one. Chromium (``chromium_driver.py``, the DevTools driver
of the offline HTML test; localhost allowed, every other host sent to a dead proxy) opens
``tests/lab_fixture/explorers.ipynb`` and runs its cells: the book's four explorers (history, Grad-CAM,
BatchNorm landscape, pruning) over tiny runs the kernel trains into a temporary store. Then, as a person
would: the history explorer's metric and the CAM explorer's method are changed (the dropdown's change
event), and the CAM image slider, the landscape smoothing slider and the pruning slider are dragged with the mouse
over their range. Checked after each move (every wait has a time limit, nothing asserts a duration):

* the explorer's picture changed (the PNG's SHA-256), and its output area holds exactly one picture
  (no stacked outputs); the pruning explorer's accuracy text changed and names the new percentage;
* the kernel agrees with the page: the controls' values it holds (a cell printing them, run after the
  moves), the accuracy it computed, and how often each explorer redrew: once per change, so a drag
  over a whole slider queues one redraw, not one per value passed;
* no error in the browser console, none from the kernel (IOPub error messages and stderr, from cells
  or from widget callbacks: what JupyterLab's log console shows), none in the server's log, and no cell
  output is an error. That check is shown not to be vacuous at the end: a slider whose callback raises
  is moved, and its error must be caught.

The server and its kernel are stopped (and killed if need be) in every case; a watchdog kills the
browser. Skips, saying why, without Chromium or JupyterLab.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from chromium_driver import Browser, chromium_or_skip, open_tab, page_errors

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "lab_fixture"
SESSION_TIMEOUT_S = 900  # the whole browser session (a hang guard: the scenario takes ~1 min here)
LOAD_TIMEOUT_S = 180  # JupyterLab's page and kernel
RUN_TIMEOUT_S = 600  # every cell of the fixture (trains four tiny runs: ~15 s here)
UPDATE_TIMEOUT_S = 120  # one explorer update
SERVER_ARGS = ["--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run cells, read the kernel's state
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
# Lines of the server log that are not errors although they say "error"/"warning" (none so far).
LOG_ERROR = re.compile(r"Traceback|\[E |\bERROR\b|Exception in|Error:", re.IGNORECASE)

# Helpers evaluated once in the page. Cells are found by their tag (explorer-history, state, ...).
HELPERS_JS = r"""
window.__t = (() => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const panel = () => jupyterapp.shell.currentWidget;
  const cell = tag => panel().content.widgets.find(c => (c.model.getMetadata('tags') || []).includes(tag));
  const kernelIdle = () => { const s = panel().sessionContext.session; return s && s.kernel && s.kernel.status === 'idle'; };
  const hex = buf => [...new Uint8Array(buf)].map(b => b.toString(16).padStart(2, '0')).join('');
  async function pictures(node) {  // SHA-256 of every picture in the cell's outputs; null if one was replaced
    const hashes = [];               // while being read (an Image widget revokes its old blob: URL)
    for (const img of [...node.querySelectorAll('.jp-OutputArea-output img')].filter(i => i.src)) {
      try {
        hashes.push(hex(await crypto.subtle.digest('SHA-256', await (await fetch(img.src)).arrayBuffer())));
      } catch (e) {
        return null;
      }
    }
    return hashes;
  }
  async function snapshot(tag) {
    const node = cell(tag).node;
    let hashes = await pictures(node);
    while (hashes === null) { await sleep(100); hashes = await pictures(node); }
    const html = [...node.querySelectorAll('.widget-html-content')].map(e => e.textContent.trim());
    const readouts = [...node.querySelectorAll('.widget-readout')].map(e => e.textContent.trim());
    const selects = [...node.querySelectorAll('.widget-dropdown select')].map(s => s.value);
    return {images: hashes.length, hashes, html, readouts, selects,
            widgets: node.querySelectorAll('.jupyter-widgets').length};
  }
  async function rendered(tag, ms) {  // the explorer's view once its widgets show a picture (views render
    const end = Date.now() + ms;      // after the cell's reply); as it is after `ms` milliseconds otherwise
    let now = await snapshot(tag);
    while (now.images === 0 && Date.now() < end) { await sleep(200); now = await snapshot(tag); }
    await sleep(300);
    return await snapshot(tag);
  }
  function control(tag, kind, label) {  // kind: 'slider' | 'dropdown'; label: the widget's description
    const boxes = [...cell(tag).node.querySelectorAll(kind === 'slider' ? '.widget-slider' : '.widget-dropdown')];
    const box = boxes.find(b => (b.querySelector('.widget-label') || {}).textContent === label);
    if (!box) throw new Error(`no ${kind} labelled ${label} in cell ${tag}`);
    box.scrollIntoView({block: 'center'});
    return box;
  }
  function sliderGeometry(tag, label) {
    const box = control(tag, 'slider', label);
    const h = box.querySelector('.noUi-handle').getBoundingClientRect();
    const track = box.querySelector('.noUi-target').getBoundingClientRect();
    return {x: h.left + h.width / 2, y: h.top + h.height / 2, left: track.left, right: track.right};
  }
  function chooseNext(tag, label) {  // the next option, chosen as a pick in the popup chooses it: a change event
    const select = control(tag, 'dropdown', label).querySelector('select');
    const before = {value: select.value, options: [...select.options].map(o => o.value)};
    select.focus();
    select.selectedIndex = (select.selectedIndex + 1) % select.options.length;
    select.dispatchEvent(new Event('input', {bubbles: true}));
    select.dispatchEvent(new Event('change', {bubbles: true}));
    return Object.assign(before, {chosen: select.value});
  }
  async function runCells(tags) {  // run these cells (all when null); wait until every one has run
    const p = panel();
    await p.context.ready; await p.sessionContext.ready;
    const cells = tags ? tags.map(cell) : p.content.widgets.filter(c => c.model.type === 'code');
    const before = cells.map(c => c.model.executionCount);
    if (tags) {
      for (const c of cells) {
        p.content.activeCellIndex = p.content.widgets.indexOf(c);
        await jupyterapp.commands.execute('notebook:run-cell');
      }
    } else {
      await jupyterapp.commands.execute('notebook:run-all-cells');
    }
    const done = () => cells.every((c, i) => c.model.executionCount !== null && c.model.executionCount !== before[i]);
    // a cell that raises stops the run: the cells after it never run, so stop waiting and report it
    const failed = () => cells.some(c => c.model.outputs.toJSON().some(o => o.output_type === 'error'));
    while (!((done() || failed()) && kernelIdle())) await sleep(200);
    return p.content.widgets.filter(c => c.model.type === 'code').map(c => ({
      tags: c.model.getMetadata('tags') || [], count: c.model.executionCount,
      outputs: c.model.outputs.toJSON().map(o => ({type: o.output_type, text: o.text || '',
        ename: o.ename || '', evalue: o.evalue || '', traceback: (o.traceback || []).join('\n')}))}));
  }
  const kernelLog = [];  // what the kernel reports on IOPub as an error or on stderr, from a cell or a callback
  async function ready() {
    while (!(window.jupyterapp && jupyterapp.shell.currentWidget && jupyterapp.shell.currentWidget.sessionContext)) await sleep(200);
    const p = panel();
    await p.context.ready; await p.sessionContext.ready;
    while (!kernelIdle()) await sleep(200);
    const kernel = p.sessionContext.session.kernel;
    kernel.iopubMessage.connect((_, m) => {
      const type = m.header.msg_type, c = m.content;
      if (type === 'error' || (type === 'stream' && c.name === 'stderr'))
        kernelLog.push({type, parent: (m.parent_header || {}).msg_type || '',
                        text: type === 'error' ? `${c.ename}: ${c.evalue}` : c.text});
    });
    return {title: p.title.label, kernel: kernel.name};
  }
  async function settled(tag, before, keys, ms) {  // wait until each of the view's `keys` differs from
    const end = Date.now() + ms;                   // `before` and the kernel is idle; {changed: false} after `ms`
    const differs = now => keys.every(k => JSON.stringify(now[k]) !== JSON.stringify(before[k]));
    while (Date.now() < end) {
      const now = await snapshot(tag);
      if (differs(now) && kernelIdle()) {
        await sleep(500);  // a second, stacked output would have arrived by now
        if (kernelIdle()) return Object.assign(await snapshot(tag), {changed: true});
      }
      await sleep(200);
    }
    return Object.assign(await snapshot(tag), {changed: false});
  }
  return {snapshot, rendered, sliderGeometry, chooseNext, runCells, ready, settled, kernelIdle,
          kernelLog: () => kernelLog};
})(); true
"""


class LabPage:
    """The notebook page of a live JupyterLab, driven over the DevTools protocol."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def js(self, expression: str, timeout: float = 60):
        reply = self.browser.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                       "returnByValue": True, "timeout": timeout * 1000},
                                  self.session, timeout=timeout + 15)
        if "exceptionDetails" in reply:
            d = reply["exceptionDetails"]
            raise RuntimeError(f"in the page: {d.get('exception', {}).get('description') or d.get('text')}")
        return reply["result"].get("value")

    def call(self, function: str, *args, timeout: float = 60):
        """``await __t.<function>(*args)`` in the page, cut off after ``timeout`` seconds."""
        call = f"__t.{function}({', '.join(json.dumps(a) for a in args)})"
        return self.js(f"Promise.race([{call}, new Promise((_, no) => setTimeout(() => "
                       f"no(new Error('{function} still waiting after {timeout} s')), {int(timeout * 1000)}))])",
                       timeout)

    def mouse(self, kind: str, x: float, y: float, buttons: int) -> None:
        self.browser.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                       "buttons": buttons, "clickCount": 1}, self.session)

    def drag_slider(self, tag: str, label: str, to: str = "right", steps: int = 24) -> None:
        """Press the slider's handle, move through the track in ``steps`` moves past its end, release."""
        g = self.call("sliderGeometry", tag, label)
        end = g["right"] + 30 if to == "right" else g["left"] - 30
        self.mouse("mouseMoved", g["x"], g["y"], 0)
        self.mouse("mousePressed", g["x"], g["y"], 1)
        for i in range(1, steps + 1):
            self.mouse("mouseMoved", g["x"] + (end - g["x"]) * i / steps, g["y"], 1)
            time.sleep(0.02)
        self.mouse("mouseReleased", end, g["y"], 0)

    def choose_next(self, tag: str, label: str) -> dict:
        """Pick a dropdown's next option. A headless Chromium's select popup cannot be clicked, so the
        option is selected and the element's change event fired, as a pick in the popup does; the
        widget's own view handles it from there."""
        return self.call("chooseNext", tag, label)

    def settled(self, tag: str, before: dict, keys: tuple[str, ...] = ("hashes",)) -> dict:
        """The explorer's view once each of ``keys`` (``hashes``: its pictures, ``html``: its text) changed
        and the kernel is idle; fails, showing the view, when that did not happen within UPDATE_TIMEOUT_S."""
        now = self.call("settled", tag, before, list(keys), UPDATE_TIMEOUT_S * 1000, timeout=UPDATE_TIMEOUT_S + 30)
        if not now.pop("changed"):
            raise AssertionError(f"{tag}: the view did not change within {UPDATE_TIMEOUT_S} s after its control "
                                 f"was moved\n  before: {before}\n  after:  {now}")
        return now


def _cell_errors(cells: list[dict]) -> list[str]:
    return [f"{c['tags']}: {o['ename']}: {o['evalue']}\n{o['traceback']}"
            for c in cells for o in c["outputs"] if o["type"] == "error"]


def _log_errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if LOG_ERROR.search(line)]


def _kernel_errors(messages: list[dict]) -> list[str]:
    """The kernel's error messages, and what it wrote to stderr that reads as an error (a warning does not)."""
    return [f"{m['type']} (reply to {m['parent'] or '?'}): {m['text'].strip()}" for m in messages
            if m["type"] == "error" or LOG_ERROR.search(m["text"])]


def _no_news_settings(settings_dir: Path) -> None:
    """JupyterLab's user settings: no 'official Jupyter news?' toast over the page."""
    path = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> dict:
    """The whole scenario, once: what was seen before and after each move, the kernel's state, the errors."""
    exe = chromium_or_skip()
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (make test and make lab install it: "
                        "the [lab] extra)")
    from cifar_utils.book.lab import LabServer, lab_environment

    tmp = tmp_path_factory.mktemp("lab_live")
    work = tmp / "notebooks"
    shutil.copytree(FIXTURE, work, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    env = lab_environment(tmp / "runs", jupyter_dirs=tmp / "jupyter")
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    _no_news_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
    log = tmp / "jupyterlab.log"
    seen: dict = {"log_path": str(log)}
    t0 = time.monotonic()
    server = LabServer(work, env=env, log=log, extra_args=SERVER_ARGS)
    try:
        server.start()
        with Browser(exe, timeout_s=SESSION_TIMEOUT_S, allow_loopback=True) as browser:
            session = open_tab(browser, block_network=False)
            page = LabPage(browser, session)
            nav = browser.send("Page.navigate", {"url": server.url("lab/tree/explorers.ipynb")}, session)
            assert not nav.get("errorText"), nav
            browser.wait_event("Page.loadEventFired", session, timeout=LOAD_TIMEOUT_S)
            page.js(HELPERS_JS)
            seen["ready"] = page.call("ready", timeout=LOAD_TIMEOUT_S)
            seen["cells"] = page.call("runCells", None, timeout=RUN_TIMEOUT_S)
            failed = _cell_errors(seen["cells"])
            assert not failed, "a cell of the fixture raised:\n" + "\n".join(failed)
            seen["ran_s"] = time.monotonic() - t0
            snap = {tag: page.call("rendered", f"explorer-{tag}", UPDATE_TIMEOUT_S * 1000, timeout=UPDATE_TIMEOUT_S + 30)
                    for tag in ("history", "cam", "landscape", "pruning")}
            seen["initial"] = snap

            seen["history_metric"] = page.choose_next("explorer-history", "metric")
            seen["history"] = page.settled("explorer-history", snap["history"])
            page.drag_slider("explorer-cam", "image")
            seen["cam_slider"] = page.settled("explorer-cam", snap["cam"])
            seen["cam_method"] = page.choose_next("explorer-cam", "method")
            seen["cam"] = page.settled("explorer-cam", seen["cam_slider"])
            page.drag_slider("explorer-landscape", "smoothing")
            seen["landscape"] = page.settled("explorer-landscape", snap["landscape"])
            page.drag_slider("explorer-pruning", "pruned %")
            seen["pruning"] = page.settled("explorer-pruning", snap["pruning"], ("html", "hashes"))
            cells = page.call("runCells", ["state"], timeout=RUN_TIMEOUT_S)
            state = next(c for c in cells if "state" in c["tags"])
            seen["state"] = json.loads(state["outputs"][0]["text"])
            seen["final"] = {tag: page.call("snapshot", f"explorer-{tag}")
                             for tag in ("history", "cam", "landscape", "pruning")}
            seen["console"], seen["remote"] = page_errors(browser.take_events(), session, loopback=True)
            seen["kernel_log"] = _kernel_errors(page.call("kernelLog"))
            seen["server_log"] = _log_errors(server.log_tail(10**7))
            # the check is not vacuous: a callback that raises must show in the kernel's log
            page.drag_slider("faulty", "faulty")
            deadline = time.monotonic() + UPDATE_TIMEOUT_S
            while time.monotonic() < deadline and not _kernel_errors(page.call("kernelLog")):
                time.sleep(0.5)
            seen["faulty"] = _kernel_errors(page.call("kernelLog"))
            seen["total_s"] = time.monotonic() - t0
    finally:
        server.stop()
        seen["left_over"] = server.alive_children()
    return seen


def test_the_fixture_runs_in_a_live_kernel(live):
    assert live["ready"]["kernel"] == "python3", live["ready"]
    assert not _cell_errors(live["cells"])
    assert all(c["count"] for c in live["cells"]), [c["tags"] for c in live["cells"] if not c["count"]]
    for tag, snap in live["initial"].items():
        assert snap["widgets"] > 0 and snap["images"] == 1, f"{tag}: live widget with one picture expected, got {snap}"


def test_history_explorer_redraws_for_another_metric(live):
    before, now = live["initial"]["history"], live["history"]
    chosen = live["history_metric"]["chosen"]
    assert chosen != live["history_metric"]["value"] and now["selects"][0] == chosen, (live["history_metric"], now)
    assert now["hashes"] != before["hashes"] and now["images"] == 1, now
    assert live["state"]["history"]["metric"] == chosen  # the kernel drew what the page shows


def test_cam_explorer_follows_its_slider_and_method(live):
    first, slid, both = live["initial"]["cam"], live["cam_slider"], live["cam"]
    state = live["state"]["cam"]
    assert state["index"] == state["index_max"] > 0, "a drag past the end of the track selects the last image"
    assert slid["readouts"][0] == str(state["index_max"]) and slid["hashes"] != first["hashes"]
    assert state["method_label"] == both["selects"][-1] == live["cam_method"]["chosen"] != live["cam_method"]["value"]
    assert both["hashes"] != slid["hashes"] and both["images"] == 1, both


def test_landscape_explorer_follows_the_smoothing_slider(live):
    before, now = live["initial"]["landscape"], live["landscape"]
    state = live["state"]["landscape"]
    assert state["window"] == state["window_max"] == 200
    assert "200" in now["readouts"], now["readouts"]
    assert now["hashes"] != before["hashes"] and now["images"] == 1, now


def test_pruning_explorer_changes_its_accuracy_text(live):
    before, now = live["initial"]["pruning"], live["pruning"]
    state = live["state"]["pruning"]
    assert state["percent"] == 100
    assert "50% pruned" in before["html"][0] and "100% pruned" in now["html"][0], (before["html"], now["html"])
    assert f"{state['accuracy']:.2f}%" in now["html"][0], (state, now["html"])
    assert now["html"] != before["html"] and now["hashes"] != before["hashes"] and now["images"] == 1, now


def test_one_redraw_per_change_and_no_stacked_outputs(live):
    """A drag over a slider's whole range is one update (continuous_update=False), not one per value; a
    dropdown change is one. After every move each output area holds exactly one picture."""
    assert live["state"]["redraws"] == {"history": 2, "cam": 3, "landscape": 2, "pruning": 2}, live["state"]
    assert {tag: s["images"] for tag, s in live["final"].items()} == dict.fromkeys(live["final"], 1)


def test_no_error_in_the_console_or_the_kernel_log(live):
    assert not live["remote"], f"requests to other hosts: {live['remote']}"
    assert not live["console"], f"browser console errors: {live['console']}"
    assert not live["kernel_log"], f"errors from the kernel (JupyterLab's log console): {live['kernel_log']}"
    assert not live["server_log"], f"errors in the server's log ({live['log_path']}): {live['server_log']}"


def test_a_raising_callback_would_be_caught(live):
    """The kernel-log check above can fail: the fixture's faulty slider raises in its callback, and
    ipywidgets reports that on IOPub (JupyterLab's log console shows it), where the test looks."""
    assert any("RuntimeError: lab test: a callback that raises (value 10)" in line for line in live["faulty"]), \
        live["faulty"]


def test_server_and_kernel_are_gone(live):
    assert live["left_over"] == [], f"processes of the server still running: {live['left_over']}"
