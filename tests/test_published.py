"""Published results (issue #24): ``python -m cifar_utils.publish`` exports a store's finished runs of the plan into
a bundle; a store reads the bundle read-only beneath its own runs; chapters say where their numbers come from.

The module's fixture trains chapter 6's LeNet (SLBI and SGD, two seeds) for two epochs on 256 images of a local
MNIST copy (the embedded sample, copied) in a small book root of its own (a copy of the package's sources and of
chapter 6's notebook, so that the code-change test can edit them), then publishes them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from cifar_utils import plan, published, replicates, sparsity
from cifar_utils.book.params import ProfileError, load_profile, published_folders, validate_profile
from cifar_utils.book.runner import kernel_environment, toc_notebooks
from cifar_utils.engine import RunStore, run, run_many
from cifar_utils.engine import bundle as bd
from cifar_utils.engine.store import StoreWarning
from cifar_utils.publish import MAX_BYTES, PublishError, bundle_size, publish
from cifar_utils.publish import main as publish_main
from cifar_utils.train import train_runs

ROOT = Path(__file__).resolve().parents[1]
CH6 = "06_dessilbi"
SAMPLE = ROOT / "cifar_utils" / "data" / "sample" / "mnist.npz"


def _profile(data: Path) -> str:
    return f"""description: chapter 6's LeNet, tiny, for the publication tests
chapters:
  {CH6}:
    source: local
    data_root: {data}
    train_size: 256
    test_size: 128
    batch_size: 64
    epochs: 2
    lr_step: 1
    mu: 5.0
    lam: 0.02
    seeds: [0, 1]
    resnet: false
"""


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {rel: hashlib.sha256((folder / rel).read_bytes()).hexdigest() for rel in bd.folder_files(folder)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(book root, local store, bundle, chapter runs): four tiny LeNet runs trained and published."""
    root = tmp_path_factory.mktemp("book")
    shutil.copytree(ROOT / "cifar_utils", root / "cifar_utils", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "book").mkdir()
    shutil.copy2(ROOT / "book" / f"{CH6}.ipynb", root / "book")
    (root / "params").mkdir()
    data = root / "mnist.npz"
    shutil.copy2(SAMPLE, data)
    (root / "params" / "tiny.yaml").write_text(_profile(data))
    store = RunStore(root / "runs", published=())
    the_plan = plan.for_profile("tiny", root)
    summary = train_runs(the_plan.runs, runs_dir=store, every=0, say=lambda line: None)
    assert not summary.failed and len(summary.trained) == 4
    report = publish("tiny", [CH6], runs_dir=store.root, root=root)
    assert [e.reason for e in report.exports] == [None] * 4
    return root, store, report.bundle, the_plan.chapters[CH6]


