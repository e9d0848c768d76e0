"""The plan (every chapter's runs, defined once), the projection, and ``python -m cifar_utils.train``."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import cifar_utils.engine.testing as testing
from cifar_utils import plan, projection
from cifar_utils.book.params import chapter_parameters, notebook_parameters, parameters_cell
from cifar_utils.engine import RunConfig, RunStore
from cifar_utils.train import Summary, main as train_main, pending, train_runs

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cifar_utils"


# --- one definition -----------------------------------------------------------------------------------

@pytest.mark.parametrize("chapter", plan.CHAPTERS)
def test_every_parameter_the_plan_reads_is_declared_by_its_notebook(chapter):
    declared = notebook_parameters(ROOT / "book" / f"{chapter}.ipynb")
    assert set(plan.parameter_names(chapter)) <= set(declared), set(plan.parameter_names(chapter)) - set(declared)


def _notebook_chapter(chapter: str, profile: str) -> plan.ChapterRuns:
    """What the notebook itself asks the plan for: its parameters cell, the profile's values injected as
    papermill does, then its first code cell after the parameters (imports, ``chapter = plan.chapter(...)``)."""
    nb = json.loads((ROOT / "book" / f"{chapter}.ipynb").read_text())
    cell = parameters_cell(nb)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    setup = code[code.index(cell) + 1]
    namespace: dict = {}
    exec("".join(cell["source"]), namespace)
    injected = yaml.safe_load((ROOT / "params" / f"{profile}.yaml").read_text())["chapters"][chapter] or {}
    namespace.update(injected, profile=profile)
    exec("".join(setup["source"]), namespace)
    return namespace["chapter"]


@pytest.mark.parametrize("profile", ["smoke", "full"])
@pytest.mark.parametrize("chapter", plan.CHAPTERS)
def test_the_plans_runs_are_what_each_notebook_trains(chapter, profile):
    mine = plan.for_profile(profile, ROOT).chapters[chapter]
    theirs = _notebook_chapter(chapter, profile)
    assert [c.key() for c in theirs.configs()] == [c.key() for c in mine.configs()]
    assert theirs.records() == mine.records()


def test_the_full_plan_shares_runs_between_chapters_and_keeps_settling_seeds_apart():
    p = plan.for_profile("full", ROOT)
    counts = {name: len(ch.configs()) for name, ch in p.chapters.items()}
    assert counts == {"01_architectures": 7, "02_ablations": 8, "03_training_choices": 11,
                      "04_gradcam_best_model": 3, "05_batchnorm": 8, "06_dessilbi": 12}
    assert len(p.runs) == sum(counts.values()) - 4  # ch2's ResNet-18, ch4's two, ch6's Adam are shared
    by_key = {r.config.key(): r for r in p.runs}
    ch1, ch4 = p.chapters["01_architectures"], p.chapters["04_gradcam_best_model"]
    for role in ("resnet18", "wrn28_10"):
        shared = by_key[ch4.arm((), role).configs[0].key()]
        assert shared.config == ch1.arm((), role).configs[0]
        assert set(shared.chapters) >= {"01_architectures", "04_gradcam_best_model"}
    adam = p.chapters["06_dessilbi"].arm(("resnet",), "Adam").configs[0]
    assert adam == p.chapters["03_training_choices"].arm(("optimizer",), "Adam").configs[0]
    assert set(by_key[adam.key()].chapters) == {"03_training_choices", "06_dessilbi"}
    # settling seeds: not book runs, each a book run but for its seed
    assert p.settling and not {r.config.key() for r in p.settling} & set(by_key)
    assert all(r.settling and r.config.seed in (1, 2) and r.config.replace(seed=0).key() in by_key for r in p.settling)
    assert not [r for r in p.settling if "05_batchnorm" in r.chapters]  # its claim uses the learning rates


def test_records_follow_the_runs_that_need_them():
    from cifar_utils.bn_metrics import MetricsFactory
    from cifar_utils.sparsity import SLBIPathRecords

    p = plan.for_profile("full", ROOT)
    for r in p.runs:
        if "05_batchnorm" in r.chapters:
            assert r.records == MetricsFactory(probe_every=50, probe_factors=(0.25, 0.5, 1.0, 2.0, 4.0))
        elif r.config.optimizer in ("slbi", "slbi_adam"):
            assert r.records == SLBIPathRecords()
        else:
            assert r.records is None, r.uses


def test_chapter_names_the_missing_parameters_and_the_unknown_chapter():
    with pytest.raises(ValueError, match="needs the parameter.*models"):
        plan.chapter("01_architectures", {"epochs": 1})
    with pytest.raises(ValueError, match="unknown chapter 'nope'; chapters that train: 01_architectures"):
        plan.chapter("nope", {})
    with pytest.raises(SystemExit, match="unknown chapter '9'"):
        plan.expand_chapters("01,9")
    assert plan.expand_chapters("01,03_training_choices") == ["01_architectures", "03_training_choices"]


def test_trained_tree_follows_the_arms_paths():
    arms = [plan.Arm("x", (), "a", (RunConfig(seed=0), RunConfig(seed=1))),
            plan.Arm("x", ("g",), 0.5, (RunConfig(lr=0.5),))]
    runs = {c.key(): f"run {c.seed} {c.lr}" for arm in arms for c in arm.configs}
    trained = plan.Trained(arms, runs)
    assert trained.tree() == {"a": ["run 0 0.1", "run 1 0.1"], "g": {0.5: ["run 0 0.5"]}}
    assert trained.tree(first=True) == {"a": "run 0 0.1", "g": {0.5: "run 0 0.5"}}


def test_plan_command_prints_every_chapter_a_total_and_the_settling_seeds_apart(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cifar_utils.plan", "--profile", "full", "--runs-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "n/a" not in text
    for chapter in plan.CHAPTERS:
        assert f"  {chapter} " in text
    lines = text.splitlines()
    total = [line for line in lines if line.startswith("total ")]
    assert len(total) == 1 and "GPU-hours" in total[0]
    import re

    distinct, uses = (int(x) for x in re.match(r"total (\d+) distinct runs \((\d+) chapter uses\)", total[0]).groups())
    assert distinct < uses
    settle = [line for line in lines if line.startswith("settling total ")]
    assert len(settle) == 1 and lines.index(settle[0]) > lines.index(total[0])
    one_at_a_time = float(re.search(r", ([\d.]+) GPU-hours", total[0]).group(1))
    packed = [line for line in lines if line.startswith("packed: ")]  # next to the one-at-a-time total
    assert len(packed) == 1 and lines.index(packed[0]) == lines.index(total[0]) + 1
    assert 0 < float(re.match(r"packed: ([\d.]+) GPU-hours", packed[0]).group(1)) < one_at_a_time
    assert "packed" in settle[0] and "Packed: cifar_utils.packing" in text
    assert "missing" in text and "estimated from training FLOPs" in text and "lenet" in text


# --- the projection -------------------------------------------------------------------------------------

def test_projection_uses_the_measured_table_and_estimates_the_rest():
    s = projection.speed("resnet18")
    assert s.measured and s.images_per_s == projection.MEASURED["resnet18"]
    lenet = projection.speed("lenet")
    assert not lenet.measured and "estimated" in lenet.how and lenet.images_per_s > 0
    assert lenet.images_per_s <= max(projection.MEASURED.values())
    config = RunConfig(model="resnet18", epochs=200)
    assert projection.run_seconds(config) == pytest.approx(200 * (50_000 + 10_000 / 3) / 10421.0)
    small = RunConfig(model="resnet18", epochs=2, train_size=1000, test_size=300, val_size=100)
    assert projection.images_per_epoch(small) == (900, 400)
    mnist = RunConfig(model="lenet", dataset="mnist", epochs=1)
    assert projection.images_per_epoch(mnist) == (60_000, 10_000)
    with pytest.raises(ValueError, match="no speed for model 'nope'"):
        projection.speed("nope")


# --- no import circles ------------------------------------------------------------------------------------

def _imports() -> dict[str, set[str]]:
    """cifar_utils module -> the cifar_utils modules it imports anywhere (module level or in a function)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    edges: dict[str, set[str]] = {m: set() for m in modules}

    def resolve(name: str) -> str:
        while name not in modules:
            name = name.rsplit(".", 1)[0]
        return name

    for module, (path, is_package) in modules.items():
        base = module.split(".") if is_package else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges[module] |= {resolve(a.name) for a in node.names if a.name.startswith("cifar_utils")}
            elif isinstance(node, ast.ImportFrom):
                target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                if target.startswith("cifar_utils"):
                    edges[module] |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else resolve(target)
                                      for a in node.names}
        edges[module].discard(module)
    return edges


