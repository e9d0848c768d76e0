"""The training engine on a CPU with a tiny CNN and 64 random images (cifar_utils.engine.testing)."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import cifar_utils.engine.testing as testing
from cifar_utils.engine import (
    LOSSES,
    Callback,
    LambdaCallback,
    RunConfig,
    RunManyError,
    RunStore,
    create_loss,
    load_run,
    run,
    run_many,
)
from cifar_utils.engine import evaluate
from cifar_utils.engine import loop as engine_loop
from cifar_utils.engine import batch, parallel
from cifar_utils.engine import store as st
from cifar_utils.engine.testing import tiny_config
from cifar_utils.models import create_model

REPO = Path(__file__).resolve().parents[1]
NUMBERS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS", "off")


def strict_json(path):
    """Parse a file as strict JSON (bare NaN / Infinity are errors)."""
    def refuse(name):
        raise ValueError(f"{path.name} holds {name}: not valid JSON")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def all_finite(model):
    return all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


def numbers(history):
    return [{k: r[k] for k in NUMBERS} for r in history]


#: Longest wait for an event a test expects (a process exit, a status written): a guard against a
#: hang, not a speed claim (speed is measured in bench/), so generous enough for a loaded machine.
HANG_GUARD_S = 300


def wait_until(predicate, what: str, timeout: float = HANG_GUARD_S, poll: float = 0.1):
    """``predicate()``'s first truthy value; fails the test, naming ``what``, if none comes within
    ``timeout`` seconds (which only guards against a hang)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"hang guard: still waiting for {what} after {timeout} s")
        time.sleep(poll)


def config(**changes):
    # augmentation, momentum, weight decay and a plateau scheduler that actually fires, so that a
    # resumed run must restore optimizer, scheduler and RNG state to match.
    base = dict(epochs=3, scheduler_options={"patience": 0, "threshold": 0.5}, seed=3)
    base.update(changes)
    return tiny_config(**base)


class Boom(Exception):
    pass


# --- resume / cache / atomic saves ------------------------------------------------------------

