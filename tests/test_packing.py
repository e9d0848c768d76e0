"""Packing runs on one GPU: the table, the decision, the local scheduler's shares, the out-of-memory retry,
and the CUDA-graphs option's fallback where there is no CUDA."""

from __future__ import annotations

import pytest
import torch

import cifar_utils.engine.testing as testing
from cifar_utils import packing, projection
from cifar_utils.engine import RunConfig, RunManyError, RunStore, run, run_many
from cifar_utils.engine.batch import Queued, is_out_of_memory, per_run_shares, retry_alone, startable
from cifar_utils.packing import Row

GiB = 2**30


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS", "off")


def _rows(model: str, totals: dict[int, float], peak_gib: float = 1.0) -> dict[int, Row]:
    return {k: Row(model, k, v, peak_gib * GiB, speed_measured=True, memory_measured=True) for k, v in totals.items()}


# A given table: "small" gains up to 8 at once, "mid" peaks at 2, "flat" is compute-bound (no gain, no loss),
# "huge" needs most of the GPU's memory.
TABLE = {
    "small": _rows("small", {1: 10_000, 2: 18_000, 4: 28_000, 8: 40_000}),
    "mid": _rows("mid", {1: 5_000, 2: 7_000, 4: 6_000, 8: 5_500}),
    "flat": _rows("flat", {1: 3_000, 2: 3_000, 4: 3_000, 8: 3_000}, peak_gib=20),
    "huge": _rows("huge", {1: 2_000, 2: 3_500, 4: 5_000, 8: 6_000}, peak_gib=60),
}


class _Config:
    """What the decision reads of a RunConfig: model, key, and run_seconds' fields."""

    def __init__(self, model: str, epochs: int, seed: int = 0) -> None:
        self.model, self.epochs, self.seed = model, epochs, seed
        self.dataset, self.train_size, self.test_size, self.val_size = "cifar10", 10_000, 10_000, 0

    def key(self) -> str:
        return f"{self.model}-{self.epochs}-{self.seed}"


def test_best_k_follows_throughput_then_memory():
    gpu = 100 * GiB  # usable: 90 GiB
    assert packing.best_k(TABLE["small"], gpu) == 8
    assert packing.best_k(TABLE["mid"], gpu) == 2  # throughput falls after 2
    # compute-bound: every k is as fast; the largest that fits in memory (4 x 26 GiB > 90 GiB, 2 x 26 fits)
    assert packing.best_k(TABLE["flat"], gpu) == 2
    assert packing.best_k(TABLE["huge"], gpu) == 1  # 2 x 76 GiB do not fit: it runs alone
    assert packing.best_k(TABLE["huge"], 1000 * GiB) == 8


def test_decide_shares_mixes_and_runs_big_models_alone():
    configs = [_Config("small", 10, s) for s in range(6)] + [_Config("mid", 10, s) for s in range(2)] \
        + [_Config("huge", 10)]
    p = packing.decide(configs, TABLE, gpu_bytes=100 * GiB, start_seconds=0)
    by = {r.config.key(): r for r in p.runs}
    assert {by[c.key()].share for c in configs if c.model == "small"} == {1 / 8}
    assert {by[c.key()].share for c in configs if c.model == "mid"} == {1 / 2}
    assert by["huge-10-0"].share == 1 and p.runs[0].config.model == "huge"  # alone, and first
    # a run's speed at its share is its model's per-run speed at k at once
    assert by["small-10-0"].images_per_s == pytest.approx(40_000 / 8)
    work = projection.run_seconds(configs[0], images_per_s=1.0)  # (10k + 10k/3) images per epoch x 10
    assert by["small-10-0"].seconds == pytest.approx(work / 5000)
    # the wall time: the huge run alone, then the mix (6 x 1/8 + 2 x 1/2 > 1: the mids wait for room)
    assert p.wall_seconds >= by["huge-10-0"].seconds + by["mid-10-0"].seconds
    assert p.wall_seconds <= sum(r.seconds for r in p.runs)  # better than one at a time
    assert p.gpu_seconds == pytest.approx(sum(r.share * r.seconds for r in p.runs))
    assert p.shares() == {k: r.share for k, r in by.items()}
    assert any("small" in line and "8 at once" in line for line in p.lines())