def _fresh_bundle(tiny, tmp_path) -> Path:
    """A copy of the fixture's bundle that a test may damage."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny[2], copy)
    return copy


# --- export, then import ----------------------------------------------------------------------------------

def test_a_published_run_equals_the_run_exported(tiny, tmp_path):
    root, store, bundle, chapter = tiny
    layered = RunStore(tmp_path / "empty", published=[bundle])
    for config in chapter.configs():
        local, pub = store.get(config), layered.get(config)
        assert pub is not None and pub.published is not None and pub.path.parent == bundle
        assert local.published is None
        assert pub.config == local.config and pub.history == local.history and pub.status == local.status == "finished"
        assert pub.info == local.info  # status.json as trained (LeNet's weights are published: model_bytes kept)
        for name, value in local.model.state_dict().items():
            assert torch.equal(pub.model.state_dict()[name], value), name
        if config.optimizer == "slbi":
            a, b = sparsity.SLBIPath.from_run(local), sparsity.SLBIPath.from_run(pub)
            assert a.path == b.path
            for layer, first in a.first_epoch.items():
                assert torch.equal(first, b.first_epoch[layer]) and torch.equal(a.support[layer], b.support[layer])
            for layer in sparsity.coupled_layers(local):
                percents = list(sparsity.PUBLISHED_PERCENTS)
                assert sparsity.pruning_data(pub, layer, percents) == sparsity.pruning_data(local, layer, percents)
        else:
            assert pub.callback_states is None and not (pub.path / "derived").exists()
    assert not (tmp_path / "empty").exists()  # reading wrote nothing


def test_provenance_of_a_published_run(tiny):
    _, store, bundle, chapter = tiny
    config = chapter.arm(("lenet",), "SLBI").configs[0]
    meta = json.loads((bundle / config.name / bd.PUBLISHED_FILE).read_text())
    info = store.get(config).info
    assert meta["profile"] == "tiny" and meta["chapters"] == [CH6] and meta["uses"] == [f"{CH6}: lenet / SLBI"]
    assert {k: meta["training"][k] for k in ("device_name", "torch_version", "precision", "wall_seconds",
                                             "finished")} == {k: info[k] for k in ("device_name", "torch_version",
                                                                                   "precision", "wall_seconds",
                                                                                   "finished")}
    assert meta["data"]["source"].endswith("mnist.npz") and meta["data"]["train_images"] == 256
    assert meta["data"]["test_images"] == 128 and meta["data"]["recorded"] == "at training"
    assert {"commit", "dirty", "published"} <= set(meta)  # None here: the test's book root is not a git repository
    assert meta["weights"] == {"included": True, "parameters": 61706} and meta["records"] == ["slbi_path"]
    assert meta["derived"] == [f"pruning-{layer}" for layer in ("conv1", "conv2", "conv3", "fc1", "fc2")]
    assert "cifar_utils/engine/loop.py" in meta["code"]["files"] and f"book/{CH6}.ipynb" in meta["code"]["files"]
    for rel, entry in meta["files"].items():
        assert entry == {"bytes": (bundle / config.name / rel).stat().st_size,
                         "sha256": bd.file_digest(bundle / config.name / rel)}
    top = json.loads((bundle / bd.MANIFEST_FILE).read_text())
    assert set(top["runs"]) == {c.name for c in chapter.configs()}
    assert top["bytes"] == pytest.approx(bundle_size(bundle), abs=64) and top["bytes"] < MAX_BYTES


def test_publishing_again_changes_nothing_and_a_changed_run_needs_replace(tiny, tmp_path):
    root, store, bundle, chapter = tiny
    copy = _fresh_bundle(tiny, tmp_path)
    before = snapshot(copy)
    report = publish("tiny", [CH6], runs_dir=store.root, root=root, out=copy)
    assert all(e.unchanged for e in report.exports) and snapshot(copy) == before
    # the store's run is trained again (other weights): publishing it needs --replace
    other = tmp_path / "other"
    shutil.copytree(store.root, other)
    config = chapter.arm(("lenet",), "SGD").configs[0]
    (other / config.name / "history.json").write_text(json.dumps([]))  # no longer matches: damaged, not exported
    report = publish("tiny", [CH6], runs_dir=other, root=root, out=copy)
    assert [e.reason for e in report.exports if e.name == config.name][0].startswith("damaged")
    assert snapshot(copy) == before
    shutil.rmtree(other / config.name)
    run(config, runs_dir=RunStore(other, published=()), progress=False)  # a second training: other status.json
    with pytest.raises(PublishError, match="--replace"):
        publish("tiny", [CH6], runs_dir=other, root=root, out=copy)
    assert snapshot(copy) == before
    publish("tiny", [CH6], runs_dir=other, root=root, out=copy, replace=True)
    after = snapshot(copy)
    assert after[f"{config.name}/status.json"] != before[f"{config.name}/status.json"]
    assert {k: v for k, v in after.items() if not k.startswith((config.name, "MANIFEST"))} == \
        {k: v for k, v in before.items() if not k.startswith((config.name, "MANIFEST"))}
    again = RunStore(tmp_path / "x", published=[copy]).get(config)
    assert again.info == RunStore(other).get(config).info


def test_unpublished_runs_are_listed_with_their_reason(tiny, tmp_path):
    root, store, _, chapter = tiny
    partial = tmp_path / "store"
    shutil.copytree(store.root, partial)
    sgd = chapter.arm(("lenet",), "SGD").configs
    shutil.rmtree(partial / sgd[0].name)
    status = json.loads((partial / sgd[1].name / "status.json").read_text())
    status.update(status="interrupted", epochs_done=1)
    (partial / sgd[1].name / "status.json").write_text(json.dumps(status))
    report = publish("tiny", [CH6], runs_dir=partial, root=root, out=tmp_path / "bundle", dry_run=True)
    reasons = {e.name: e.reason for e in report.exports}
    assert reasons[sgd[0].name].startswith("missing") and reasons[sgd[1].name].startswith("unfinished (interrupted")
    assert [reasons[c.name] for c in chapter.arm(("lenet",), "SLBI").configs] == [None, None]
    assert "NOT published" in report.text() and "would be published" in report.text()
    assert not (tmp_path / "bundle").exists()  # a dry run writes nothing


def test_publish_refuses_to_exceed_the_size_cap(tiny, tmp_path):
    root, store, _, _ = tiny
    out = tmp_path / "bundle"
    with pytest.raises(PublishError, match=r"would hold 1\.\d+ MB, more than the cap of 0\.5 MB"):
        publish("tiny", [CH6], runs_dir=store.root, root=root, out=out, max_bytes=500_000)
    assert not out.exists() and not list(tmp_path.glob(".publish-*"))


def test_the_command_line_prints_what_it_published(tiny, tmp_path, capsys, monkeypatch):
    root, store, _, _ = tiny
    monkeypatch.chdir(root)
    out = tmp_path / "bundle"
    assert publish_main(["--profile", "tiny", "--chapters", "06", "--runs-dir", str(store.root), "--out", str(out),
                         "--max-mb", "0.5"]) == 1
    assert "more than the cap of 0.5 MB" in capsys.readouterr().err and not out.exists()
    assert publish_main(["--profile", "tiny", "--chapters", "06", "--runs-dir", str(store.root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("  published ") == 4 and "4 of 4 planned runs published" in text and "MB of at most 20.0 MB" in text
    assert publish_main(["--profile", "tiny", "--chapters", "07"]) == 2
    assert "unknown chapter '07'" in capsys.readouterr().err


# --- the bundle is read-only; damage is reported by path and the run is not used ---------------------------

def test_an_edited_history_is_reported_and_the_run_trains_locally_leaving_the_bundle_as_it_is(tiny, tmp_path):
    _, _, _, chapter = tiny
    copy = _fresh_bundle(tiny, tmp_path)
    config = chapter.arm(("lenet",), "SGD").configs[0]
    history = copy / config.name / "history.json"
    history.write_text(history.read_text().replace('"epoch": 2', '"epoch": 3', 1))
    before = snapshot(copy)
    store = RunStore(tmp_path / "local", published=[copy])
    with pytest.warns(StoreWarning, match=f"{history}: .*edited"):
        assert store.get(config) is None
    with pytest.warns(StoreWarning, match="is not used"):
        names = {r.name for r in store.list()}
    assert config.name not in names and len(names) == 3  # the other published runs are listed
    with pytest.warns(StoreWarning, match=str(history)):
        trained = run(config, runs_dir=store, progress=False)
    assert trained.path == tmp_path / "local" / config.name and trained.published is None
    assert snapshot(copy) == before  # never overwritten
    assert store.get(config).path == trained.path  # the local run wins from now on


@pytest.mark.parametrize("damage", ["published.json", "extra file", "missing derived", "manifest"])
def test_any_change_to_a_published_run_is_reported_by_path(tiny, tmp_path, damage):
    _, _, _, chapter = tiny
    copy = _fresh_bundle(tiny, tmp_path)
    config = chapter.arm(("lenet",), "SLBI").configs[1]
    folder = copy / config.name
    if damage == "published.json":
        meta = json.loads((folder / bd.PUBLISHED_FILE).read_text())
        meta["training"]["device_name"] = "an edited device"
        (folder / bd.PUBLISHED_FILE).write_text(json.dumps(meta))
        where = folder / bd.PUBLISHED_FILE
    elif damage == "extra file":
        where = folder / "checkpoint.pt"
        where.write_bytes(b"not published")
    elif damage == "missing derived":
        where = folder / "derived" / "pruning-conv3.json"
        where.unlink()
    else:
        top = json.loads((copy / bd.MANIFEST_FILE).read_text())
        del top["runs"][config.name]
        (copy / bd.MANIFEST_FILE).write_text(json.dumps(top))
        where = folder
    with pytest.warns(StoreWarning, match=f"{where}"):
        assert RunStore(tmp_path / "local", published=[copy]).get(config) is None
    assert not (tmp_path / "local").exists()


def test_run_on_a_published_config_loads_it_and_writes_nothing(tiny, tmp_path):
    _, _, bundle, chapter = tiny
    before = snapshot(bundle)
    store = RunStore(tmp_path / "local", published=[bundle])
    configs = chapter.configs()
    loaded = run(configs[0], runs_dir=store, progress=False, callbacks=[sparsity.SLBIPath()])
    assert loaded.published is not None
    slbi = chapter.arm(("lenet",), "SLBI").configs
    runs = run_many(slbi, runs_dir=store, progress=False, callbacks=sparsity.SLBIPathRecords())
    assert all(r.published is not None for r in runs)  # the SLBI runs hold their records
    trained = chapter.train(runs_dir=store, progress=False)  # the plan's way: records by run
    assert all(r.published is not None for arm in chapter.arms for r in trained.runs(arm))
    assert not (tmp_path / "local").exists() and snapshot(bundle) == before


class NeverRecorded:
    """A callbacks factory whose records no stored run holds."""

    def __call__(self, config):
        return []

    def has_records(self, run):
        return False


def test_a_published_run_without_the_records_asked_for_is_ignored_not_moved(tiny, tmp_path):
    _, _, bundle, chapter = tiny
    before = snapshot(bundle)
    config = chapter.arm(("lenet",), "SGD").configs[0]
    store = RunStore(tmp_path / "local", published=[bundle])
    with pytest.warns(StoreWarning, match="lacks the records"):
        [trained] = run_many([config], runs_dir=store, progress=False, callbacks=NeverRecorded())
    assert trained.published is None and trained.path.parent == tmp_path / "local"
    assert snapshot(bundle) == before


def test_the_environment_variable_switches_the_layer_on(tiny, tmp_path, monkeypatch):
    _, _, bundle, chapter = tiny
    config = chapter.configs()[0]
    monkeypatch.setenv(bd.ENV_VAR, f"{tmp_path / 'nothing'}:{bundle}")
    assert RunStore(tmp_path / "local").get(config).published is not None
    assert RunStore(tmp_path / "local", published=()).get(config) is None
    monkeypatch.setenv(bd.ENV_VAR, "")
    assert RunStore(tmp_path / "local").get(config) is None


# --- derived results: a published run needs no data -------------------------------------------------------

def _no_data(monkeypatch):
    import cifar_utils.engine.datasets as datasets

    def refuse(config):
        raise FileNotFoundError(f"no {config.dataset} data on this machine (test)")
    monkeypatch.setattr(datasets, "load_for_config", refuse)


def test_a_published_chapter_needs_no_data(tiny, tmp_path, monkeypatch):
    from cifar_utils.claims.rules import pruning_safe

    _, store, bundle, chapter = tiny
    layered = RunStore(tmp_path / "local", published=[bundle])
    slbi = [layered.get(c) for c in chapter.arm(("lenet",), "SLBI").configs]
    expected = [sparsity.pruning_results(store.get(c), "conv3", [0, 20, 60, 80]) for c in chapter.arm(
        ("lenet",), "SLBI").configs]
    _no_data(monkeypatch)
    loader = sparsity.test_loader(slbi[0].config, lazy=True)
    tables = {r.config.seed: sparsity.pruning_results(r, "conv3", [0, 20, 60, 80], loader) for r in slbi}
    for got, want in zip(tables.values(), expected):
        assert got.equals(want)
    table3 = replicates.pruning_over_seeds(tables, {0: 98.65, 20: 98.65, 60: 98.60, 80: 98.30})
    assert list(table3["seeds"]) == [2] * 4
    assert table3.loc[60, "mean"] == pytest.approx((want_60 := [t.loc[60, "test_acc"] for t in expected])[0] / 2
                                                   + want_60[1] / 2)
    assert sparsity.pruning_accuracy(slbi[0], "conv1", 50, loader) == sparsity.pruning_data(slbi[0], "conv1", [50])[
        "test_acc"][0]
    outcome = pruning_safe("conv3", 60)({"SLBI": slbi}, lambda metric: None)
    drops = [t.loc[0, "test_acc"] - t.loc[60, "test_acc"] for t in expected]
    assert outcome.effect == pytest.approx(sum(drops) / 2)
    assert not loader.loaded  # nothing asked for the data
    with pytest.raises(bd.PublishedDataMissing, match=r"pruning-conv3\.json does not hold what is asked.*no mnist data"):
        sparsity.pruning_results(slbi[0], "conv3", [33])  # a percentage not published, and no data to measure it


def test_a_missing_derived_table_is_computed_when_the_data_is_here(tiny, tmp_path, monkeypatch):
    _, store, _, chapter = tiny
    config = chapter.arm(("lenet",), "SLBI").configs[0]
    run_ = store.get(config)
    run_.published = {"files": {}}  # as if published without its derived tables
    assert sparsity.pruning_data(run_, "conv3", [0, 60]) == sparsity.pruning_data(store.get(config), "conv3", [0, 60])
    _no_data(monkeypatch)
    with pytest.raises(bd.PublishedDataMissing, match=r"derived/pruning-conv3\.json is missing.*no mnist data"):
        sparsity.pruning_data(run_, "conv3", [0, 60])


# --- the line under each chapter's title -------------------------------------------------------------------

def test_the_chapter_line_says_where_the_numbers_come_from(tiny, tmp_path):
    root, store, bundle, chapter = tiny
    line = published.describe(chapter, store=RunStore(tmp_path / "local", published=[bundle]), root=root)
    assert line.startswith("**Published results.** tiny-profile runs published in")
    for text in ("4 runs, SLBI and SGD x 2 seeds (0, 1)", "2 epochs on 256 MNIST training images",
                 store.get(chapter.configs()[0]).info["device_name"], "from commit unknown"):
        assert text in line
    assert "changed since" not in line
    smoke = published.describe(chapter, note="smoke profile: 256 training images; not comparable with the report",
                               store=store, root=root)
    assert smoke == "**Smoke results.** smoke profile: 256 training images; not comparable with the report."
    parts = published.describe(chapter, parts={"lenet": "Parts 1-3 (LeNet on MNIST)"}, store=store, root=root,
                               profile="full")
    assert parts.startswith("**Results.** Parts 1-3 (LeNet on MNIST): this build's own runs (profile full, trained on")


def test_a_chapter_whose_code_changed_after_the_publication_says_so(tiny, tmp_path):
    root, _, bundle, chapter = tiny
    changed = tmp_path / "root"
    shutil.copytree(root, changed, ignore=shutil.ignore_patterns("runs", "results"))
    store = RunStore(tmp_path / "local", published=[bundle])

    def line():
        return published.describe(chapter, store=store, root=changed)

    assert "changed since" not in line()
    nb_path = changed / "book" / f"{CH6}.ipynb"
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:  # prose and the parameters cell do not decide numbers
        if cell["cell_type"] == "markdown" or "parameters" in cell["metadata"].get("tags", []):
            cell["source"] = "".join(cell["source"]) + "\n# edited"
    nb_path.write_text(json.dumps(nb))
    assert "changed since" not in line()
    code = next(c for c in nb["cells"] if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", []))
    code["source"] = "".join(code["source"]) + "\nprint('edited')"
    nb_path.write_text(json.dumps(nb))
    assert f"**the chapter's code changed since** (`book/{CH6}.ipynb`)" in line()
    with open(changed / "cifar_utils" / "engine" / "loop.py", "a") as f:
        f.write("\n# a change to the engine\n")
    (changed / "cifar_utils" / "engine" / "new_module.py").write_text("X = 1\n")
    assert (f"(`book/{CH6}.ipynb`, `cifar_utils/engine/loop.py`, `cifar_utils/engine/new_module.py (added)`)"
            in line())
    (changed / "cifar_utils" / "plots.py").write_text("# plots decide no numbers\n")
    assert "plots.py" not in line()


# --- profiles: the `published` key --------------------------------------------------------------------------

def test_the_profile_key_is_validated_and_reaches_the_kernels(tiny, monkeypatch):
    root, _, bundle, _ = tiny
    notebooks = toc_notebooks(ROOT)
    for value, message in (([], "must name a bundle"), (3, "must name a bundle"),
                           ("/abs/path", "must be relative to the book root"),
                           ("results/none", "no bundle there")):
        with pytest.raises(ProfileError, match=message):
            validate_profile({"published": value, "chapters": {}}, notebooks, root=ROOT)
    rel = bundle.relative_to(root).as_posix()
    validate_profile({"published": rel, "chapters": {}}, {}, root=root)
    folders = published_folders({"published": rel}, root)
    assert folders == [bundle.resolve()]
    monkeypatch.delenv(bd.ENV_VAR, raising=False)
    env = kernel_environment(root, "tiny", folders)
    assert env[bd.ENV_VAR] == str(bundle.resolve())
    monkeypatch.setenv(bd.ENV_VAR, "")  # the user's own setting wins (empty: no bundle)
    assert kernel_environment(root, "tiny", folders)[bd.ENV_VAR] == ""


def test_the_full_profile_trains_its_own_runs_and_the_smoke_profile_validates():
    full = load_profile(ROOT / "params" / "full.yaml")
    assert "published" not in full  # a full build on a GPU gets its own runs, not the bundle's
    assert full["chapters"][CH6]["seeds"] == [0, 1, 2, 3, 4]
    smoke = load_profile(ROOT / "params" / "smoke.yaml")
    validate_profile(smoke, toc_notebooks(ROOT), root=ROOT)  # a `published:` folder must hold a bundle


def test_every_run_the_smoke_profile_cannot_train_here_is_published():
    """The smoke book trains on the embedded samples; a run on other data (chapter 6's full-protocol LeNet, when the
    smoke profile reads the bundle) must be in the profile's bundle, intact: CI has no MNIST to train it."""
    store = plan.store_for("smoke", "/nonexistent-store", ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)  # a damaged bundle run fails here, by path
        missing = [r.name for r in plan.for_profile("smoke", ROOT).runs
                   if r.config.source != "sample" and store.get_published(r.config) is None]
    assert missing == []


