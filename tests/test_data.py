import json

import pytest

from ssmix.data import load_task_data
from ssmix.splits import DataError
from ssmix.tasks import TaskSpec, get_task
from tests.helpers import write_jsonl


def good_trec(root):
    rows = [{"text": "what is the city", "coarse_label": 4, "fine_label": 30}] * 4
    write_jsonl(root / "trec" / "train.jsonl", rows)
    write_jsonl(root / "trec" / "test.jsonl", rows)


def load(tokenizer, root, task="trec-coarse"):
    return load_task_data(get_task(task) if isinstance(task, str) else task, tokenizer, data_dir=root)


def test_loads_tokenises_and_keeps_special_tokens_mask(tokenizer, data_dir):
    data = load(tokenizer, data_dir, "rte")
    row = data.train[0]
    assert set(row) >= {"input_ids", "attention_mask", "special_tokens_mask", "labels"}
    assert len(set(len(r) for r in data.train["input_ids"])) > 1          # not padded at tokenisation
    batch, labels = data.collator([data.train[i] for i in range(4)])
    assert batch["input_ids"].shape == batch["special_tokens_mask"].shape
    assert (batch["special_tokens_mask"][batch["attention_mask"] == 0] == 1).all()   # padding is special
    assert labels.tolist() == data.train["labels"][:4]


@pytest.mark.parametrize("row,split,expected", [
    ({"text": "what", "fine_label": 1}, "train", "missing column 'coarse_label'"),
    ({"text": "what", "coarse_label": 6, "fine_label": 1}, "train",
     "row 3: field 'coarse_label' is 6, expected an integer label in 0..5"),
    ({"text": "what", "coarse_label": "LOC", "fine_label": 1}, "test", "row 3: field 'coarse_label' is 'LOC'"),
    ({"text": "   ", "coarse_label": 1, "fine_label": 1}, "train", "row 3: field 'text' is '   ', expected non-empty text"),
    ({"text": None, "coarse_label": 1, "fine_label": 1}, "test", "row 3: field 'text' is None"),
])
def test_bad_rows_name_file_row_and_field(tokenizer, tmp_path, row, split, expected):
    good_trec(tmp_path)
    path = tmp_path / "trec" / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2] = row
    if "coarse_label" not in row:
        rows = [{k: v for k, v in r.items() if k != "coarse_label"} for r in rows]
    write_jsonl(path, rows)
    with pytest.raises(DataError) as err:
        load(tokenizer, tmp_path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_malformed_json_line(tokenizer, tmp_path):
    good_trec(tmp_path)
    path = tmp_path / "trec" / "train.jsonl"
    path.write_text(path.read_text() + '{"text": "who", "coarse_label": 3,\n')
    with pytest.raises(DataError, match=r"train.jsonl: row 5: not valid JSON"):
        load(tokenizer, tmp_path)


def test_empty_split_and_missing_split(tokenizer, tmp_path):
    good_trec(tmp_path)
    (tmp_path / "trec" / "test.jsonl").write_text("")
    with pytest.raises(DataError, match="split 'test' of task 'trec-coarse' is empty"):
        load(tokenizer, tmp_path)
    (tmp_path / "trec" / "test.jsonl").unlink()
    with pytest.raises(DataError, match=r"split 'test': file .*trec/test.jsonl not found"):
        load(tokenizer, tmp_path)


def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError, match="known tasks: sst2, qqp"):
        get_task("sst-2")


def test_user_task_declared_in_config_with_csv_and_string_labels(tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)           # a task's own relative files: relative to where the command runs
    (tmp_path / "train.csv").write_text("review,sentiment\ngood movie,pos\nbad film,neg\ngreat story,pos\n")
    (tmp_path / "dev.csv").write_text("review,sentiment\nboring plot,neg\n")
    task = TaskSpec(name="my-reviews", text_fields=("review",), label_field="sentiment", num_labels=2,
                    eval_splits=("dev",), data_files={"train": "train.csv", "dev": "dev.csv"},
                    label_map={"neg": 0, "pos": 1})
    data = load(tokenizer, tmp_path, task)
    assert data.train["labels"] == [1, 0, 1] and data.evals["dev"]["labels"] == [0]


def test_train_fraction_keeps_reference_share(tokenizer, data_dir):
    data = load_task_data(get_task("trec-coarse"), tokenizer, data_dir=data_dir, train_fraction=0.75)
    assert len(data.train) == 18          # 75% of 24


def test_user_task_in_a_sweep_file_and_on_the_command_line(model_dir, tmp_path, capsys):
    import yaml

    from ssmix.cli import main
    from ssmix.config import TrialConfig
    from ssmix.sweep import load_sweep, plan_cells

    (tmp_path / "train.csv").write_text("review,sentiment\n" + "good movie,pos\nbad film,neg\n" * 8)
    (tmp_path / "dev.csv").write_text("review,sentiment\nboring plot,neg\ngreat story,pos\n")
    spec = {"name": "reviews", "text_fields": ["review"], "label_field": "sentiment", "num_labels": 2,
            "eval_splits": ["dev"], "data_files": {"train": str(tmp_path / "train.csv"), "dev": str(tmp_path / "dev.csv")},
            "label_map": {"neg": 0, "pos": 1}}
    sweep_path = tmp_path / "s.yaml"
    sweep_path.write_text(yaml.safe_dump({"name": "mine", "custom_tasks": [spec], "tasks": ["reviews"],
                                          "methods": ["ssmix"], "seeds": [0]}))
    cells = plan_cells(load_sweep(sweep_path))
    assert [c.task for c in cells] == ["reviews", "reviews"]
    assert TrialConfig(**cells[0].trial).task.label_map == {"neg": 0, "pos": 1}   # the spec travels with the trial

    (tmp_path / "task.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    assert main(["train", "--task", "reviews", "--task-config", str(tmp_path / "task.yaml"), "--model", model_dir,
                 "--phase1-epochs", "1", "--phase2-epochs", "1", "--batch-size", "8", "--out", str(out)]) == 0
    assert "dev" in capsys.readouterr().out


def test_dev_split_holds_out_part_of_train_for_selection_only(tokenizer, data_dir):
    task = get_task("trec-coarse")
    full = load_task_data(task, tokenizer, data_dir=data_dir)
    data = load_task_data(task, tokenizer, data_dir=data_dir, dev_fraction=0.25, seed=3)
    assert len(data.train) + len(data.evals["dev"]) == len(full.train) == 24
    assert len(data.evals["dev"]) == 6
    assert data.task.selection == ("dev",) and list(data.evals) == ["dev", "test"]   # test still reported
    again = load_task_data(task, tokenizer, data_dir=data_dir, dev_fraction=0.25, seed=4)
    assert again.evals["dev"]["input_ids"] == data.evals["dev"]["input_ids"]      # the same rows for every seed


def test_trec_fine_47_merges_fine_labels_by_the_part_after_the_colon():
    from ssmix.tasks import TREC_FINE_LABELS, get_task

    task = get_task("trec-fine-47")
    assert task.num_labels == 47 and len(TREC_FINE_LABELS) == 50
    merged = task.label_map
    name = {label: i for i, label in enumerate(TREC_FINE_LABELS)}
    assert merged[str(name["ENTY:other"])] == merged[str(name["LOC:other"])] == merged[str(name["NUM:other"])]
    assert merged[str(name["DESC:desc"])] == merged[str(name["HUM:desc"])]
    assert sorted(set(merged.values())) == list(range(47))
    assert merged[str(name["ENTY:animal"])] != merged[str(name["ENTY:body"])]
