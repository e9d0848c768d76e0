"""The engine's shared training step, the benchmarks that time it, and the GPU check's dry run."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cifar_utils.engine.testing as engine_testing
from cifar_utils.engine import LambdaCallback, StepSetup, TrainState, loop, run, train_epoch, train_step
from cifar_utils.engine.callbacks import Callbacks

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402
import train_throughput  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS", "off")


def _setup(**changes) -> StepSetup:
    torch.manual_seed(0)
    model = engine_testing.tiny_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    return StepSetup(model=model, optimizer=opt, loss_fn=torch.nn.functional.cross_entropy,
                     device=torch.device("cpu"), **changes)


def _batches(n: int, batch: int = 8):
    ds = engine_testing.random_dataset(train_size=n * batch)
    return [((ds.x_train[i:i + batch].float() / 255), ds.y_train[i:i + batch]) for i in range(0, n * batch, batch)]


def test_run_trains_every_epoch_through_train_epoch(tmp_path, monkeypatch):
    calls = []
    real = loop.train_epoch

    def counting(setup, batches, state=None):
        calls.append(state.epoch)
        return real(setup, batches, state)

    monkeypatch.setattr(loop, "train_epoch", counting)
    result = run(engine_testing.tiny_config(epochs=2), runs_dir=tmp_path, progress=False)
    assert calls == [0, 1] and result.status == "finished"
    assert all(r["images_per_s"] > 0 for r in result.history)


def test_the_benchmark_times_the_engines_train_epoch(monkeypatch):
    import cifar_utils.engine as engine

    calls = []
    real = engine.train_epoch
    monkeypatch.setattr(engine, "train_epoch", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    ds = train_throughput.synthetic_dataset("cifar10", 32)
    row = train_throughput.measure("x", train_throughput.engine_batches(ds, 8, torch.device("cpu"), False),
                                   model="tiny_cnn", device=torch.device("cpu"), batch_size=8, steps=2, warmup=1)
    assert calls == [1, 1]  # warmup, then the timed steps
    assert row["img_s"] > 0 and row["ms_step"] > 0 and torch.isfinite(torch.tensor(row["loss"]))


def test_train_step_runs_hooks_clips_and_counts():
    seen = []
    cbs = Callbacks([LambdaCallback(after_backward=lambda s: seen.append(("backward", s.batch_index, s.loss is not None)),
                                    after_step=lambda s: seen.append(("step", s.step)))])
    setup = _setup(callbacks=cbs, grad_clip=1e-6)
    state = TrainState(config=None, model=setup.model, optimizer=setup.optimizer, scheduler=None,
                       loss_fn=setup.loss_fn, loaders=None, device=setup.device, path=Path("."))
    before = [p.detach().clone() for p in setup.model.parameters()]
    result = train_epoch(setup, _batches(3), state)
    assert seen == [("backward", 0, True), ("step", 1), ("backward", 1, True), ("step", 2),
                    ("backward", 2, True), ("step", 3)]
    assert state.step == 3 and state.x is None and state.loss is None  # batch tensors released
    assert result.images == 24 and 0 <= result.acc <= 100 and result.seconds > 0
    # clipped to a norm of 1e-6 with lr 0.05: the weights barely move
    moved = max((p.detach() - b).abs().max().item() for p, b in zip(setup.model.parameters(), before))
    assert 0 < moved < 1e-6


def test_train_step_without_state_runs_no_hooks():
    cbs = Callbacks([LambdaCallback(after_step=lambda s: pytest.fail("hook called without a state"))])
    setup = _setup(callbacks=cbs)
    x, y = _batches(1)[0]
    loss, correct = train_step(setup, x, y)
    assert loss.requires_grad is False and loss.ndim == 0 and 0 <= int(correct) <= 8


def test_train_epoch_raises_diverged_on_a_non_finite_loss():
    setup = _setup()
    with torch.no_grad():
        next(setup.model.parameters()).fill_(float("nan"))
    with pytest.raises(loop.Diverged, match="non-finite training loss"):
        train_epoch(setup, _batches(2))
    with pytest.raises(RuntimeError, match="no batches"):
        train_epoch(_setup(), [])


def test_store_and_runtime_do_not_import_the_loop():
    for name in ("store.py", "runtime.py"):
        tree = ast.parse((ROOT / "cifar_utils" / "engine" / name).read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "loop" not in modules and "cifar_utils.engine.loop" not in modules, name
    from cifar_utils.engine import loop as engine_loop, resolve_device, runtime

    assert resolve_device is runtime.resolve_device is engine_loop.resolve_device  # old import path kept


def test_nested_time_limits_tell_which_one_expired():
    with gpu_check.time_limit(120) as outer:  # long enough never to expire here, even on a loaded machine
        with pytest.raises(gpu_check.PartTimeout) as info:
            with gpu_check.time_limit(0.2) as inner:
                time.sleep(2)
        assert info.value.limit is inner and inner is not outer
        time.sleep(0.1)  # the outer limit is still armed, and has not expired
    assert gpu_check._LIMITS == []


def test_chapter_plan_is_the_projects_plan():
    plan = gpu_check.chapter_plan(ROOT / "params" / "full.yaml")
    ch = {name: [r for r in plan.runs if name in r.chapters] for name in plan.chapters}
    assert list(ch) == ["01_architectures", "02_ablations", "03_training_choices", "04_gradcam_best_model",
                        "05_batchnorm", "06_dessilbi"]
    assert len(ch["01_architectures"]) == 7 and {r.config.epochs for r in ch["01_architectures"]} == {200}
    assert len(ch["02_ablations"]) == 8
    assert len(ch["03_training_choices"]) == 11  # 13 sweep variants, the baseline shared by three
    assert {r.config.model for r in ch["03_training_choices"]} == {"resnet18"}
    assert len(plan.runs) < sum(len(v) for v in ch.values())  # shared runs once
    assert plan.settling and all(r.settling for r in plan.settling)


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    from cifar_utils import packing

    env = dict(os.environ, PYTHONPATH=str(ROOT), CIFAR_UTILS_PROGRESS="off")
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = results["parts"]
    assert results["meta"]["dry_run"] is True and results["meta"]["device"] == "cpu"
    assert {k: p["status"] for k, p in parts.items()} == {
        "throughput": "done", "packing": "done", "compile_cache": "done", "projection": "done", "accuracy": "done",
        "bn_overhead": "skipped"}

    rows = {r["mode"]: r for r in parts["throughput"]["rows"]}
    assert set(rows) == {"report", "default", "compile", "graphs"}  # graphs: eager on the CPU, as in the engine
    assert all(r["img_s"] > 0 for r in rows.values()) and rows["report"]["vs_report"] == 1.0

    pk = parts["packing"]
    assert [(r["model"], r["k"]) for r in pk["rows"]] == [("tiny_cnn", 1), ("tiny_cnn", 2)]
    assert all(r["img_s"] > 0 and len(r["per_run_img_s"]) == r["k"] for r in pk["rows"])
    assert pk["rows"][1]["img_s"] == pytest.approx(sum(pk["rows"][1]["per_run_img_s"]))
    entries: dict = {}
    exec(pk["entries"], entries)  # pasteable into cifar_utils/packing.py
    assert entries["MEASURED_TOTAL"] == {"tiny_cnn": {2: round(pk["rows"][1]["img_s"], 1)}}

    cache = parts["compile_cache"]
    assert [r["run"] for r in cache["rows"]] == ["first", "later"] and all(r["img_s"] > 0 for r in cache["rows"])
    assert cache["saved_s"] == pytest.approx(cache["rows"][0]["warmup_s"] - cache["rows"][1]["warmup_s"])

    proj = parts["projection"]
    chapters = {r["chapter"]: r for r in proj["rows"]}
    assert set(chapters) == {"01_architectures", "02_ablations", "03_training_choices", "04_gradcam_best_model",
                             "05_batchnorm", "06_dessilbi"}
    assert all(r["hours"][m] for r in proj["rows"] for m in ("report", "default", "default packed", "best"))
    ch3 = chapters["03_training_choices"]
    assert ch3["runs"] == 11 and ch3["epochs"] == 550
    epoch = 50_000 + 10_000 / 3  # training images + a third of the test images
    expected = 550 * epoch / rows["report"]["img_s"] / 3600  # every model timed as the tiny proxy
    assert ch3["hours"]["report"] == pytest.approx(expected)
    assert ch3["hours"]["default"] == pytest.approx(550 * epoch / rows["default"]["img_s"] / 3600)
    # packed: no faster than every run at the best measured total speed, no slower than one at a time + start-up
    default, one, two = rows["default"]["img_s"], pk["rows"][0]["img_s"], pk["rows"][1]["img_s"]
    fastest = default * max(1.0, two / one)
    packed = ch3["hours"]["default packed"] * 3600
    assert 550 * epoch / fastest <= packed <= 550 * epoch / default + 11 * packing.START_SECONDS + 1e-6
    assert ch3["hours"]["best"] == min(ch3["hours"][f"{m} packed"] for m in ("default", "compile", "graphs"))
    # the total counts each distinct run once: less than the sum over chapters (shared runs)
    assert proj["distinct_runs"] < proj["chapter_uses"]
    assert proj["totals"]["report"] < sum(r["hours"]["report"] for r in proj["rows"])
    assert proj["settling"]["runs"] > 0 and proj["settling"]["hours"]["default packed"] > 0

    acc = parts["accuracy"]
    assert [r["precision"] for r in acc["runs"]] == ["fp32", "auto"]
    assert all(r["status"] == "finished" for r in acc["runs"])
    assert acc["difference"] == 0.0  # on a CPU "auto" is fp32: the same seed gives the same run

    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("# GPU check (DRY RUN")
    for heading in ("## 1. Training throughput", "## 2. Packing", "## 3. Compile cache", "## 4. Projected GPU hours",
                    "## 5. Accuracy", "## 6. BatchNorm metrics overhead"):
        assert heading in md
    assert "| tiny_cnn | report setup (fp32, PIL DataLoader, 2 workers) |" in md
    assert "| tiny_cnn | 2 |" in md and "MEASURED_TOTAL = " in md and "| first |" in md and "| later |" in md
    assert "| 03_training_choices | 11 | 550 |" in md and "| **total** |" in md and "| 06_dessilbi |" in md
    assert "settling seeds" in md
    assert "chapter 5" in md
