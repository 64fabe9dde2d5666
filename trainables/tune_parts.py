"""The service's cell queue, early stopping and cell events in Tune's terms: a ``Searcher`` that
hands out ready cells, a scheduler with one ASHA per bracket, and a ``Callback`` that turns Tune's
trial events into ``ssmix.sweep.events``."""

from __future__ import annotations

import json
from pathlib import Path

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from ssmix.sweep.cells import Cell
from ssmix.sweep.events import CellEvents
from ssmix.sweep.feeder import SearchFeeder
from ssmix.sweep.progress import Progress
from ssmix.sweep.schedule import CellQueue, asha_group
from ssmix.sweep.store import ResultStore
from trainables.cell import TRAINED_HERE


def cell_of(trial) -> Cell:
    return Cell.from_dict(trial.config["cell"])


class CellSearcher(Searcher):
    """Hands Tune the next ready cell (``ssmix.sweep.schedule``): a phase-2 cell the moment its own
    phase-1 cell has a result. Its state is the result store, so a rerun rebuilds it from there."""

    def __init__(self, queue: CellQueue, store: ResultStore, progress: Progress, feeder: SearchFeeder):
        super().__init__(metric="selection_accuracy", mode="max")
        self.queue, self.store, self.progress, self.feeder = queue, store, progress, feeder
        self.trials: dict[str, str] = {}    # Tune trial id -> cell id

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True   # the cells are the search space

    def suggest(self, trial_id: str):
        self.feeder.top_up()
        cell = self.queue.pop(elsewhere=lambda c: self.store.claimed(c.id))
        if cell is None:
            return Searcher.FINISHED if self.queue.finished else None   # None: ask again when a cell ends
        self.trials[trial_id] = cell.id
        return {"cell": cell.to_dict()}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        cell_id = self.trials.pop(trial_id, None)
        if cell_id is None:
            return
        ok = self.store.finished(cell_id) is not None
        for blocked in self.queue.complete(cell_id, ok, "" if ok else "no result"):
            self.progress.blocked_cell(blocked.label, self.queue.blocked[blocked.id], blocked.id)

    def save(self, checkpoint_path: str) -> None:
        pass   # nothing to save: the store is the state (Tune's experiment restore is not used)

    def restore(self, checkpoint_path: str) -> None:
        pass


class Phase2ASHA(FIFOScheduler):
    """ASHA early stopping with one ASHA per bracket (``asha_group``); cells of no bracket run to
    the end. Only the trials handed to an ASHA are passed to it when they end (it keeps no record
    of the others)."""

    def __init__(self, grace_period: int, reduction_factor: int):
        super().__init__()
        self.grace_period, self.reduction_factor = grace_period, reduction_factor
        self.brackets: dict[tuple[str, str], ASHAScheduler] = {}
        self.added: set[str] = set()       # ids of the trials an ASHA knows

    def _asha(self, trial) -> ASHAScheduler | None:
        group = asha_group(cell_of(trial))
        if group is None:
            return None
        if group not in self.brackets:
            self.brackets[group] = ASHAScheduler(
                time_attr="training_iteration", metric="selection_accuracy", mode="max", max_t=100_000,
                grace_period=self.grace_period, reduction_factor=self.reduction_factor)
        return self.brackets[group]

    def on_trial_add(self, tune_controller, trial):
        if (asha := self._asha(trial)) is not None:
            asha.on_trial_add(tune_controller, trial)
            self.added.add(trial.trial_id)

    def on_trial_result(self, tune_controller, trial, result):
        asha = self._asha(trial)
        return TrialScheduler.CONTINUE if asha is None else asha.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        if trial.trial_id in self.added:
            self.added.discard(trial.trial_id)
            self._asha(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        if trial.trial_id in self.added:
            self.added.discard(trial.trial_id)
            self._asha(trial).on_trial_remove(tune_controller, trial)


class TuneEvents(tune.Callback):
    """Tune's trial events, as the service's cell events (``CellEvents``, which logs to MLflow on
    the driver: a single writer, so a SQLite store never sees parallel writers)."""

    def __init__(self, events: CellEvents):
        self.events = events

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks into its experiment state (never restored from: the store is
        # the state); the invocation's locks and open lock file stay with the live callback.
        return {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.events.started(cell_of(trial))

    def on_step_end(self, iteration, trials, **info):
        self.events.progress.refresh()   # each running cell's step / total, from its progress file

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "evaluation_json" in result:
            self.events.evaluated(cell_of(trial), json.loads(result["evaluation_json"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}      # what a cell the scheduler stopped last reported
        self.events.finished(cell_of(trial), last.get("selection_accuracy"), last.get("global_step"),
                             trained_here=bool(last.get(TRAINED_HERE, 1)))

    def on_trial_error(self, iteration, trials, trial, **info):
        try:
            reason = Path(trial.error_file).read_text().strip().splitlines()[-1]
        except (OSError, TypeError, IndexError):
            reason = "the trial raised (see Ray's logs)"
        self.events.failed(cell_of(trial), reason)
