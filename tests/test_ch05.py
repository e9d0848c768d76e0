"""Chapter 5 (BatchNorm): its run configs, its profile sections, and the executed smoke notebook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cifar_utils import experiments
from cifar_utils.book.params import notebook_parameters

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "book" / "05_batchnorm.ipynb"


def test_batchnorm_configs_follow_the_report_protocol():
    data = experiments.DataChoice(source="sample", train_size=64)
    cfgs = experiments.batchnorm_configs(data=data)
    assert list(cfgs) == ["vgg_a", "vgg_a_bn"] and list(cfgs["vgg_a"]) == [2e-3, 1e-3, 5e-4, 1e-4]
    c = cfgs["vgg_a_bn"][5e-4]
    assert (c.model, c.optimizer, c.lr, c.batch_size, c.epochs, c.scheduler, c.weight_decay) == \
        ("vgg_a_bn", "adam", 5e-4, 128, 20, "none", 0.0)
    assert (c.source, c.train_size) == ("sample", 64)
    assert len({c.name for by_lr in cfgs.values() for c in by_lr.values()}) == 8
    for by_lr in cfgs.values():
        for cfg in by_lr.values():
            cfg.validate()
    with pytest.raises(ValueError, match="lrs is empty"):
        experiments.batchnorm_configs(lrs=[], data=data)
    with pytest.raises(ValueError, match="learning rates must be > 0"):
        experiments.batchnorm_configs(lrs=[1e-3, 0], data=data)


def test_vgg_a_takes_cifar_sized_input():
    import torch

    from cifar_utils.models import create_model

    for name in ("vgg_a", "vgg_a_bn"):
        model = create_model(name)
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    from cifar_utils.bn_metrics import last_linear

    assert last_linear(create_model("vgg_a_bn")) == "classifier.4.weight"


def test_profiles_size_the_chapter_and_state_the_protocol():
    params = notebook_parameters(NOTEBOOK)
    assert {"epochs", "batch_size", "lrs", "probe_every", "probe_factors", "window", "jobs"} <= set(params)
    full = yaml.safe_load((ROOT / "params" / "full.yaml").read_text())["chapters"]["05_batchnorm"]
    assert (full["epochs"], full["batch_size"], full["lrs"]) == (20, 128, [0.002, 0.001, 0.0005, 0.0001])
    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())["chapters"]["05_batchnorm"]
    assert smoke["source"] == "sample" and smoke["epochs"] == 1
    steps = smoke["train_size"] // smoke["batch_size"]
    assert 20 <= steps <= 50, "a few dozen steps per learning rate"
    assert steps // smoke["probe_every"] >= 2, "the smoke copy shows probes"
    toc = (ROOT / "_toc.yml").read_text()
    assert toc.index("book/05_batchnorm") < toc.index("book/status")


@pytest.mark.slow
def test_smoke_chapter5_executes_with_every_figure(smoke_book):
    from cifar_utils.bn_metrics import STEP_KEY
    from cifar_utils.engine import RunStore

    out, runs_dir, _ = smoke_book
    nb = json.loads((out / "_build" / "src" / "book" / "05_batchnorm.ipynb").read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 5  # Figures 15-17, probes, explorer
    text = json.dumps(nb["cells"])
    assert "Smoke results" in text and "no-BN / BN" in text
    stored = [r for r in RunStore(runs_dir).list() if r.config.model in ("vgg_a", "vgg_a_bn")]
    assert len(stored) == 8 and all(STEP_KEY in r.callback_states for r in stored)