def test_a_long_run_gets_a_larger_share_when_that_shortens_the_wall_time():
    alone = [_Config("small", 100)]  # one long run and nothing to fill the GPU beside it
    p = packing.decide(alone, TABLE, gpu_bytes=100 * GiB, start_seconds=0)
    assert p.runs[0].k == 1 and p.wall_seconds == pytest.approx(projection.run_seconds(alone[0], 10_000))
    many = [_Config("small", 10, s) for s in range(16)]  # many equal runs: the best total throughput
    assert {r.k for r in packing.decide(many, TABLE, gpu_bytes=100 * GiB, start_seconds=0).runs} == {8}


def test_decide_names_a_model_the_table_lacks():
    with pytest.raises(ValueError, match="no rows for model"):
        packing.decide([_Config("nope", 1)], TABLE)


def test_startable_fills_free_share_and_never_overtakes_an_alone_run():
    q = [Queued(n, [i], s) for i, (n, s) in enumerate([("a", 0.5), ("b", 0.25), ("c", 0.5), ("d", 0.25)])]
    assert [x.name for x in startable(q, 1.0, 10)] == ["a", "b", "d"]  # c does not fit, d fills the rest
    assert [x.name for x in startable(q, 1.0, 2)] == ["a", "b"]  # at most `slots`
    q = [Queued("alone", [0], 1.0), Queued("small", [1], 0.25)]
    assert startable(q, 0.5, 10) == []  # the alone run waits for an empty GPU; nothing overtakes it
    assert [x.name for x in startable(q, 1.0, 10)] == ["alone"]
    assert [x.name for x in startable([Queued("x", [0]), Queued("y", [1])], 0.0, 2)] == ["x", "y"]  # no shares


def test_simulate_packs_by_share():
    assert packing.simulate([(0.5, 10), (0.5, 10), (0.5, 10)]) == 20
    assert packing.simulate([(1.0, 5), (0.25, 10), (0.25, 10)]) == 15
    assert packing.simulate([(0.25, 10)] * 8, slots=2) == 40
    with pytest.raises(ValueError, match="share must be in"):
        packing.simulate([(1.5, 1)])


def test_per_run_shares_are_checked():
    cs = [testing.tiny_config(seed=s) for s in range(2)]
    assert per_run_shares(cs, None) is None and per_run_shares(cs, 0.5) == [0.5, 0.5]
    assert per_run_shares(cs, [0.25, 1]) == [0.25, 1.0]
    with pytest.raises(ValueError, match="2 configs"):
        per_run_shares(cs, [0.5])
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        per_run_shares(cs, [0.5, 2], most=1.0)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        run_many(cs, jobs=2, gpus_per_run=0, runs_dir="/nonexistent")


def test_out_of_memory_is_recognised_and_retried_alone_once():
    oom = torch.OutOfMemoryError("CUDA out of memory")
    assert is_out_of_memory(oom) and not is_out_of_memory(RuntimeError("other"))
    wrapped = RuntimeError("task failed")
    wrapped.__cause__ = oom
    assert is_out_of_memory(wrapped)
    item = Queued("r", [0], 0.25)
    again = retry_alone(item, oom, shared=True)
    assert again.share == 1.0 and again.retried and again.indices == [0]
    assert retry_alone(again, oom, shared=True) is None  # once
    assert retry_alone(item, oom, shared=False) is None  # it was alone: a retry would fail the same way
    assert retry_alone(item, ValueError("x"), shared=True) is None


def test_run_many_retries_a_run_that_ran_out_of_memory_beside_others(tmp_path, capsys):
    """Two runs share the (CPU) device at 0.5 each; their model raises CUDA out-of-memory while shared: each is
    queued again alone (share 1), trains, and finishes; the progress output says so."""
    configs = [testing.tiny_config(epochs=1, seed=s, model_options={"oom_when_shared": True}) for s in (1, 2)]
    runs = run_many(configs, jobs=2, runs_dir=tmp_path, progress=False, gpus_per_run=0.5)
    assert [r.status for r in runs] == ["finished", "finished"]
    assert all(r.info["gpu_share"] == 1.0 and r.info["sessions"] == 2 for r in runs)  # second session, alone
    out = capsys.readouterr().out
    assert out.count("out of CUDA memory (share 0.5); queued again to run alone (share 1), once") == 2


