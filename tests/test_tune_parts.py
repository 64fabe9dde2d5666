"""The service's cell queue and early stopping in Tune's terms, driven with Tune's own calls: the
searcher that hands out ready cells, and one ASHA per bracket. Slow tier: it imports Ray (inside
the tests, so that collecting the fast tier does not)."""

import functools
from types import SimpleNamespace

import pytest

from ssmix.sweep import ResultStore, load_sweep, plan_cells
from ssmix.sweep.cells import Origin
from ssmix.sweep.plan import search_cell_pair
from ssmix.sweep.progress import Progress
from ssmix.sweep.schedule import CellQueue, asha_group, cell_costs
from tests import helpers

pytestmark = pytest.mark.slow
sweep_file = functools.partial(helpers.sweep_file, name="service")


def fake_trial(cell, trial_id):
    return SimpleNamespace(config={"cell": cell.to_dict()}, trial_id=trial_id)


class Feeder:      # a grid sweep's feeder proposes nothing
    def top_up(self):
        pass


def test_searcher_hands_out_each_phase2_once_its_own_phase1_has_a_result(model_dir, data_dir, tmp_path):
    from ray.tune.search import Searcher

    from trainables.tune_parts import CellSearcher

    sweep = load_sweep(sweep_file(tmp_path, model_dir, data_dir))
    cells = plan_cells(sweep)
    store = ResultStore.for_sweep(sweep)
    queue = CellQueue(cells, cell_costs(cells))
    searcher = CellSearcher(queue, store, Progress(len(cells), 0, live=False), Feeder())
    first, second = (searcher.suggest(f"t{i}")["cell"] for i in range(2))
    assert {first["kind"], second["kind"]} == {"phase1"}
    assert searcher.suggest("t2") is None                       # both phase 2s wait: ask again later
    seed0 = first if first["seed"] == 0 else second
    store.write_result(next(c for c in cells if c.id == seed0["id"]), helpers.finished_result())
    searcher.on_trial_complete("t0" if seed0 is first else "t1")
    handed = searcher.suggest("t3")["cell"]
    assert handed["kind"] == "phase2" and handed["phase1_id"] == seed0["id"]
    assert searcher.suggest("t4") is None                       # seed 1's phase 1 is still running
    searcher.on_trial_complete("t1" if seed0 is first else "t0")   # ...and ends without a result
    searcher.on_trial_complete("t3")
    assert searcher.suggest("t5") == Searcher.FINISHED           # seed 1's phase 2 is blocked, nothing left
    assert "failed" in next(iter(queue.blocked.values()))


def test_asha_competes_per_task_and_per_searched_method_and_never_stops_phase1_or_confirmations(
        model_dir, data_dir, tmp_path):
    from ray.tune.schedulers import TrialScheduler

    from trainables.tune_parts import Phase2ASHA

    search = {"algorithm": "grid", "space": {"phase2.lr": {"distribution": "choice", "values": [1e-4, 3e-4]}},
              "confirm_seeds": [1]}
    sweep = load_sweep(sweep_file(tmp_path, model_dir, data_dir, seeds=None, search=search))
    code = "c"
    proposals = [search_cell_pair(sweep, "trec-coarse", "ssmix", {"phase2.lr": lr}, code, i)[1]
                 for i, lr in enumerate((1e-4, 3e-4))]
    phase1 = search_cell_pair(sweep, "trec-coarse", "ssmix", {"phase2.lr": 1e-4}, code, 0)[0]
    grid = plan_cells(load_sweep(sweep_file(tmp_path, model_dir, data_dir, name="grid")))
    grid_phase2 = next(c for c in grid if c.kind == "phase2")
    assert asha_group(proposals[0]) == asha_group(proposals[1]) == ("trec-coarse", "ssmix")
    assert asha_group(grid_phase2) == ("trec-coarse", "")
    assert asha_group(phase1) is None and proposals[0].early_stoppable and not phase1.early_stoppable
    assert asha_group(proposals[0].__class__(**{**proposals[0].__dict__, "origin": Origin.CONFIRM})) is None

    scheduler = Phase2ASHA(grace_period=1, reduction_factor=2)
    trials = {name: fake_trial(cell, name) for name, cell in
              (("good", proposals[0]), ("bad", proposals[1]), ("grid", grid_phase2), ("phase1", phase1))}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    assert set(scheduler.brackets) == {("trec-coarse", "ssmix"), ("trec-coarse", "")}
    assert scheduler.added == {"good", "bad", "grid"}

    def report(name, value):
        return scheduler.on_trial_result(None, trials[name], {"training_iteration": 1, "selection_accuracy": value})

    assert report("good", 0.9) == TrialScheduler.CONTINUE
    assert report("bad", 0.1) == TrialScheduler.STOP            # below the median of its own bracket
    assert report("grid", 0.05) == TrialScheduler.CONTINUE      # alone in the task's grid bracket
    assert report("phase1", 0.0) == TrialScheduler.CONTINUE     # never early-stopped
    for name in trials:                                         # ASHA only hears of the trials it knows
        scheduler.on_trial_complete(None, trials[name], {"training_iteration": 2, "selection_accuracy": 0.5})
    assert scheduler.added == set()
    scheduler.on_trial_remove(None, trials["good"])             # a second end of the same trial: ignored
