"""GPU scheduling proven on a CPU machine: Ray clusters may declare logical GPUs, and Ray then
assigns GPU ids per trial (and sets CUDA_VISIBLE_DEVICES) exactly as on real cards. Each cell
records the node, the GPU ids it was given and the device it trained on.

Run them alone with ``pytest -k gpu``."""

import itertools

import pytest

from ssmix.cli import main
from ssmix.sweep import ResultStore, load_sweep, plan_cells
from tests.helpers import hold_until_started, sweep_file


def gpu_sweep(tmp_path, model_dir, data, resources, seeds=(0, 1, 2, 3), **extra):
    return sweep_file(tmp_path, model_dir, data, name="gpus", methods=("none",), seeds=seeds, resources=resources,
                      **extra)


def run_held(tmp_path, model_dir, data, resources, count):
    """The four-seed sweep run with every cell held mid training until ``count`` of them have
    started (the most that could run at once do so, however fast this machine trains); its file
    and finished results."""
    path = gpu_sweep(tmp_path, model_dir, data, resources)
    sweep = load_sweep(path)
    cells = plan_cells(sweep)
    hold_until_started(sweep, cells, cells, count=count)
    assert main(["sweep", "run", str(path)]) == 0
    finished = list(results(path).values())
    assert len(finished) == 4 and all(finished)
    return path, finished


def results(path):
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    return {c.id: store.finished(c.id) for c in plan_cells(sweep)}


def peak_overlap(finished) -> int:
    """The most cells that were running at one moment (from their recorded start and end)."""
    events = sorted([(r.timing.started_at, 1) for r in finished] +
                    [(r.timing.finished_at, -1) for r in finished], key=lambda e: (e[0], e[1]))
    return max(itertools.accumulate(delta for _, delta in events))


def overlapping(a, b) -> bool:
    return a.timing.started_at < b.timing.finished_at and b.timing.started_at < a.timing.finished_at


@pytest.fixture(scope="module")
def ray_two_gpus():
    import ray

    # address="local": without it ray.init() joins whatever Ray another test just started.
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_half_gpu_trials_pack_four_on_two_gpus(ray_two_gpus, model_dir, data_dir, tmp_path):
    path, finished = run_held(tmp_path, model_dir, data_dir, {"cpu": 1, "gpu": 0.5, "cpu_fallback": True}, 4)
    assert peak_overlap(finished) == 4                               # all four at once
    for r in finished:
        assert len(r.placement.gpu_ids) == 1 and r.placement.assigned["GPU"] == 0.5
        assert r.placement.device == "cpu"                    # no CUDA here: the fallback asked for
    for gpu in {r.placement.gpu_ids[0] for r in finished}:
        sharing = [r for r in finished if r.placement.gpu_ids == [gpu]]
        assert len(sharing) <= 2                                      # no id given to more than two

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=load_sweep(path).tracking)
    runs = client.search_runs([client.get_experiment_by_name("gpus").experiment_id],
                              filter_string="tags.`ssmix.cell` != ''")
    assert len(runs) == 4
    for run in runs:                                                  # where it ran, in its MLflow run
        assert run.data.tags["ssmix.gpu_ids"] in ("0", "1") and run.data.tags["ssmix.device"] == "cpu"
        assert run.data.tags["ssmix.node_ip"] and run.data.tags["ssmix.node_id"]


@pytest.mark.slow
def test_whole_gpu_trials_run_two_at_once_one_per_card(ray_two_gpus, model_dir, data_dir, tmp_path):
    _, finished = run_held(tmp_path, model_dir, data_dir, {"cpu": 1, "gpu": 1, "cpu_fallback": True}, 2)
    assert peak_overlap(finished) == 2
    for a, b in itertools.combinations(finished, 2):
        if overlapping(a, b):
            assert a.placement.gpu_ids != b.placement.gpu_ids


@pytest.mark.slow
def test_gpu_trial_where_torch_has_no_cuda_fails_at_once_with_the_reason(ray_two_gpus, model_dir, data_dir,
                                                                          tmp_path, capsys):
    path = gpu_sweep(tmp_path, model_dir, data_dir, {"cpu": 1, "gpu": 1}, seeds=(0,), max_failures=0)
    assert main(["sweep", "run", str(path)]) == 1
    out = capsys.readouterr().out
    assert "but torch here has no CUDA" in out and "resources.cpu_fallback: true" in out
    sweep = load_sweep(path)
    cell = plan_cells(sweep)[0]
    assert not ResultStore.for_sweep(sweep).storage.exists(f"cells/{cell.id}/work/phase1")   # failed before training


@pytest.mark.slow
def test_per_task_resources_and_a_trial_without_gpu_stays_on_cpu(ray_two_gpus, model_dir, data_dir, tmp_path):
    path = gpu_sweep(tmp_path, model_dir, data_dir, {"cpu": 1, "gpu": 0, "cpu_fallback": True,
                                                     "per_task": {"rte": {"gpu": 1}}},
                     seeds=(0,), tasks=["trec-coarse", "rte"])
    assert main(["sweep", "run", str(path)]) == 0
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    by_task = {c.task: store.finished(c.id).placement for c in plan_cells(sweep)}
    assert by_task["rte"].assigned["GPU"] == 1 and len(by_task["rte"].gpu_ids) == 1
    assert by_task["trec-coarse"].gpu_ids == [] and by_task["trec-coarse"].device == "cpu"
    assert "GPU" not in by_task["trec-coarse"].assigned


def test_per_task_resources_must_name_tasks_of_the_sweep(model_dir, data_dir, tmp_path, capsys):
    path = gpu_sweep(tmp_path, model_dir, data_dir, {"gpu": 1, "per_task": {"mnli": {"gpu": 1}}})
    assert main(["sweep", "run", str(path), "--dry-run"]) == 2
    assert "resources.per_task names task(s) ['mnli'] that are not in tasks ['trec-coarse']" in capsys.readouterr().err
