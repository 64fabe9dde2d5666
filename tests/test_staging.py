"""Data and model fetched once per sweep: the hub is asked for each split and for the model once,
by the driver, before the first trial; the trials read the staged copy. (The hub is played by
patched loaders: this machine has no network.)"""

import re

import datasets
import pytest
import transformers

from ssmix.cli import main
from ssmix.splits import PARQUET_REVISION, load_split
from ssmix.sweep import ResultStore, load_sweep, plan_cells
from ssmix.tasks import get_task
from tests.helpers import QUESTIONS, sweep_file

HUB_MODEL = "tiny-org/tiny-bert"


@pytest.fixture
def hub(monkeypatch, model_dir):
    """The hub, as the patched loaders play it: TREC's splits and a tiny BERT, every call counted.
    A from_pretrained of a name that is not a folder here is a call to the hub, and fails."""
    import os

    calls = {"load_dataset": [], "snapshot_download": [], "from_pretrained": []}
    load_dataset = datasets.load_dataset
    rows = {"train": [{"text": q, "coarse_label": c, "fine_label": c} for q, c in QUESTIONS] * 2,
            "test": [{"text": q, "coarse_label": c, "fine_label": c} for q, c in QUESTIONS[:6]]}

    def fake_load_dataset(path, *args, **kwargs):
        if path == "CogComp/trec":
            calls["load_dataset"].append((path, kwargs.get("split"), kwargs.get("revision")))
            return datasets.Dataset.from_list(rows[kwargs["split"]])
        return load_dataset(path, *args, **kwargs)

    def fake_snapshot_download(name, **kwargs):
        calls["snapshot_download"].append(name)
        assert name == HUB_MODEL
        return model_dir

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    for loader in (transformers.AutoTokenizer, transformers.AutoModelForSequenceClassification):
        original = loader.from_pretrained.__func__

        def counted(cls, name, *args, _original=original, **kwargs):
            if not os.path.isdir(os.path.expanduser(str(name))):
                calls["from_pretrained"].append(str(name))
                raise OSError(f"{name}: the hub is not reachable from a trial")
            return _original(cls, name, *args, **kwargs)

        monkeypatch.setattr(loader, "from_pretrained", classmethod(counted))
    return calls


def test_a_sweep_asks_the_hub_once_per_split_and_once_for_the_model_and_its_trials_never(hub, model_dir, tmp_path,
                                                                                         capsys):
    path = sweep_file(tmp_path, HUB_MODEL, None, name="staged", methods=("none", "ssmix", "embedmix"))
    sweep = load_sweep(path)
    ids = [c.id for c in plan_cells(sweep)]
    assert main(["sweep", "run", "--in-process", str(path)]) == 0, capsys.readouterr().err[-3000:]
    out = capsys.readouterr().out
    assert "[sweep] staged: the data in staged/data/" in out and "the model in staged/models/" in out
    assert re.search(r"outside trials, [\d.]+ s per cell \(MLflow on the driver [\d.]+ s per cell; the rest: the", out)
    assert sorted(split for _, split, _ in hub["load_dataset"]) == ["test", "train"]     # once each, for 6 cells
    assert hub["snapshot_download"] == [HUB_MODEL] and hub["from_pretrained"] == []
    store = ResultStore.for_sweep(sweep)
    assert [c.id for c in plan_cells(sweep)] == ids and all(store.finished(i) for i in ids)
    result = store.finished(ids[0])
    assert result.outcome.config["data_dir"].startswith(str(store.storage.local_path("staged/data")))
    assert sweep.trial.model_dump().get("data_dir") is None       # the cells keep the file's settings

    # A rerun, and a new seed: the stage is there already; the hub is not asked again.
    three_seeds = str(sweep_file(tmp_path, HUB_MODEL, None, name="staged", seeds=(0, 1, 2)))
    assert main(["sweep", "run", "--in-process", three_seeds]) == 0
    assert len(hub["load_dataset"]) == 2 and hub["snapshot_download"] == [HUB_MODEL] and hub["from_pretrained"] == []
    # Every cell done: gc removes the staged copies (a copy of what the hub keeps).
    assert store.storage.children("staged") and main(["sweep", "gc", three_seeds]) == 0
    assert not store.storage.children("staged") and all(store.finished(c.id) for c in plan_cells(load_sweep(three_seeds)))


def test_a_dataset_that_is_a_loading_script_is_read_from_the_hubs_parquet_conversion(monkeypatch, capsys):
    asked = []

    def scripted(path, name=None, split=None, revision=None):
        asked.append(revision)
        if revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found trec.py")
        assert revision == PARQUET_REVISION
        return datasets.Dataset.from_list([{"text": "what", "coarse_label": 1, "fine_label": 1}])

    monkeypatch.setattr(datasets, "load_dataset", scripted)
    rows, source = load_split(get_task("trec-coarse"), "train", None)
    assert len(rows) == 1 and asked == [None, PARQUET_REVISION] and "CogComp/trec" in source
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[data]")]
    assert said == ["[data] CogComp/trec is a loading script, which datasets 4 no longer runs: reading the hub's "
                    "parquet conversion (refs/convert/parquet) instead"]