def test_run_many_with_whole_gpu_shares_trains_and_reports_failures(tmp_path):
    """Shares of 1 run one at a time (so the model never sees a share below 1); a run that fails for another
    reason than memory is not retried and is reported."""
    configs = [testing.tiny_config(epochs=1, seed=s, model_options={"oom_when_shared": True}) for s in (3, 4)]
    bad = [c.replace(model_options={"width": -1}) for c in configs[:1]]  # fails when built, not out of memory
    with pytest.raises(RunManyError) as info:
        run_many(bad + configs[1:], jobs=2, runs_dir=tmp_path, progress=False, gpus_per_run=[1.0, 1.0])
    assert list(info.value.errors) == [0] and info.value.runs[1].status == "finished"


# --- CUDA graphs (torch.compile mode reduce-overhead) -----------------------------------------------------

def test_cuda_graphs_fall_back_to_eager_without_cuda(tmp_path, monkeypatch):
    def no_compile(*args, **kwargs):
        raise AssertionError("torch.compile called for a CUDA-graphs mode on the CPU")

    monkeypatch.setattr(torch, "compile", no_compile)
    config = testing.tiny_config(epochs=1, compile=True, compile_mode="reduce-overhead")
    result = run(config, runs_dir=tmp_path, progress=False)
    assert result.status == "finished"
    assert result.info["step_mode"].startswith("eager: compile mode 'reduce-overhead' captures CUDA graphs")
    plain = run(testing.tiny_config(epochs=1), runs_dir=tmp_path, progress=False)
    assert plain.info["step_mode"] == "eager"