def test_killed_run_resumes_to_the_same_history(tmp_path):
    cfg = config()
    ref = run(cfg, runs_dir=tmp_path / "ref", progress=False)
    assert ref.status == "finished" and len(ref.history) == 3
    assert any(r["lr"] != cfg.lr for r in ref.history), "the plateau scheduler should have fired"

    # A separate process trains the same config and is killed (os._exit, no clean-up at all) in
    # the middle of epoch 2, i.e. after epoch 1's checkpoint.
    runs = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os
        import cifar_utils.engine.testing
        from cifar_utils.engine import LambdaCallback, RunConfig, run
        cfg = RunConfig.from_dict({cfg.to_dict()!r})
        kill = LambdaCallback(after_step=lambda s: os._exit(137) if s.step == 6 else None)
        run(cfg, runs_dir={str(runs)!r}, callbacks=[kill], progress=False)
    """)
    env = dict(os.environ, CIFAR_UTILS_PROGRESS="off")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr
    folder = runs / cfg.name
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "running" and status["epochs_done"] == 1
    assert not (folder / "model.pt").exists()

    resumed = run(cfg, runs_dir=runs, progress=False)
    assert resumed.status == "finished"
    assert resumed.info["sessions"] == 2
    assert numbers(resumed.history) == numbers(ref.history)
    for (name, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert json.loads((folder / "history.json").read_text()) == resumed.history


def test_failed_run_resumes_and_matches(tmp_path):
    cfg = config()
    ref = run(cfg, runs_dir=tmp_path / "ref", progress=False)

    def boom(state, record):
        if record["epoch"] == 2:
            raise Boom("simulated crash")

    with pytest.raises(Boom):
        run(cfg, runs_dir=tmp_path / "b", callbacks=[LambdaCallback(on_epoch_end=boom)], progress=False)
    crashed = load_run(tmp_path / "b" / cfg.name)
    assert crashed.status == "failed" and "simulated crash" in crashed.info["error"]
    assert len(crashed.history) == 1  # on_epoch_end runs before the epoch's checkpoint
    resumed = run(cfg, runs_dir=tmp_path / "b", progress=False)
    assert resumed.status == "finished"
    assert numbers(resumed.history) == numbers(ref.history)


def test_finished_run_is_loaded_not_retrained(tmp_path, monkeypatch):
    cfg = config(epochs=2)
    first = run(cfg, runs_dir=tmp_path, progress=False)
    folder = first.path
    (folder / ".lock").unlink()  # loading takes no lock and writes nothing (works on a read-only store)
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    calls = []
    spy = LambdaCallback(on_fit_start=lambda s: calls.append("fit"), after_step=lambda s: calls.append("step"))
    loads = []
    monkeypatch.setattr(engine_loop, "load_for_config", lambda c: loads.append(c) or pytest.fail("data loaded"))
    again = run(cfg, runs_dir=tmp_path, callbacks=[spy], progress=False)
    assert calls == [] and loads == []  # no data loaded, no step taken: not retrained
    assert again.status == "finished" and again.history == first.history
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    # the lazily loaded model is the trained one
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.model(x), first.model.eval()(x))


def test_retrain_moves_the_old_run_aside(tmp_path):
    cfg = config(epochs=1)
    first = run(cfg, runs_dir=tmp_path, progress=False)
    second = run(cfg, runs_dir=tmp_path, retrain=True, progress=False)
    old = [p for p in tmp_path.iterdir() if p.name.startswith(cfg.name + ".old-")]
    assert len(old) == 1 and (old[0] / "model.pt").is_file()
    assert load_run(old[0]).history == first.history
    assert second.status == "finished" and numbers(second.history) == numbers(first.history)
    assert [r.name for r in RunStore(tmp_path).list()] == [cfg.name]


def test_atomic_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    st.atomic_save({"epoch": 1}, path)
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        st.atomic_save({"epoch": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # temp file cleaned up


def test_crash_while_checkpointing_a_run(tmp_path, monkeypatch):
    cfg = config()
    real_save = torch.save
    calls = {"n": 0}

    def flaky_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's checkpoint
            f.write(b"partial")
            raise OSError("killed during save")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(OSError, match="killed during save"):
        run(cfg, runs_dir=tmp_path, progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    folder = tmp_path / cfg.name
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 1
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))
    resumed = run(cfg, runs_dir=tmp_path, progress=False)
    assert resumed.status == "finished" and [r["epoch"] for r in resumed.history] == [1, 2, 3]


# --- divergence -------------------------------------------------------------------------------

def test_divergence_stops_and_keeps_history(tmp_path):
    def poison(state):
        if state.step == 5:  # first step of epoch 2 (4 steps per epoch)
            with torch.no_grad():
                next(state.model.parameters()).fill_(float("nan"))

    cfg = config(epochs=4)
    result = run(cfg, runs_dir=tmp_path, callbacks=[LambdaCallback(after_step=poison)], progress=False)
    assert result.status == "diverged"
    assert [r["epoch"] for r in result.history] == [1]
    stored = load_run(result.path)
    assert stored.status == "diverged" and stored.history == result.history
    assert stored.info["diverged_at"] == 2 and "non-finite" in stored.info["error"]
    assert all(torch.isfinite(p).all() for p in stored.model.parameters())  # the last good checkpoint
    again = run(cfg, runs_dir=tmp_path, callbacks=[LambdaCallback(after_step=poison)], progress=False)
    assert again.status == "diverged" and again.history == result.history  # loaded, not retrained


def test_huge_learning_rate_diverges(tmp_path):
    result = run(config(lr=1e6), runs_dir=tmp_path, progress=False)
    assert result.status == "diverged" and len(result.history) < 3
    assert load_run(result.path).status == "diverged"


@pytest.mark.parametrize("what", ["param", "buffer"])
def test_divergence_in_the_last_step_of_an_epoch_is_caught(tmp_path, what):
    # After the epoch's last step (step 8 = end of epoch 2) the training loss checks have all
    # passed; a NaN weight (test loss NaN) or an inf BatchNorm buffer (test loss still finite)
    # must still end the run there, with epoch 1's checkpoint as the stored weights.
    def poison(state):
        if state.step == 8:
            with torch.no_grad():
                if what == "param":
                    state.model.linear.weight.fill_(float("nan"))
                else:
                    state.model.block2[1].running_var.fill_(float("inf"))

    result = run(config(epochs=4), runs_dir=tmp_path, callbacks=[LambdaCallback(after_step=poison)], progress=False)
    assert result.status == "diverged", result.history
    assert [r["epoch"] for r in result.history] == [1]
    stored = load_run(result.path)
    assert stored.status == "diverged" and stored.info["diverged_at"] == 2
    assert "non-finite" in stored.info["error"]
    assert not (result.path / st.MODEL_FILE).exists()
    ckpt = torch.load(result.path / st.CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1
    assert result.model is not None and all_finite(result.model) and all_finite(stored.model)
    strict_json(result.path / st.HISTORY_FILE), strict_json(result.path / st.STATUS_FILE)


def test_a_large_learning_rate_never_stores_non_finite_weights(tmp_path):
    # The reviewer's case: before, it "finished" with test_loss NaN and NaN weights in model.pt.
    result = run(tiny_config(epochs=5, lr=1e3, seed=0, train_size=64, scheduler="none"), runs_dir=tmp_path,
                 progress=False)
    assert result.status == "diverged"
    assert all(math.isfinite(r[k]) for r in result.history for k in ("train_loss", "test_loss"))
    model = load_run(result.path).model
    assert model is None or all_finite(model)
    strict_json(result.path / st.HISTORY_FILE), strict_json(result.path / st.STATUS_FILE)


def test_json_files_are_strict_json(tmp_path):
    data = {"loss": float("nan"), "rows": [{"a": float("inf"), "b": 1.5}, (float("-inf"), 2)], "n": None}
    st.atomic_write_json(data, tmp_path / "x.json")
    assert strict_json(tmp_path / "x.json") == {"loss": None, "rows": [{"a": None, "b": 1.5}, [None, 2]], "n": None}


# --- losses -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_lowers_itself_on_a_fixed_batch(name):
    ds = testing.random_dataset(train_size=32)
    x = (ds.x_train.float() / 255 - 0.5) / 0.25
    y = ds.y_train
    torch.manual_seed(0)
    model = create_model("tiny_cnn", num_classes=10)
    loss_fn = create_loss(name)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    with torch.no_grad():
        before = loss_fn(model(x), y).item()
    for _ in range(15):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss_fn(model(x), y).item()
    assert after < before, (name, before, after)


def test_loss_definitions():
    logits = torch.randn(5, 10)
    y = torch.randint(0, 10, (5,))
    onehot = torch.nn.functional.one_hot(y, 10).float()
    p = logits.softmax(-1)
    assert torch.allclose(create_loss("ce")(logits, y), torch.nn.functional.cross_entropy(logits, y))
    assert torch.allclose(create_loss("mse")(logits, y), ((p - onehot) ** 2).mean())
    assert torch.allclose(create_loss("huber")(logits, y), 0.5 * ((p - onehot) ** 2).mean())
    bce = -(onehot * logits.sigmoid().log() + (1 - onehot) * (1 - logits.sigmoid()).log()).mean()
    assert torch.allclose(create_loss("bce")(logits, y), bce, atol=1e-6)
    with pytest.raises(ValueError, match="unknown loss 'l1'; choose one of: ce, bce, mse, huber"):
        create_loss("l1")


@pytest.mark.parametrize("changes", [dict(loss="bce"), dict(optimizer="adam", lr=1e-3),
                                     dict(optimizer="adadelta", lr=1.0), dict(scheduler="cosine", scheduler_options={}),
                                     dict(val_size=16, monitor="val")])
def test_variants_train_through_the_engine(tmp_path, changes):
    result = run(config(epochs=2, **changes), runs_dir=tmp_path, progress=False)
    assert result.status == "finished"
    keys = set(result.history[-1])
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds", "images_per_s"} <= keys
    assert ("val_acc" in keys) == ("val_size" in changes)


# --- configs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,match", [
    (dict(optimizer="sgdd"), r"unknown optimizer 'sgdd'; choose one of: adadelta, adagrad, adam, sgd"),
    (dict(loss="hinge"), r"unknown loss 'hinge'; choose one of: ce, bce, mse, huber"),
    (dict(scheduler="exp"), r"unknown scheduler 'exp'; choose one of: cosine, none, plateau, step"),
    (dict(model="resnet19"), r"unknown model 'resnet19'; choose one of: .*resnet18.*tiny_cnn"),
    (dict(dataset="cifar100"), r"unknown dataset 'cifar100'; choose one of: cifar10, mnist"),
    (dict(lr=-0.1), r"lr must be a finite number >= 0, got -0.1"),
    (dict(epochs=0), r"epochs must be an integer >= 1, got 0"),
    (dict(batch_size=0), r"batch_size must be an integer >= 1"),
    (dict(monitor="val"), r"monitor='val' needs a validation split: set val_size > 0"),
    (dict(monitor="train"), r"unknown monitor 'train'; choose one of: test, val"),
    (dict(precision="fp16"), r"unknown precision 'fp16'; choose one of: auto, fp32, bf16"),
    (dict(optimizer="adam", optimizer_options={"nesterov": True}),
     r"optimizer 'adam' got unknown optimizer_options nesterov; allowed: .*betas"),
    (dict(scheduler_options={"patients": 3}), r"scheduler 'plateau' got unknown scheduler_options patients; "
                                              r"allowed: factor, patience"),
    (dict(model_options={"depth": 3}), r"model 'tiny_cnn' got unknown model_options depth; allowed: in_channels, width"),
    (dict(grad_clip=float("inf")), r"grad_clip must be None \(off\) or a finite number > 0, got inf"),
    (dict(grad_clip=float("nan")), r"grad_clip must be None \(off\) or a finite number > 0, got nan"),
    (dict(optimizer="adam", optimizer_options={"betas": [0.9, float("inf")]}),
     r"optimizer_options must hold finite numbers only .*got NaN/inf at betas\[1\]"),
    (dict(scheduler_options={"factor": float("nan")}),
     r"scheduler_options must hold finite numbers only .*got NaN/inf at factor"),
    (dict(model_options={"width": float("inf")}), r"model_options must hold finite numbers only .*at width"),
])
def test_bad_configs_raise_one_clear_error(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        run(tiny_config(**changes), runs_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())  # nothing written


def test_several_problems_are_listed_together():
    with pytest.raises(ValueError) as info:
        RunConfig(optimizer="x", epochs=0, lr=-1).validate()
    assert str(info.value).count("\n  - ") == 3


def test_config_round_trip_and_key():
    cfg = RunConfig(model_options={"activation": "gelu"}, lr=1)
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.key() == RunConfig(model_options={"activation": "gelu"}, lr=1.0).key()
    assert len(cfg.key()) == 8 and cfg.name == f"resnet18-{cfg.key()}"
    assert RunConfig().key() != RunConfig(seed=1).key() != RunConfig(device="cpu").key()
    assert RunConfig().key() == RunConfig().key()
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        RunConfig.from_dict({"modle": "x"})
    defaults = RunConfig()
    assert (defaults.optimizer, defaults.lr, defaults.momentum, defaults.weight_decay, defaults.batch_size,
            defaults.epochs, defaults.scheduler, defaults.monitor, defaults.augment) == (
        "sgd", 0.1, 0.9, 5e-4, 128, 200, "plateau", "test", True)


# --- callbacks, store, progress ---------------------------------------------------------------

class StepCounter(Callback):
    """Counts steps and records a gradient norm in after_backward; its state survives resumes."""

    def __init__(self):
        self.grad_norms = []
        self.order = []

    def on_fit_start(self, state):
        self.order.append("fit_start")

    def after_backward(self, state):
        g = torch.cat([p.grad.flatten() for p in state.model.parameters() if p.grad is not None])
        self.grad_norms.append(g.norm().item())
        self.order.append("after_backward")

    def after_step(self, state):
        self.order.append("after_step")

    def on_epoch_end(self, state, record):
        self.order.append(f"epoch_end {record['epoch']}")

    def on_fit_end(self, state):
        self.order.append("fit_end")

    def state_dict(self):
        return {"grad_norms": list(self.grad_norms)}

    def load_state_dict(self, state):
        self.grad_norms = list(state["grad_norms"])


def test_callback_hooks_and_saved_state(tmp_path):
    cfg = config(epochs=2)
    cb = StepCounter()
    result = run(cfg, runs_dir=tmp_path, callbacks=[cb], progress=False)
    assert cb.order[0] == "fit_start" and cb.order[-1] == "fit_end"
    assert cb.order[1:4] == ["after_backward", "after_step", "after_backward"]
    assert cb.order.count("after_step") == 8 and "epoch_end 2" in cb.order
    assert len(cb.grad_norms) == 8 and all(g > 0 for g in cb.grad_norms)
    loaded = StepCounter()
    run(cfg, runs_dir=tmp_path, callbacks=[loaded], progress=False)  # cached: state restored, no hooks
    assert loaded.order == [] and loaded.grad_norms == cb.grad_norms
    assert result.callback_states["StepCounter"]["grad_norms"] == cb.grad_norms


def test_store_listing_and_run_helpers(tmp_path):
    a = run(config(epochs=2), runs_dir=tmp_path, progress=False)
    b = run(config(epochs=1, seed=4), runs_dir=tmp_path, progress=False)
    runs = RunStore(tmp_path).list()
    assert sorted(r.name for r in runs) == sorted([a.name, b.name])
    assert all(r.status == "finished" and r.device.startswith("cpu") for r in runs)
    frame = a.history_frame()
    assert list(frame.index) == [1, 2] and "test_acc" in frame
    assert a.best_test_error == pytest.approx(100 - max(r["test_acc"] for r in a.history))
    assert a.final_test_error == pytest.approx(100 - a.history[-1]["test_acc"])
    assert a.wall_seconds > 0 and set(json.loads((a.path / "status.json").read_text())) >= {
        "status", "created", "finished", "device", "device_name", "torch_version", "wall_seconds"}
    assert len(RunStore(tmp_path).frame()) == 2
    monkey_root = RunStore()
    assert monkey_root.root == Path(os.environ.get("CIFAR_UTILS_RUNS") or "runs")


def test_evaluate_restores_the_train_eval_mode():
    model = create_model("tiny_cnn", num_classes=10)
    batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))]
    loss_fn = create_loss("ce")
    model.train()
    evaluate(model, batches, loss_fn, torch.device("cpu"))
    assert model.training
    model.eval()
    evaluate(model, batches, loss_fn, torch.device("cpu"))
    assert not model.training


def test_evaluating_in_a_callback_keeps_training_in_train_mode(tmp_path):
    modes = []

    def probe(state):
        if state.batch_index == 0:
            evaluate(state.model, state.loaders.test, state.loss_fn, state.device)
        modes.append(state.model.training)

    run(config(epochs=1), runs_dir=tmp_path, callbacks=[LambdaCallback(after_step=probe)], progress=False)
    assert modes == [True] * 4


def test_recorded_lr_is_the_one_set_by_on_epoch_start(tmp_path):
    def warm(state):
        for group in state.optimizer.param_groups:
            group["lr"] = 0.01 * (state.epoch + 1)

    result = run(config(epochs=2, scheduler="none", scheduler_options={}), runs_dir=tmp_path,
                 callbacks=[LambdaCallback(on_epoch_start=warm)], progress=False)
    assert [r["lr"] for r in result.history] == pytest.approx([0.01, 0.02])


def test_auto_precision_needs_native_bf16(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    asked = []

    def supported(native):
        def is_bf16_supported(including_emulation=True):
            asked.append(including_emulation)
            return native or including_emulation  # an old GPU: bf16 only emulated
        return is_bf16_supported

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported(False))
    assert engine_loop.resolve_precision("auto", cuda) == "fp32" and asked == [False]
    assert engine_loop.resolve_precision("bf16", cuda) == "bf16"  # asked for explicitly: kept
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported(True))
    assert engine_loop.resolve_precision("auto", cuda) == "bf16"
    assert engine_loop.resolve_precision("auto", cpu) == "fp32"
    # a torch whose is_bf16_supported has no including_emulation: the compute capability decides
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "hip", None)
    for capability, expected in (((7, 5), "fp32"), ((8, 0), "bf16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert engine_loop.resolve_precision("auto", cuda) == expected


def test_progress_bar_log_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS", "log")
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS_INTERVAL", "0")
    run(config(epochs=2), runs_dir=tmp_path, progress=True)
    out = capsys.readouterr().out
    assert "tiny_cnn-" in out and "2/2" in out and "test_err=" in out and "img_s=" in out
    run(config(epochs=1), runs_dir=tmp_path / "quiet", progress=False)
    assert capsys.readouterr().out == ""


# --- run_many ---------------------------------------------------------------------------------

def test_run_many_in_two_processes(tmp_path, monkeypatch):
    loaded = []
    real_load = batch.load_for_config
    monkeypatch.setattr(batch, "load_for_config", lambda c: (loaded.append(c), real_load(c))[1])
    good = [config(epochs=1, seed=10), config(epochs=1, seed=11)]
    broken = config(epochs=1, seed=12, model_options={"width": -1})  # fails when the model is built
    with pytest.raises(RunManyError) as info:
        run_many([*good, broken], jobs=2, runs_dir=tmp_path, progress=False)
    assert len(loaded) == 1  # the data was loaded once in the parent before the workers started
    runs, errors = info.value.runs, info.value.errors
    assert list(errors) == [2] and runs[2] is None
    assert [r.status for r in runs[:2]] == ["finished", "finished"]
    stored = {r.name: r.status for r in RunStore(tmp_path).list()}
    assert stored == {good[0].name: "finished", good[1].name: "finished", broken.name: "failed"}
    # cached: loaded without spawning, same results
    monkeypatch.setattr(parallel, "ProcessPoolExecutor",
                        lambda *a, **kw: pytest.fail("a worker pool was started for finished runs"))
    again = run_many(good, jobs=2, runs_dir=tmp_path, progress=False)
    assert [r.history for r in again] == [r.history for r in runs[:2]]
    assert len(loaded) == 1  # nothing to train: no data loaded


def test_run_many_prefetches_each_data_spec_once(monkeypatch):
    loaded = []

    def load(c):
        loaded.append((c.dataset, c.source, c.data_root))
        if c.data_root == "/nowhere":
            raise FileNotFoundError("no data")  # left for the workers to report

    monkeypatch.setattr(batch, "load_for_config", load)
    batch.prefetch_data([config(seed=1), config(seed=2, train_size=32), config(source="sample"),
                             config(data_root="/nowhere"), config(data_root="/nowhere", seed=5),
                             config(dataset="cifar10"), config(dataset="cifar10", seed=7)])
    assert loaded == [("tiny_random", "auto", None), ("tiny_random", "sample", None),
                      ("tiny_random", "auto", "/nowhere"), ("cifar10", "auto", None)]


def test_threads_per_worker_follow_the_cpu_affinity(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    assert parallel._threads_per_worker(2) == 4
    assert parallel._threads_per_worker(16) == 1
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # not Linux
    assert parallel._threads_per_worker(2) == 32


def test_ctrl_c_stops_run_many(tmp_path, monkeypatch):
    # The parent is interrupted (as by Ctrl-C / a notebook's interrupt) once the first run is
    # done: the queued runs must not train, the workers must be gone, KeyboardInterrupt raised.
    real_wait, waits = parallel.wait, []

    def interrupted_after_first(futures, return_when):
        if waits:
            raise KeyboardInterrupt
        waits.append(1)
        return real_wait(futures, return_when=return_when)

    monkeypatch.setattr(parallel, "wait", interrupted_after_first)
    configs = [config(epochs=3, seed=20 + i, train_size=128) for i in range(8)]
    with pytest.raises(KeyboardInterrupt):
        run_many(configs, jobs=2, runs_dir=tmp_path, progress=False)
    # Wait on events, not on a stopwatch (speed belongs in bench/): the workers' exit, then the
    # store's state. The deadlines only stop a hang; a loaded machine is merely slower.
    wait_until(lambda: multiprocessing.active_children() == [], "the run_many workers to exit")

    def settled():
        stored = RunStore(tmp_path).list()
        return stored if stored and all(r.status != "running" for r in stored) else None

    stored = wait_until(settled, "a stored run, and none still 'running'")
    assert 1 <= len(stored) < len(configs), [r.status for r in stored]
    assert all(r.status in ("finished", "interrupted") for r in stored), [r.status for r in stored]


def test_finished_runs_can_drop_their_checkpoint(tmp_path, monkeypatch):
    from cifar_utils.engine import load_run

    monkeypatch.setenv("CIFAR_UTILS_KEEP_CHECKPOINTS", "0")
    first = run(config(epochs=2), runs_dir=tmp_path, progress=False)
    assert first.status == "finished"
    assert not (first.path / "checkpoint.pt").exists() and (first.path / "model.pt").exists()
    again = run(config(epochs=2), runs_dir=tmp_path, progress=False)  # loaded, not retrained
    assert again.history == first.history and again.status == "finished"
    assert load_run(first.path).model is not None
    monkeypatch.setenv("CIFAR_UTILS_KEEP_CHECKPOINTS", "maybe")
    with pytest.raises(ValueError, match="use 1/on/true/yes .* or 0/off/false/no"):
        run(config(epochs=1, seed=5), runs_dir=tmp_path, progress=False)