def test_the_smoke_profile_reads_the_full_profiles_lenet_runs():
    """When the smoke profile reads a bundle, its chapter 6 LeNet runs are the full profile's (same configs, so the
    same runs: the bundle's); its ResNet part stays smoke-sized."""
    smoke = load_profile(ROOT / "params" / "smoke.yaml")
    if not smoke.get("published"):
        pytest.skip("the smoke profile reads no bundle")
    mine, full = (plan.for_profile(p, ROOT, [CH6]).chapters[CH6] for p in ("smoke", "full"))
    for label in ("SLBI", "SGD"):
        assert [c.key() for c in mine.arm(("lenet",), label).configs] == \
            [c.key() for c in full.arm(("lenet",), label).configs]
    assert all(c.source == "sample" and c.epochs < 10 for c in mine.configs() if c.model != "lenet")


def test_committed_bundles_are_intact_and_under_the_cap():
    bundles = sorted(p for p in (ROOT / "results").iterdir() if p.is_dir()) if (ROOT / "results").is_dir() else []
    for folder in bundles:
        size = bundle_size(folder)
        assert size <= MAX_BYTES, f"{folder} holds {size / 1e6:.1f} MB, more than {MAX_BYTES / 1e6:.0f} MB"
        top, problem = bd.manifest(folder)
        assert problem is None
        runs = sorted(p.name for p in folder.iterdir() if p.is_dir())
        assert sorted(top["runs"]) == runs
        for name in runs:
            assert bd.verify(folder / name)[1] == [], name


