"""run_many(backend="ray") with per-run GPU shares: each task asks for its share as num_gpus, and a run out of
CUDA memory beside others is submitted again with a whole GPU, once. A local Ray instance on the CPU that
declares one (fake) GPU, so that fractional shares can be scheduled; the runs themselves train on the CPU."""

from __future__ import annotations

import sys

import pytest

import cifar_utils.engine.testing  # noqa: F401  (registers tiny_cnn / tiny_random; auto-imported by workers)
from cifar_utils.engine import run_many
from cifar_utils.engine.testing import tiny_config


@pytest.fixture(scope="module")
def ray_one_gpu():
    ray = pytest.importorskip("ray")
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only, as the other Ray tests")
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_tasks_get_their_share_and_an_out_of_memory_run_is_retried_alone(tmp_path, ray_one_gpu, capsys,
                                                                            monkeypatch):
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS", "off")
    configs = [tiny_config(epochs=1, seed=s, model_options={"oom_when_shared": True}) for s in (5, 6)]
    plain = tiny_config(epochs=1, seed=7)
    runs = run_many([*configs, plain], jobs=3, runs_dir=tmp_path, backend="ray", gpus_per_run=[0.5, 0.5, 0.25],
                    progress=False)
    assert [r.status for r in runs] == ["finished"] * 3
    assert [r.info["gpu_share"] for r in runs] == [1.0, 1.0, 0.25] and [r.info["sessions"] for r in runs] == [2, 2, 1]
    out = capsys.readouterr().out
    assert out.count("[run_many ray]") == 2 and "queued again to run alone (share 1), once" in out