def test_no_import_circle_in_the_package():
    edges = _imports()
    assert edges["cifar_utils.plan"] >= {"cifar_utils.experiments", "cifar_utils.chapters"}  # the walk sees imports
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_claims_are_split_into_short_modules():
    for name in ("rules", "declared", "verdicts", "render"):
        lines = (PACKAGE / "claims" / f"{name}.py").read_text().count("\n")
        assert lines < 350, f"claims/{name}.py has {lines} lines"
    assert not (PACKAGE / "claims.py").exists()


# --- train ------------------------------------------------------------------------------------------------

def _planned(*configs: RunConfig) -> list[plan.PlannedRun]:
    return [plan.PlannedRun(c, uses=[f"test: {c.seed}"], chapters=["test"]) for c in configs]


def test_train_runs_longest_first_and_reports_a_failure_without_stopping_the_others(tmp_path):
    good = [testing.tiny_config(epochs=e, seed=s) for e, s in ((1, 1), (3, 2))]
    broken = testing.tiny_config(epochs=2, seed=3, model_options={"width": -1})  # fails when the model is built
    runs = _planned(good[0], broken, good[1])
    todo, done = pending(runs, RunStore(tmp_path))
    assert [r.config.epochs for r in todo] == [3, 2, 1] and not done
    lines: list[str] = []
    summary = train_runs(runs, runs_dir=tmp_path, every=0, say=lines.append)
    assert sorted(summary.trained) == sorted(c.name for c in good)
    assert list(summary.failed) == [broken.name] and "negative dimension" in summary.failed[broken.name]
    assert summary.exit_code == 1 and "failed 1" in summary.text() and f"FAILED {broken.name}" in summary.text()
    again = train_runs(runs[:1], runs_dir=tmp_path, every=0, say=lines.append)  # nothing left to train
    assert again.loaded == [good[0].name] and not again.trained and again.exit_code == 0


