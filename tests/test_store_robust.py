"""A damaged store or a bad setting never takes the book down, and never passes silently (#18, #9).

Each test reproduces one problem found by the reliability trial of issue #18 (numbered as there);
all run a tiny CNN on 64 random images on the CPU (cifar_utils.engine.testing)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

import cifar_utils.engine.testing  # noqa: F401  (registers tiny_cnn / tiny_random)
from cifar_utils.data import CorruptDataError
from cifar_utils.data.readers import read_npz
from cifar_utils.engine import LambdaCallback, RunManyError, RunStore, load_run, run, run_many
from cifar_utils.engine import loop as engine_loop
from cifar_utils.engine import store as st
from cifar_utils.engine.testing import tiny_config

REPO = Path(__file__).resolve().parents[1]
NUMBERS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS", "off")
    monkeypatch.delenv("CIFAR_UTILS_KEEP_CHECKPOINTS", raising=False)


def config(**changes):
    base = dict(epochs=3, scheduler_options={"patience": 0, "threshold": 0.5}, seed=3)
    base.update(changes)
    return tiny_config(**base)


def numbers(history):
    return [{k: r[k] for k in NUMBERS} for r in history]


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


class Boom(Exception):
    pass


def fail_at(epoch):
    """A callback that crashes the run at the end of ``epoch`` (before that epoch's checkpoint)."""
    def boom(state, record):
        if record["epoch"] == epoch:
            raise Boom(f"simulated crash in epoch {epoch}")
    return LambdaCallback(on_epoch_end=boom)


def steps_counter():
    calls = []
    return calls, LambdaCallback(after_step=lambda s: calls.append(s.step))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The run never interrupted nor damaged, to compare repaired runs with."""
    return run(config(), runs_dir=tmp_path_factory.mktemp("ref"), progress=False)


# --- 1. one corrupt file must not break everything -----------------------------------------------

CORRUPTIONS = {
    "history truncated": lambda p: truncate(p / "history.json"),
    "status not UTF-8": lambda p: (p / "status.json").write_bytes(b"\xff\xfe garbage \x00\x81"),
    "config garbage": lambda p: (p / "config.json").write_bytes(b"\x89PNG not json at all"),
    "config extra field": lambda p: (p / "config.json").write_text(
        json.dumps({**json.loads((p / "config.json").read_text()), "colour": "blue"})),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_corrupt_file_is_listed_as_damaged(tmp_path, kind):
    good = run(config(epochs=1, seed=1), runs_dir=tmp_path, progress=False)
    bad = run(config(epochs=1, seed=2), runs_dir=tmp_path, progress=False)
    CORRUPTIONS[kind](bad.path)
    file = {"history": "history.json", "status": "status.json", "config": "config.json"}[kind.split()[0]]
    with pytest.warns(st.StoreWarning, match=f"damaged run .*{bad.name}.*{file}"):
        runs = RunStore(tmp_path).list()
    assert {r.name: r.status for r in runs} == {good.name: "finished", bad.name: "damaged"}
    damaged = next(r for r in runs if r.name == bad.name)
    assert damaged.problems and all(str(bad.path / file) in p for p in damaged.problems)
    with pytest.warns(st.StoreWarning):
        frame = RunStore(tmp_path).frame().set_index("name")
    assert frame.loc[bad.name, "status"] == "damaged" and file in frame.loc[bad.name, "problems"]
    assert frame.loc[bad.name, "model"] == "tiny_cnn"
    assert frame.loc[good.name, "status"] == "finished"
    with pytest.warns(st.StoreWarning):
        assert RunStore(tmp_path).list(status="finished") == [r for r in runs if r.name == good.name]


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_run_many_retrains_a_damaged_run_without_checkpoint(tmp_path, kind, reference):
    cfg = config()
    first = run(cfg, runs_dir=tmp_path, progress=False)
    assert not (first.path / "checkpoint.pt").exists()  # the default: dropped once finished
    CORRUPTIONS[kind](first.path)
    with pytest.warns(st.StoreWarning, match="no intact checkpoint.*moved aside to .*old-.*trained again"):
        again = run_many([cfg], runs_dir=tmp_path, progress=False)[0]
    assert again.status == "finished" and numbers(again.history) == numbers(reference.history)
    old = [p for p in tmp_path.iterdir() if ".old-" in p.name]
    assert len(old) == 1 and (old[0] / "model.pt").is_file()  # nothing deleted
    with warnings.catch_warnings():
        warnings.simplefilter("error", st.StoreWarning)
        assert load_run(again.path).status == "finished"


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_run_recovers_a_damaged_run_from_its_checkpoint(tmp_path, monkeypatch, kind, reference):
    monkeypatch.setenv("CIFAR_UTILS_KEEP_CHECKPOINTS", "1")
    cfg = config()
    first = run(cfg, runs_dir=tmp_path, progress=False)
    CORRUPTIONS[kind](first.path)
    calls, spy = steps_counter()
    with pytest.warns(st.StoreWarning, match="checkpoint"):
        again = run(cfg, runs_dir=tmp_path, callbacks=[spy], progress=False)
    assert calls == []  # nothing retrained: every epoch came back from the checkpoint
    assert again.status == "finished" and again.history == first.history
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name]
    assert list(first.path.glob("*.damaged-*"))  # the damaged file is kept, renamed
    with warnings.catch_warnings():
        warnings.simplefilter("error", st.StoreWarning)
        stored = load_run(first.path)
    assert stored.status == "finished" and stored.config == cfg
    assert numbers(stored.history) == numbers(reference.history)


def test_a_damaged_unfinished_run_resumes_from_its_checkpoint(tmp_path, reference):
    cfg = config()
    with pytest.raises(Boom):
        run(cfg, runs_dir=tmp_path, callbacks=[fail_at(3)], progress=False)
    folder = tmp_path / cfg.name
    truncate(folder / "history.json")
    with pytest.warns(st.StoreWarning, match="damaged"):
        assert load_run(folder).status == "damaged"
    with pytest.warns(st.StoreWarning, match="resumes from epoch 2"):
        resumed = run(cfg, runs_dir=tmp_path, progress=False)
    assert resumed.status == "finished" and numbers(resumed.history) == numbers(reference.history)


def test_read_json_names_the_file(tmp_path):
    (tmp_path / "a.json").write_text('[{"epoch": 1, "train_lo')
    with pytest.raises(st.DamagedFileError, match=r"a\.json: not valid JSON .*truncated"):
        st.read_json(tmp_path / "a.json")
    (tmp_path / "b.json").write_bytes(b"\xff")
    with pytest.raises(st.DamagedFileError, match=r"b\.json: not UTF-8"):
        st.read_json(tmp_path / "b.json")
    assert st.read_json(tmp_path / "missing.json", {}) == {}


# --- 2. an emptied or edited history is caught ---------------------------------------------------

@pytest.mark.parametrize("edit", ["emptied", "edited"])
def test_an_emptied_or_edited_history_is_damaged(tmp_path, edit):
    result = run(config(epochs=2), runs_dir=tmp_path, progress=False)
    status = json.loads((result.path / "status.json").read_text())
    assert len(status["history_sha256"]) == 64 and status["model_bytes"] == (result.path / "model.pt").stat().st_size
    history = json.loads((result.path / "history.json").read_text())
    if edit == "emptied":
        history = []
    else:
        history[-1]["test_acc"] = 99.9  # a best error of 0.1 %
    (result.path / "history.json").write_text(json.dumps(history))
    with pytest.warns(st.StoreWarning, match="history.json: does not match the checksum"):
        stored = load_run(result.path)
    assert stored.status == "damaged"


def test_an_emptied_history_of_an_old_run_is_caught_by_its_epoch_count(tmp_path):
    result = run(config(epochs=2), runs_dir=tmp_path, progress=False)
    status = json.loads((result.path / "status.json").read_text())
    for key in ("history_sha256", "model_bytes"):  # as written before checksums existed
        del status[key]
    (result.path / "status.json").write_text(json.dumps(status))
    with warnings.catch_warnings():
        warnings.simplefilter("error", st.StoreWarning)
        old = load_run(result.path)  # unverified, but not damaged
    assert old.status == "finished" and old.history == result.history
    (result.path / "history.json").write_text("[]")
    with pytest.warns(st.StoreWarning, match="holds 0 epochs, status.json says 2"):
        assert load_run(result.path).status == "damaged"


# --- 3. a truncated checkpoint or model.pt ------------------------------------------------------

def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, reference):
    cfg = config()
    with pytest.raises(Boom):
        run(cfg, runs_dir=tmp_path, callbacks=[fail_at(3)], progress=False)
    folder = tmp_path / cfg.name
    assert torch.load(folder / "checkpoint.prev.pt", weights_only=False)["epoch"] == 1
    truncate(folder / "checkpoint.pt")
    with pytest.raises(st.DamagedFileError, match=r"checkpoint\.pt: torch\.load cannot read it"):
        st.load_torch_file(folder / "checkpoint.pt", weights_only=False)
    with pytest.warns(st.StoreWarning, match=r"checkpoint\.pt: torch\.load cannot read it.*Falling back to the "
                                             r"previous checkpoint .*checkpoint\.prev\.pt \(epoch 1\)"):
        resumed = run(cfg, runs_dir=tmp_path, progress=False)
    assert resumed.status == "finished" and numbers(resumed.history) == numbers(reference.history)
    assert resumed.info["resumed_from"] == 1
    assert len(list(folder.glob("checkpoint.pt.damaged-*"))) == 1
    assert not (folder / "checkpoint.pt").exists() and not (folder / "checkpoint.prev.pt").exists()


def test_a_truncated_only_checkpoint_restarts_the_run(tmp_path, reference):
    cfg = config()
    with pytest.raises(Boom):
        run(cfg, runs_dir=tmp_path, callbacks=[fail_at(2)], progress=False)
    folder = tmp_path / cfg.name
    assert not (folder / "checkpoint.prev.pt").exists()
    truncate(folder / "checkpoint.pt", 0.1)
    with pytest.warns(st.StoreWarning, match="No intact checkpoint is left: training restarts from epoch 1"):
        restarted = run(cfg, runs_dir=tmp_path, progress=False)
    assert restarted.status == "finished" and numbers(restarted.history) == numbers(reference.history)
    assert "resumed_from" not in restarted.info


def test_a_truncated_model_falls_back_to_the_checkpoint(tmp_path, monkeypatch, reference):
    monkeypatch.setenv("CIFAR_UTILS_KEEP_CHECKPOINTS", "yes")
    result = run(config(), runs_dir=tmp_path, progress=False)
    truncate(result.path / "model.pt")
    with pytest.warns(st.StoreWarning):
        stored = load_run(result.path)
    assert stored.status == "damaged" and "model.pt" in stored.problems[0]
    with pytest.warns(st.StoreWarning, match=r"model\.pt: torch\.load cannot read it.*Using the weights of "
                                             r".*checkpoint\.pt \(epoch 3"):
        model = stored.load_model()
    for (name, a), b in zip(reference.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.warns(st.StoreWarning, match="Repaired from its checkpoint"):
        again = run(config(), runs_dir=tmp_path, progress=False)
    assert again.status == "finished"
    assert torch.equal(again.model.linear.weight, reference.model.linear.weight)


def test_a_truncated_model_without_checkpoint_is_a_clear_error(tmp_path, reference):
    result = run(config(), runs_dir=tmp_path, progress=False)
    truncate(result.path / "model.pt")
    with pytest.warns(st.StoreWarning):
        stored = load_run(result.path)
    with pytest.raises(st.DamagedFileError, match=r"model\.pt: torch\.load cannot read it.*no intact checkpoint"):
        stored.load_model()
    with pytest.warns(st.StoreWarning, match="moved aside"):
        again = run(config(), runs_dir=tmp_path, progress=False)
    assert again.status == "finished" and numbers(again.history) == numbers(reference.history)


# --- 4. a killed run is not "running" forever ----------------------------------------------------

def _mark_running(folder: Path) -> None:
    status = json.loads((folder / "status.json").read_text())
    status["status"] = "running"
    (folder / "status.json").write_text(json.dumps(status))


def test_a_run_nobody_holds_is_interrupted_not_running(tmp_path):
    with pytest.raises(Boom):
        run(config(), runs_dir=tmp_path, callbacks=[fail_at(2)], progress=False)
    folder = tmp_path / config().name
    _mark_running(folder)  # as a killed process leaves it
    assert load_run(folder).status == "interrupted"
    assert RunStore(tmp_path).frame()["status"].tolist() == ["interrupted"]
    (folder / ".lock").unlink()
    assert load_run(folder).status == "interrupted"


def test_a_run_locked_by_a_live_process_stays_running(tmp_path):
    with pytest.raises(Boom):
        run(config(), runs_dir=tmp_path, callbacks=[fail_at(2)], progress=False)
    folder = tmp_path / config().name
    _mark_running(folder)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(folder / '.lock')!r}, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert load_run(folder).status == "running"
        assert RunStore(tmp_path).frame()["status"].tolist() == ["running"]
        with pytest.raises(RuntimeError, match="being trained by another process"):
            run(config(), runs_dir=tmp_path, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert load_run(folder).status == "interrupted"


# --- 5. no retraining of a run another process just finished ----------------------------------

def test_a_run_finished_by_another_process_meanwhile_is_not_retrained(tmp_path, monkeypatch):
    # "Another process" finishes the run the first time run() lets go of the run's lock. With
    # the decision and the training under one lock hold, that is after this run() has trained
    # it, and the other one just loads it; with two lock holds, it trains in between and this
    # run() then trained the run a second time.
    cfg = config(epochs=2)
    real_lock = st.run_lock
    other = []

    @contextmanager
    def lock_then_other_process(path):
        with real_lock(path) as lock:
            yield lock
        if not other:
            other.append(None)
            other[0] = run(cfg, runs_dir=tmp_path, progress=False)

    monkeypatch.setattr(st, "run_lock", lock_then_other_process)
    calls, spy = steps_counter()
    result = run(cfg, runs_dir=tmp_path, callbacks=[spy], progress=False)
    assert result.status == "finished"
    assert load_run(result.path).info["sessions"] == 1  # trained once, by one of the two
    assert other[0].history == result.history


# --- 6. file modes follow the umask ----------------------------------------------------------

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_store_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        result = run(config(epochs=1), runs_dir=tmp_path, progress=False)
        files = [p for p in result.path.iterdir() if p.is_file()]
        assert {p.name for p in files} >= {"config.json", "history.json", "status.json", "model.pt"}
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: mode for p in files}
        assert st.current_umask() == umask and os.umask(umask) == umask  # read without changing it
    finally:
        os.umask(old)


# --- 7 and #9: the checkpoint setting, checked at the start; finished runs stay light -------------

@pytest.mark.parametrize("value,keep", [("off", False), ("no", False), ("0", False), ("false", False),
                                        ("", False), ("on", True), ("YES", True), ("1", True), ("true", True)])
def test_keep_checkpoints_values(monkeypatch, value, keep):
    monkeypatch.setenv("CIFAR_UTILS_KEEP_CHECKPOINTS", value)
    assert st.keep_checkpoints() is keep


def test_a_bad_checkpoint_setting_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_UTILS_KEEP_CHECKPOINTS", "maybe")
    calls, spy = steps_counter()
    with pytest.raises(ValueError, match="CIFAR_UTILS_KEEP_CHECKPOINTS='maybe': use 1/on/true/yes"):
        run(config(epochs=1), runs_dir=tmp_path, callbacks=[spy], progress=False)
    with pytest.raises(ValueError, match="CIFAR_UTILS_KEEP_CHECKPOINTS='maybe'"):
        run_many([config(epochs=1, seed=1), config(epochs=1, seed=2)], jobs=2, runs_dir=tmp_path, progress=False)
    assert calls == [] and not any(tmp_path.iterdir())


def test_finished_runs_keep_only_results_by_default(tmp_path, monkeypatch):
    result = run(config(), runs_dir=tmp_path, progress=False)
    assert sorted(p.name for p in result.path.iterdir()) == [
        ".lock", "config.json", "history.json", "model.pt", "status.json"]
    monkeypatch.setenv("CIFAR_UTILS_KEEP_CHECKPOINTS", "off")
    assert run(config(seed=9), runs_dir=tmp_path, progress=False).status == "finished"  # accepted
    monkeypatch.setenv("CIFAR_UTILS_KEEP_CHECKPOINTS", "on")
    kept = run(config(epochs=2), runs_dir=tmp_path, progress=False)
    assert (kept.path / "checkpoint.pt").is_file() and not (kept.path / "checkpoint.prev.pt").exists()


def test_a_training_run_keeps_the_previous_checkpoint(tmp_path):
    seen = []

    def look(state, record):
        folder = state.path
        prev = folder / "checkpoint.prev.pt"
        seen.append(torch.load(prev, weights_only=False)["epoch"] if prev.exists() else None)

    run(config(), runs_dir=tmp_path, callbacks=[LambdaCallback(on_epoch_end=look)], progress=False)
    assert seen == [None, None, 1]  # at epoch 3's end: checkpoint.pt holds epoch 2, the previous epoch 1


# --- 10. a .npz of random bytes --------------------------------------------------------------

def test_a_random_npz_is_not_a_valid_npz(tmp_path):
    path = tmp_path / "cifar10.npz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptDataError) as info:
        read_npz("cifar10", path)
    message = str(info.value)
    assert str(path) in message and "not a valid .npz" in message
    assert "allow_pickle" not in message and "pickled data" not in message


def test_an_npz_of_python_objects_is_refused_without_advice_to_unpickle(tmp_path):
    path = tmp_path / "cifar10.npz"
    objects = np.array([{"a": 1}], dtype=object)
    np.savez(path, x_train=objects, y_train=objects, x_test=objects, y_test=objects)
    with pytest.raises(CorruptDataError, match="not a valid .npz of arrays") as info:
        read_npz("cifar10", path)
    assert "allow_pickle" not in str(info.value)


# --- 11. RunManyError shows the whole cause -----------------------------------------------------

def test_run_many_error_shows_name_type_and_whole_message(tmp_path, monkeypatch):
    good, bad = config(epochs=1, seed=1), config(epochs=1, seed=2)
    real_run = engine_loop.run

    def run_or_fail(cfg, **kwargs):
        if cfg == bad:
            raise FileNotFoundError("No CIFAR-10 data found.\n  looked in: /nowhere/cifar-10-batches-py\n"
                                    "  hint: pass data_root=")
        return real_run(cfg, **kwargs)

    monkeypatch.setattr(engine_loop, "run", run_or_fail)
    with pytest.raises(RunManyError) as info:
        run_many([good, bad], runs_dir=tmp_path, progress=False)
    message = str(info.value)
    assert f"[1] {bad.name}: FileNotFoundError: No CIFAR-10 data found." in message
    assert "looked in: /nowhere/cifar-10-batches-py" in message and "hint: pass data_root=" in message
    assert good.name not in message
    assert info.value.failures[1][:2] == (bad.name, "FileNotFoundError")
    assert info.value.runs[0].status == "finished" and info.value.runs[1] is None
    assert "Traceback" in info.value.errors[1]
