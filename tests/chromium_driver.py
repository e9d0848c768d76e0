"""Headless Chromium driven over the DevTools protocol, standard library only (shared by the browser tests).

Chromium is started with ``--remote-debugging-pipe`` (two pipes, JSON messages ending in NUL). Debian's
``chromium`` is used (``$CHROMIUM`` names another); ``.ci/run`` installs it with apt when missing, and
:func:`chromium_or_skip` skips a test, saying why, where there is none. No browser is downloaded.

Every request to another machine goes to a dead proxy (``127.0.0.1:9``); with ``allow_loopback=False``
(the offline HTML test) even localhost does, and :func:`open_tab` also blocks every ``http(s)``/``ws``
URL, so only ``file:`` and ``data:`` pages load. The JupyterLab test allows loopback.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from urllib.parse import urlparse

import pytest

LOCAL_SCHEMES = {"file", "data", "blob", "about"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
BROWSER_TIMEOUT_S = 600  # the whole browser session; it is killed when this runs out
PAGE_TIMEOUT_S = 60
VIEWPORT = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}  # a laptop's screen


def find_chromium() -> str | None:
    """Debian's chromium (or $CHROMIUM), or None."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


class Browser:
    """Headless Chromium over the DevTools pipe, with every remote request blocked and recorded.

    A context manager: the browser's process group is killed on every exit path, and a watchdog kills
    it after ``timeout_s`` whatever the test is doing. ``allow_loopback``: localhost is reachable
    (every other host still goes to the dead proxy).
    """

    def __init__(self, executable: str, timeout_s: float = BROWSER_TIMEOUT_S, allow_loopback: bool = False):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # move the child's ends out of the way of fds 3 and 4, which they are dup'ed onto
        to_child_r_hi = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
        from_child_w_hi = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        os.close(to_child_r), os.close(from_child_w)

        def child_fds():
            os.dup2(to_child_r_hi, 3)
            os.dup2(from_child_w_hi, 4)

        args = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
                "--hide-scrollbars", "--proxy-server=127.0.0.1:9",
                *([] if allow_loopback else ["--proxy-bypass-list=<-loopback>"]),
                f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=child_fds, pass_fds=(3, 4),
                                     start_new_session=True)
        os.close(to_child_r_hi), os.close(from_child_w_hi)
        self._watchdog = threading.Timer(timeout_s, self.kill)
        self._watchdog.daemon = True
        self._watchdog.start()
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._lock:
                        q = self._replies.get(msg["id"])
                    if q is not None:
                        q.put(msg)
                else:
                    with self._lock:
                        self.events.append(msg)
        with self._lock:  # the browser went away: wake every waiter
            for q in self._replies.values():
                q.put({"error": {"message": "the browser closed the DevTools pipe"}})

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = PAGE_TIMEOUT_S) -> dict:
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            self._replies[mid] = q = queue.Queue()
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        try:
            reply = q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"chromium did not answer {method} within {timeout} s") from None
        finally:
            with self._lock:
                self._replies.pop(mid, None)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def take_events(self) -> list[dict]:
        with self._lock:
            events, self.events = self.events, []
        return events

    def wait_event(self, method: str, session: str, timeout: float = PAGE_TIMEOUT_S) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                for e in self.events:
                    if e.get("method") == method and e.get("sessionId") == session:
                        return e
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.proc.returncode}")
            time.sleep(0.05)
        raise TimeoutError(f"no {method} within {timeout} s")

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def close(self) -> None:
        self._watchdog.cancel()
        try:
            if self.proc.poll() is None:
                self.send("Browser.close", timeout=5)
                self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 -- whatever went wrong, the kill below ends it
            pass
        finally:
            self.kill()
            for fd in (self._to_child, self._from_child):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_local(url: str, loopback: bool = False) -> bool:
    """A URL that stays on this machine: file/data/blob/about, and with ``loopback`` http(s)/ws to localhost."""
    parts = urlparse(url)
    return parts.scheme in LOCAL_SCHEMES or (loopback and parts.hostname in LOOPBACK_HOSTS)


def page_errors(events: list[dict], session: str, loopback: bool = False) -> tuple[list[str], list[str]]:
    """(console/script errors, remote URLs requested) from one page's DevTools events; with ``loopback``
    requests to localhost count as local."""
    errors, remote, urls = [], [], {}
    for e in events:
        if e.get("sessionId") != session:
            continue
        m, p = e.get("method"), e.get("params", {})
        if m == "Network.requestWillBeSent":
            urls[p.get("requestId")] = p.get("request", {}).get("url", "")
        if m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            url = urls.get(p.get("requestId"), "?")
            if is_local(url, loopback):  # remote ones are reported as such below
                errors.append(f"failed to load {url}: {p.get('errorText')}")
        elif m == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if not is_local(url, loopback):
                remote.append(url)
    return list(dict.fromkeys(errors)), list(dict.fromkeys(remote))


def open_tab(browser: Browser, block_network: bool = True) -> str:
    """A new tab, its events enabled; with ``block_network`` every http(s)/ws/ftp request is blocked (and
    recorded). Returns its session id."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
        browser.send(method, session=session)
    if block_network:
        browser.send("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]},
                     session)
    browser.send("Emulation.setDeviceMetricsOverride", VIEWPORT, session)
    return session


def chromium_or_skip() -> str:
    exe = find_chromium()
    if exe is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it as root): "
                    "the browser tests need a real browser")
    return exe