def test_compile_uses_the_shared_inductor_cache(tmp_path, monkeypatch):
    from cifar_utils.engine import runtime

    monkeypatch.setenv(runtime.INDUCTOR_CACHE_ENV, str(tmp_path / "inductor"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    seen = {}
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: seen.update(mode=mode) or model)
    model, note = runtime.step_model(torch.nn.Linear(2, 2), torch.device("cpu"), True, "default")
    assert seen == {"mode": "default"} and str(tmp_path / "inductor") in note
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    monkeypatch.delenv(runtime.INDUCTOR_CACHE_ENV)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("CIFAR_UTILS_CACHE", str(tmp_path / "cache"))
    assert runtime.inductor_cache_dir() == tmp_path / "cache" / "inductor"


def test_run_keys_are_unchanged():
    """The graphs option is the existing fields compile / compile_mode: stored runs keep their names (these
    keys are main's before this change)."""
    assert RunConfig(model="resnet18", epochs=200).key() == "1093bd78"
    assert RunConfig(model="resnet18", epochs=200, compile=True, compile_mode="reduce-overhead").key() == "7962c2aa"


# --- the table and the projection of the plan ----------------------------------------------------------

def test_table_entries_measured_and_estimated():
    sigma = (4 / min(packing.CALIBRATION_SPEEDUPS) - 1) / 3
    assert sigma == pytest.approx(0.1426, abs=1e-3)
    r1, r4, r8 = (packing.row("resnet18", k) for k in (1, 4, 8))
    assert r1.speed_measured and r1.images_per_s == projection.MEASURED["resnet18"]
    assert r4.speed_measured and r4.images_per_s == 32185.6  # run_many, 4 at once, 2026-12-01
    assert not r8.speed_measured and r8.images_per_s == pytest.approx(8 * r1.images_per_s / (1 + 7 * sigma))
    # the compute ceiling: the highest FLOP/s a measured model reached alone (ResNeXt-29 8x64d)
    assert packing.ceiling() == pytest.approx(projection.MEASURED["resnext29_8x64d"]
                                              * projection.train_flops("resnext29_8x64d"))
    wrn = [packing.row("wrn28_10", k).images_per_s for k in packing.KS]
    assert wrn[1] == pytest.approx(packing.ceiling() / projection.train_flops("wrn28_10")) and wrn[1:] == [wrn[1]] * 3
    assert not r1.memory_measured and 1 * GiB < r1.peak_bytes < packing.estimated_peak_bytes("wrn28_10")
    with pytest.raises(ValueError, match="k must be one of 1, 2, 4, 8"):
        packing.row("resnet18", 3)


def test_entries_text_is_what_the_module_holds():
    text = packing.entries_text({"resnet18": {1: {"images_per_s": 10421.3, "peak_bytes": 2e9},
                                              4: {"images_per_s": 32185.6, "peak_bytes": 2.1e9}}})
    namespace: dict = {}
    exec(text, namespace)
    assert namespace["MEASURED_TOTAL"] == {"resnet18": {4: 32185.6}}
    assert namespace["MEASURED_PEAK_BYTES"] == {"resnet18": 2100000000}


def test_the_full_plan_packed_on_one_gpu_and_the_readme_says_so():
    from pathlib import Path

    from cifar_utils import plan

    configs = [r.config for r in plan.for_profile("full").runs]
    p = packing.decide(configs)
    serial = packing.one_at_a_time(configs)
    assert p.gpu_seconds <= p.wall_seconds < 0.4 * serial
    assert {r.k for r in p.runs if r.config.model == "resnet18"} == {8}
    assert {r.k for r in p.runs if r.config.model == "resnext29_8x64d"} == {2}  # memory: 37 GiB a run
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{p.wall_seconds / 3600:.2f} GPU-hours" in readme and f"{serial / 3600:.2f}" in readme


def test_gpu_smoke_profile_fits_the_notebooks_and_five_minutes():
    from pathlib import Path

    from cifar_utils import plan
    from cifar_utils.book.params import load_profile, validate_profile
    from cifar_utils.chapters import CHAPTERS

    root = Path(__file__).resolve().parents[1]
    profile = load_profile(root / "params" / "gpu-smoke.yaml")
    notebooks = {p.stem: p for p in (root / "book").glob("*.ipynb") if p.stem != "status"}
    validate_profile(profile, notebooks, required=[*CHAPTERS, "claims"])
    p = plan.for_profile("gpu-smoke", root)
    assert list(p.chapters) == list(CHAPTERS)
    configs = [r.config for r in p.runs]
    assert {c.device for c in configs} == {"cuda"} and {c.epochs for c in configs} == {1}
    assert {c.train_size for c in configs} == {None} and {c.test_size for c in configs} == {None}  # full splits
    assert {c.dataset for c in configs} == {"cifar10", "mnist"} and {c.precision for c in configs} == {"auto"}
    assert {c.batch_size for c in configs} == {128}
    assert packing.decide(configs).wall_seconds <= 300


# --- train: --jobs auto, the dry run, the refusal without CUDA, packed training -----------------------------

def test_jobs_auto_packs_on_cuda_or_ray_and_runs_one_at_a_time_on_a_cpu():
    from cifar_utils.train import AUTO_MAX_JOBS, resolve_jobs

    assert resolve_jobs("auto", "local", cuda=True, runs=37, gpus_per_run=None) == (AUTO_MAX_JOBS, True)
    assert resolve_jobs("auto", "local", cuda=False, runs=37, gpus_per_run=None) == (1, False)
    assert resolve_jobs("auto", "ray", cuda=False, runs=37, gpus_per_run=None) == (37, True)
    assert resolve_jobs("auto", "ray", cuda=False, runs=37, gpus_per_run=0.25) == (37, False)  # given: kept
    assert resolve_jobs("3", "local", cuda=True, runs=37, gpus_per_run=None) == (3, False)


def test_train_dry_run_prints_the_packing_and_refuses_cuda_runs_without_cuda(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    import cifar_utils.train as train

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert train.main(["--profile", "full", "--dry-run", "--runs-dir", str(tmp_path), "--chapters", "05"]) == 0
    out = capsys.readouterr().out
    assert "packed on one GPU (what --jobs auto does on a CUDA machine" in out
    assert "vgg_a_bn" in out and "at once (share" in out and "(estimated)" in out
    monkeypatch.setattr(train, "cuda_available", lambda: False)
    assert train.main(["--profile", "gpu-smoke", "--runs-dir", str(tmp_path), "--chapters", "05"]) == 2
    err = capsys.readouterr().err
    assert "the runs ask for device 'cuda' and this machine has no CUDA GPU" in err
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


def test_train_runs_packed_trains_every_run_with_its_share(tmp_path):
    from cifar_utils import plan
    from cifar_utils.train import train_runs

    configs = [testing.tiny_config(epochs=1, seed=s) for s in (11, 12, 13)]
    runs = [plan.PlannedRun(c, uses=[f"test: {c.seed}"], chapters=["test"]) for c in configs]
    lines: list[str] = []
    summary = train_runs(runs, runs_dir=tmp_path, jobs=3, every=0, say=lines.append, pack=True)
    assert sorted(summary.trained) == sorted(c.name for c in configs) and summary.exit_code == 0
    assert "packed, at most 3 at once" in lines[0] and "tiny_cnn" in lines[0]
    stored = {r.name: r for r in RunStore(tmp_path).list()}
    assert [stored[c.name].info["gpu_share"] for c in configs] == [packing.decide(configs).shares()[c.key()]
                                                                   for c in configs]