@pytest.mark.slow
def test_chapter_6_renders_from_the_bundle_without_data_or_training(tiny, tmp_path, monkeypatch):
    """The chapter executed as the book runner executes it, its LeNet runs read from the bundle, with the MNIST
    copy they were trained on gone: every table, figure and verdict comes from the bundle, nothing is trained or
    written."""
    import papermill as pm

    from cifar_utils.book.params import chapter_parameters

    root, _, bundle, _ = tiny
    before = snapshot(bundle)
    data = root / "mnist.npz"
    hidden = tmp_path / "mnist.npz"
    shutil.move(data, hidden)
    monkeypatch.setenv("CIFAR_UTILS_RUNS", str(tmp_path / "local"))
    monkeypatch.setenv(bd.ENV_VAR, str(bundle))
    monkeypatch.setenv("CIFAR_UTILS_STATIC", "1")
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS", "off")
    out = tmp_path / "out.ipynb"
    try:
        pm.execute_notebook(str(root / "book" / f"{CH6}.ipynb"), str(out), parameters=chapter_parameters(root, CH6, "tiny"),
                            cwd=str(root), progress_bar=False, execution_timeout=900)
    finally:
        shutil.move(hidden, data)
    nb = json.loads(out.read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = json.dumps(outputs)
    assert "Published results." in text and "4 runs, SLBI and SGD x 2 seeds (0, 1)" in text
    assert "Table 3" in text and "over 2 seed(s)" in text and "2 of 2" in text  # Table 3 and the summary over seeds
    assert "from the seeds (2)" in text  # the LeNet claim judged over the two seeds
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4  # Figures 18, 19, the path, the explorer
    assert published.line_of(out).startswith("Published results. Parts 1-3 (LeNet on MNIST): tiny-profile runs")
    assert not (tmp_path / "local").exists() and snapshot(bundle) == before
