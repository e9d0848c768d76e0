"""run_many(backend="ray") on a local Ray instance on the CPU (2 CPUs, no dashboard), with the
engine's tiny CNN (cifar_utils.engine.testing). One Ray instance serves the whole module and is
shut down (and checked gone) at the end."""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import cifar_utils.engine.testing  # noqa: F401  (registers tiny_cnn / tiny_random; auto-imported by workers)
from cifar_utils.engine import RunManyError, RunStore, load_run, run, run_many
from cifar_utils.engine import parallel
from cifar_utils.engine import ray_backend
from cifar_utils.engine.testing import tiny_config

REPO = Path(__file__).resolve().parents[1]
NUMBERS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")


def numbers(history: list[dict]) -> list[dict]:
    """A history without its timing fields."""
    return [{k: r.get(k) for k in NUMBERS} for r in history]


def ray_pids() -> set[int]:
    """Processes of this user whose command line mentions ray (raylet, gcs_server, workers...)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "ray" in cmd and ("raylet" in cmd or "gcs_server" in cmd or "default_worker" in cmd
                                 or "ray::" in cmd):
                pids.add(int(entry.name))
    return pids


def holder_of(lock: Path) -> int | None:
    """The pid of the process that has ``lock`` open (the worker training that run), Linux only."""
    target = str(lock.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) == target:
                    return int(entry.name)
        except OSError:
            continue
    return None


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    if not sys.platform.startswith("linux"):
        pytest.skip("these tests read /proc")
    before = ray_pids()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
        deadline = time.monotonic() + 30
        while (left := ray_pids() - before) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"Ray processes left behind: {sorted(left)}"


@pytest.fixture
def one_thread(monkeypatch):
    """The local backend's workers get 1 torch thread each, as the Ray tasks (cpus_per_run=1) do,
    so that both compute the same numbers on any machine."""
    monkeypatch.setattr(parallel, "_usable_cpus", lambda: 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_missing_ray_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[ray\]'"):
        run_many([tiny_config(epochs=1)], runs_dir=tmp_path, backend="ray", progress=False)


def test_backend_and_ray_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of 'local', 'ray'"):
        run_many([tiny_config(epochs=1)], runs_dir=tmp_path, backend="slurm")
    with pytest.raises(ValueError, match="cpus_per_run only apply to backend='ray'"):
        run_many([tiny_config(epochs=1)], runs_dir=tmp_path, cpus_per_run=2)
    with pytest.raises(ValueError, match=r"gpus_per_run must be numbers in \(0, 1\]"):  # local: shares of the GPU
        run_many([tiny_config(epochs=1)], runs_dir=tmp_path, gpus_per_run=2)
    cluster = {"CPU": 2.0}
    assert ray_backend.resolve_resources([tiny_config()], cluster, None, None) == (0.0, 1.0)
    assert ray_backend.resolve_resources([tiny_config(device="auto")], {"CPU": 8, "GPU": 2}, None, None) == (1.0, 1.0)
    assert ray_backend.resolve_resources([tiny_config(device="cuda")], {"CPU": 8, "GPU": 1}, 0.25, 2) == (0.25, 2.0)
    for (gpus, cpus), match in [((0.5, None), "gpus_per_run=0.5 but the Ray cluster has 0 GPUs"),
                                ((1.5, None), r"a fraction in \[0, 1\] or a whole number"),
                                ((None, 4), "cpus_per_run=4 but the Ray cluster has 2 CPUs"),
                                ((None, 0), "cpus_per_run must be > 0")]:
        with pytest.raises(ValueError, match=match):
            ray_backend.resolve_resources([tiny_config()], cluster, gpus, cpus)
    with pytest.raises(ValueError, match="Ray picks each run's GPU"):
        ray_backend.resolve_resources([tiny_config(device="cuda:1")], {"CPU": 8, "GPU": 2}, 1, None)


def test_an_unreachable_cluster_fails_fast(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(ray_backend, "CONNECT_TIMEOUT_S", 2.0)
    # "Fast" is the mechanism, not a stopwatch: one connection attempt bounded by CONNECT_TIMEOUT_S,
    # and ray.init (which would retry for minutes) is never called.
    attempts = []
    real_connect = socket.create_connection

    def connect(address, timeout=None, *args, **kwargs):
        attempts.append((address, timeout))
        return real_connect(address, timeout, *args, **kwargs)

    monkeypatch.setattr(ray_backend.socket, "create_connection", connect)
    monkeypatch.setattr(ray, "init", lambda *a, **kw: pytest.fail("ray.init was called for an unreachable cluster"))
    with pytest.raises(RuntimeError, match=f"no Ray cluster answers at '127.0.0.1:{port}'.*waited 2 s"):
        run_many([tiny_config(epochs=1)], runs_dir=tmp_path, backend="ray", ray_address=f"127.0.0.1:{port}",
                 progress=False)
    assert attempts == [(("127.0.0.1", port), 2.0)]


def test_nothing_to_train_needs_no_ray(tmp_path, monkeypatch):
    config = tiny_config(epochs=1)
    first = run(config, runs_dir=tmp_path, progress=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # finished runs load without Ray installed
    again = run_many([config], runs_dir=tmp_path, backend="ray", progress=False)
    assert again[0].history == first.history


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_without_a_ray_session_a_local_instance_is_started_and_stopped(tmp_path, monkeypatch):
    # Defined before the tests that use the module's Ray instance, so that none is running yet.
    ray = pytest.importorskip("ray")
    if ray.is_initialized() or not sys.platform.startswith("linux"):
        pytest.skip("needs a process without a Ray session (run this test on its own)")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    before = ray_pids()
    result = run_many([tiny_config(epochs=1, seed=60)], runs_dir=tmp_path, backend="ray", progress=False)[0]
    assert result.status == "finished" and result.info["sessions"] == 1
    assert not ray.is_initialized()
    deadline = time.monotonic() + 30
    while (left := ray_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray processes left behind: {sorted(left)}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_gives_the_local_histories(tmp_path, ray_local, one_thread, capsys):
    configs = [tiny_config(epochs=2, seed=s) for s in range(3)]
    broken = tiny_config(epochs=2, seed=9, model_options={"width": -1})  # raises when the model is built
    with pytest.raises(RunManyError) as info:
        run_many([*configs, configs[0], broken], jobs=2, runs_dir=tmp_path / "ray", backend="ray")
    out = capsys.readouterr()
    runs, errors = info.value.runs, info.value.errors
    assert list(errors) == [4] and runs[4] is None
    assert [r.status for r in runs[:4]] == ["finished"] * 4 and runs[3].path == runs[0].path
    # a real error is not retried: one session, marked failed
    failed = load_run(tmp_path / "ray" / broken.name)
    assert failed.status == "failed" and failed.info["sessions"] == 1
    # one "done" line per run trained (the duplicate is trained once) and one FAILED line
    text = out.out + out.err
    for c in configs:
        assert f"[ray] done   {c.name}: finished, 2 epochs" in text
    assert f"[ray] FAILED {broken.name}" in text

    local = run_many(configs, jobs=2, runs_dir=tmp_path / "local", progress=False)
    assert [numbers(r.history) for r in runs[:3]] == [numbers(r.history) for r in local]
    assert all(len(r.history) == 2 for r in local)

    # finished runs are loaded from the store, no task is started
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray_backend, "_run_tasks", lambda *a, **kw: pytest.fail("Ray tasks were started for finished runs"))
        again = run_many(configs, jobs=2, runs_dir=tmp_path / "ray", backend="ray", progress=False)
    assert [r.history for r in again] == [r.history for r in runs[:3]]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_worker_is_retried_and_resumes(tmp_path, ray_local, one_thread):
    config = tiny_config(epochs=8, seed=3, train_size=1024)  # ~0.5 s per epoch on one thread
    path = tmp_path / "ray" / config.name
    killed: list[int] = []

    def kill_after_two_epochs() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = ray_backend._status(path)
            if info.get("status") == "running" and int(info.get("epochs_done") or 0) >= 2:
                pid = holder_of(path / ".lock")
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_two_epochs, daemon=True)
    killer.start()
    result = run_many([config], runs_dir=tmp_path / "ray", backend="ray", progress=False)[0]
    killer.join(timeout=5)
    assert killed, "the run finished before its worker could be killed"
    assert result.status == "finished" and len(result.history) == 8
    assert result.info["sessions"] == 2 and result.info["resumed_from"] >= 2

    reference = run(config, runs_dir=tmp_path / "local", progress=False)
    assert reference.info["sessions"] == 1
    assert numbers(result.history) == numbers(reference.history)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_cancels_the_tasks(tmp_path, ray_local):
    configs = [tiny_config(epochs=30, seed=40 + i, train_size=1024) for i in range(3)]
    first = tmp_path / configs[0].name

    def interrupt_once_running() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if int(ray_backend._status(first).get("epochs_done") or 0) >= 1:
                _thread.interrupt_main()  # what Ctrl-C / a notebook's "interrupt kernel" does
                return
            time.sleep(0.05)

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    # no stopwatch here: the test's timeout (300 s) only guards against a hang; that the interrupt
    # ended the run early shows in the store (below: interrupted, fewer than its 30 epochs)
    with pytest.raises(KeyboardInterrupt):
        run_many(configs, jobs=1, runs_dir=tmp_path, backend="ray", progress=False)
    stored = RunStore(tmp_path).list()
    # the running task was interrupted (marked so, to resume later); the queued ones never started
    assert [r.name for r in stored] == [configs[0].name]
    assert stored[0].status == "interrupted" and len(stored[0].history) < 30


def test_ray_profile_and_scale_page_fit_the_book():
    from cifar_utils.book import load_profile
    from cifar_utils.book.params import validate_profile
    from cifar_utils.book.runner import toc_files, toc_notebooks

    from cifar_utils.book.params import notebook_parameters

    notebooks = toc_notebooks(REPO)
    values = validate_profile(load_profile(REPO / "params" / "ray.yaml"), notebooks)
    assert set(values) == set(notebooks) - {"status"}  # the runner wants every chapter named
    with_backend = [ch for ch in values if "backend" in notebook_parameters(notebooks[ch])]
    assert with_backend and {ch: values[ch].get("backend") for ch in with_backend} == dict.fromkeys(with_backend, "ray")
    files = toc_files(REPO)
    assert files.index("book/scale") == files.index("book/status") - 1
    page = (REPO / "book" / "scale.md").read_text()
    assert page.startswith("# Re-running at scale")
    for command in ("make book PROFILE=full", "make book PROFILE=ray", "ray start --head", "sbatch",
                    "RAY_ADDRESS=auto python -m cifar_utils.book --profile ray", "pip install -e '.[ray]'"):
        assert command in page
