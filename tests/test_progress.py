"""What a person sees while a sweep runs with its output piped (`ray job logs`, CI)."""

import re

import pytest

from tests.helpers import QUESTIONS, drain, sweep_file, sweep_process, write_jsonl

NOISE = ("Token authentication is enabled", "Configuration for experiment", "tensorboard", "TensorBoard",
         "View detailed results", "Trial status", "╭", "Failed to fetch metrics")


@pytest.mark.slow
def test_piped_output_shows_steps_growing_inside_a_trial_and_no_ray_banners(model_dir, tmp_path):
    data = tmp_path / "data"
    trec = [{"text": q, "coarse_label": c} for q, c in QUESTIONS]
    write_jsonl(data / "trec" / "train.jsonl", trec * 100)         # 1200 rows: 150 steps of 8 per epoch
    write_jsonl(data / "trec" / "test.jsonl", trec[:6])
    path = sweep_file(tmp_path, model_dir, data, name="progress", methods=("ssmix",), seeds=(0,),
                      trial={"batch_size": 8, "eval_every": 1000, "phase1": {"epochs": 2, "lr": 5e-4},
                             "phase2": {"epochs": 1, "lr": 1e-4}})
    process = sweep_process(path, {"SSMIX_PROGRESS_SECONDS": "0.3"})
    out = drain(process)
    assert process.returncode == 0, out[-3000:]
    for noise in NOISE:
        assert noise not in out, noise
    # Before phase 1 finished, its step count was seen growing.
    before_end = out.split("[sweep] finished: trec-coarse seed 0 phase 1")[0]
    steps = [int(m) for m in re.findall(r"trec-coarse seed 0 phase 1: phase1 step (\d+)/300", before_end)]
    assert steps == sorted(steps), out[-3000:]
    assert len({s for s in steps if s < 300}) >= 2, out[-3000:]       # it moved inside the trial
    assert re.search(r"phase1 step \d+/300, \d+s left", before_end)
    assert "ssmix report progress" in out and "mlflow ui" in out          # where to look next
    # Once a cell has finished, the counts end with the time left for the whole sweep.
    assert "left" not in before_end.split("[sweep] progress:")[0]
    assert re.search(r"cells done 1, running \d, pending \d, failed 0, about \d+(m\d\ds|s) left", out), out[-3000:]


def test_sweep_time_left_is_the_cost_left_over_the_cost_trained_per_second(tmp_path):
    from ssmix.sweep.progress import Progress, StepWriter, read_step
    from ssmix.sweep.storage import PosixStorage
    from ssmix.sweep.store import ResultStore

    costs = {"a": 1.0, "b": 1.0, "c": 2.0}
    store = ResultStore(PosixStorage(tmp_path))
    progress = Progress(3, 0, live=False, costs=costs)
    assert progress.sweep_left() is None                      # nothing finished: no rate yet
    progress.started("a", "a", lambda: read_step(store, "a"))
    progress.started("c", "c", lambda: read_step(store, "c"))
    progress.finished("a", "a")
    progress.began -= 100.0                                   # 1 cost unit in 100 s ...
    assert progress.sweep_left(now=progress.began + 100) == 300.0   # ... 3 units to go
    StepWriter(store, "c")("phase2", 50, 100)                 # c half done: 2 of 4 units in 100 s
    assert progress.sweep_left(now=progress.began + 100) == 100.0
    assert re.search(r"about 1m(39|40|41)s left$", progress.counts())
    assert Progress(3, 0, live=False).sweep_left() is None     # a search: no estimates, no claim