def test_train_monitor_reports_active_runs_and_an_eta(tmp_path):
    from cifar_utils.train import Monitor

    runs = _planned(testing.tiny_config(epochs=4, seed=5))
    store = RunStore(tmp_path)
    path = store.path_for(runs[0].config)
    path.mkdir(parents=True)
    (path / "status.json").write_text(json.dumps({"status": "running", "epochs_done": 1, "wall_seconds": 2.0}))
    text = Monitor(runs, store, jobs=1, every=0, say=print).report()
    assert "0/1 done, 1 training, 0 waiting, 0 failed" in text and "epoch    1/4" in text
    assert "2.0 s/epoch" in text and "ETA 0m 06s" in text  # 3 epochs left at 2 s


def test_train_dry_run_trains_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert train_main(["--profile", "smoke", "--dry-run", "--runs-dir", str(tmp_path / "runs"), "--chapters", "03"]) == 0
    out = capsys.readouterr().out
    assert "11 runs to train, 0 already done; nothing is trained" in out and "projected:" in out
    assert not (tmp_path / "runs").exists()


def test_train_refuses_a_bad_profile_or_claim_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert train_main(["--profile", "nope", "--dry-run", "--runs-dir", str(tmp_path)]) == 2
    assert "no profile 'nope'" in capsys.readouterr().err
    assert train_main(["--profile", "smoke", "--dry-run", "--settle", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown claim 'nope'; claims: wrn_best" in capsys.readouterr().err


def test_summary_text_and_exit_codes():
    assert Summary().exit_code == 0
    assert Summary(interrupted=True).exit_code == 130 and "run the same command again" in Summary(interrupted=True).text()


def test_an_interrupted_train_resumes_where_it_stopped(tmp_path):
    """Ctrl-C (SIGINT) in the middle of a run: the run is marked interrupted, the command exits 130; the
    same command again resumes it from its checkpoint and finishes the plan."""
    root = tmp_path / "root"
    (root / "params").mkdir(parents=True)
    (root / "book").symlink_to(ROOT / "book")
    ch6 = {"source": "sample", "train_size": 256, "test_size": 128, "batch_size": 128, "epochs": 40, "lr_step": 20,
           "resnet": False, "seeds": [0], "device": "cpu", "precision": "fp32"}
    (root / "params" / "itest.yaml").write_text(yaml.safe_dump({"chapters": {"06_dessilbi": ch6}}))
    env = dict(os.environ, CIFAR_UTILS_RUNS=str(tmp_path / "runs"), CIFAR_UTILS_PROGRESS="off",
               PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "cifar_utils.train", "--profile", "itest", "--every", "0"]
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = RunStore(tmp_path / "runs")
    try:
        deadline = time.monotonic() + 300  # a hang guard, not a speed claim
        while time.monotonic() < deadline and proc.poll() is None:
            statuses = [json.loads(p.read_text()) for p in store.root.glob("*/status.json")] if store.root.is_dir() else []
            if any(s.get("status") == "running" and (s.get("epochs_done") or 0) >= 2 for s in statuses):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the training ended before it could be interrupted: " + (proc.stdout.read() or "")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "INTERRUPTED: run the same command again to resume" in out and "Traceback" not in out
    stopped = [r for r in store.list() if r.status == "interrupted"]
    assert len(stopped) == 1 and len(stopped[0].history) >= 2
    again = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    runs = {r.name: r for r in store.list()}
    assert len(runs) == 2 and all(r.status == "finished" and len(r.history) == 40 for r in runs.values())
    resumed = runs[stopped[0].name]
    assert resumed.info["sessions"] == 2 and resumed.info["resumed_from"] >= 2


@pytest.mark.slow
def test_after_train_the_smoke_book_trains_nothing(smoke_book):
    """The smoke_book fixture runs ``train --profile smoke`` first: the store then holds exactly the plan's
    runs, and building the whole book creates or modifies none of them."""
    _, runs_dir, result = smoke_book
    assert [c.chapter for c in result.failed] == []
    planned = plan.for_profile("smoke", ROOT).runs
    layers = plan.store_for("smoke", runs_dir, ROOT)  # the profile's bundle of published runs, if it reads one
    published = {r.name for r in planned if layers.get_published(r.config) is not None}
    assert set(result.store_before) == {r.name for r in planned} - published
    assert result.store_after == result.store_before
    assert result.bundle_before == result.bundle_after  # the bundle is read, never written
