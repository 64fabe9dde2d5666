"""Tiny offline models and tokenizers built in code, so the suite needs no network or data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

WORDS = ("the a an is was what who where when how why which of to in on for with by from and or "
         "not good bad great movie film story actor plot city country river name year number many "
         "much long first capital president invented wrote play song book game team water food "
         "animal color money day night love hate boring funny sad happy very quite really").split()


@pytest.fixture(scope="session")
def vocab_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab")
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", ".", ","] + WORDS) + "\n")
    (path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    return path


@pytest.fixture(scope="session")
def tokenizer(vocab_dir):
    # from_pretrained on a folder with vocab.txt works across transformers 4.x and 5.x (5.x ignores
    # the vocab_file= keyword of the constructor and would map every word to [UNK]).
    tok = AutoTokenizer.from_pretrained(str(vocab_dir))
    assert tok.convert_tokens_to_ids("movie") != tok.unk_token_id
    return tok


def tiny_bert(num_labels=3, vocab_size=len(WORDS) + 8, dropout=0.0, layers=2, seed=0, attn="eager"):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        num_labels=num_labels)
    return BertForSequenceClassification._from_config(config, attn_implementation=attn)


@pytest.fixture(scope="module")
def ray_local():
    """Ray in-process for one test module (started and shut down by it)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def model():
    return tiny_bert()


def encode(tokenizer, texts, pairs=None):
    return dict(tokenizer(texts, pairs, padding=True, return_special_tokens_mask=True, return_tensors="pt"))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer):
    """A tiny BERT and its tokenizer saved as a HuggingFace model directory."""
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_bert(num_labels=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


QUESTIONS = [("what is the capital city of the country", 4), ("who wrote the book", 3),
             ("how many animal in the river", 5), ("what color is the water", 1),
             ("where is the river", 4), ("who invented the game", 3), ("what year was the song", 5),
             ("how much money for the food", 5), ("what is the name of the team", 1),
             ("why is the story sad", 2), ("where is the first city", 4), ("who is the president", 3)]
PAIRS = [("the movie was good", "the film was great", 0), ("the plot was boring", "the story was funny", 1),
         ("the actor was great", "the actor was good", 0), ("the food was bad", "the food was good", 1),
         ("a sad story", "a very sad book", 0), ("the team was happy", "the team was sad", 1)]


def write_jsonl(path, rows):
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """trec/ and rte/ laid out like ../shared/data, with made-up rows (the suite needs no data)."""
    root = tmp_path_factory.mktemp("data")
    trec = [{"text": q, "coarse_label": c, "fine_label": c * 3} for q, c in QUESTIONS]
    write_jsonl(root / "trec" / "train.jsonl", trec * 2)
    write_jsonl(root / "trec" / "test.jsonl", trec[:6])
    rte = [{"sentence1": a, "sentence2": b, "label": y, "idx": i} for i, (a, b, y) in enumerate(PAIRS)]
    write_jsonl(root / "rte" / "train.jsonl", rte * 2)
    write_jsonl(root / "rte" / "validation.jsonl", rte[:4])
    return root


@pytest.fixture
def long_data(tmp_path):
    """TREC-shaped data with enough rows that trials overlap long enough to see who runs at once."""
    data = tmp_path / "data"
    trec = [{"text": q, "coarse_label": c} for q, c in QUESTIONS]
    write_jsonl(data / "trec" / "train.jsonl", trec * 50)
    write_jsonl(data / "trec" / "test.jsonl", trec[:6])
    return data


def plant_fault(sweep, cell, mode: str = "raise"):
    """Make ``cell``'s trial fail once after its next evaluation (``raise`` or ``kill`` its worker;
    see ssmix.cell_training.FAULT_FILE). Returns the cell's folder."""
    from ssmix.sweep import ResultStore
    from ssmix.cell_training import FAULT_FILE

    cell_dir = ResultStore(sweep.sweep_dir()).cell_dir(cell.id)
    cell_dir.mkdir(parents=True, exist_ok=True)
    (cell_dir / FAULT_FILE).write_text(mode)
    return cell_dir


@pytest.fixture(scope="session")
def unrelated_ray(tmp_path_factory):
    """A Ray head the cluster tests know nothing of, as a user's own sweep on the same machine
    would be: they must leave it running. Yields a check that raises if any of its servers died."""
    from tests.servers import free_port, ray_node, session_processes, token_env

    def names(pids):
        return {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids if Path(f"/proc/{pid}").exists()}

    args = ["--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}", "--num-cpus=1", "--include-dashboard=false"]
    with ray_node(args, token_env(), tmp_path_factory.mktemp("unrelated-ray")) as process:
        servers = {pid: name for pid, name in names(session_processes(process.pid)).items()
                   if name in ("gcs_server", "raylet")}
        assert sorted(servers.values()) == ["gcs_server", "raylet"]

        def check_alive():
            alive = names(session_processes(process.pid))
            dead = [name for pid, name in servers.items() if alive.get(pid) != name]
            assert not dead, f"a test stopped a Ray it did not start: {dead} of the unrelated Ray are gone"

        yield check_alive


@pytest.fixture
def beside_unrelated_ray(unrelated_ray):
    """For tests that start and stop Ray nodes: afterwards the unrelated Ray is still alive."""
    unrelated_ray()
    yield
    unrelated_ray()


def pytest_configure(config):
    """Under pytest-xdist, each worker owns one core: torch in it, and in what it starts (sweeps,
    the GPU check), computes on one thread instead of oversubscribing the shared cores. (Ray's
    trials already take the threads of the CPUs they were given.)"""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`--dist loadgroup`), each test module runs whole on one worker: a
    module's Ray (`ray_local`, module-scoped) must not meet another module's in one process. The
    cluster modules share the group "cluster" (their marks), so they run in turn."""
    for item in items:
        if not any(True for _ in item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
