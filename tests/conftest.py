"""The suite's fixtures: tiny offline models and tokenizers built in code, made-up data, Ray for a
module, an unrelated Ray the cluster tests must leave alone (shared code: tests/helpers.py)."""

from __future__ import annotations

import collections
import os
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tests.helpers import PAIRS, QUESTIONS, WORDS, tiny_bert, write_jsonl


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


@pytest.fixture(scope="module")
def ray_local():
    """Ray in-process for one test module (started and shut down by it)."""
    import ray

    # address="local": without it ray.init() joins whatever Ray another test just started.
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def model():
    return tiny_bert()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer):
    """A tiny BERT and its tokenizer saved as a HuggingFace model directory."""
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_bert(num_labels=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


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


@pytest.fixture(scope="session", autouse=True)
def fast_tier_without_ray(request):
    """The fast tier (`pytest -m "not slow"`) imports no Ray: a test that needs Ray is slow."""
    yield
    if request.config.getoption("markexpr") == "not slow":
        assert "ray" not in sys.modules, "a test of the fast tier imported Ray: mark it slow"


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
    # The groups with the most slow tests first (.ci/run passes --no-loadscope-reorder, so xdist
    # hands groups out in this order): the long ones start at once and the many quick groups fill
    # in at the end, instead of a 75-second group starting last on one worker while the other idles.
    group = {item.nodeid: item.get_closest_marker("xdist_group").args[0] for item in items}
    slow = collections.Counter(group[item.nodeid] for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[group[item.nodeid]])
