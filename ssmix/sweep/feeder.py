"""Cells a search makes while the sweep runs: adaptive proposals while the budget of a (task,
method) lasts (at most ``max_concurrent`` in flight), and the confirmation cells once its search is
complete. Every proposal is logged before it is queued (``ssmix.sweep.search``).

The feeder is asked for more at every free slot, so it keeps each search's state (the proposals,
their cells' ids, the objectives of those done) and updates it rather than rebuilding it: the
proposal log is read only when a proposal is appended (under its lock, which sees other drivers'
proposals too), and the store only for proposals that are neither queued nor scored yet. What a
proposal costs the driver then does not grow with the proposals before it, but for the sampler's
own replay of the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ssmix.sweep.cells import Cell
from ssmix.sweep.plan import confirm_cell_pairs, search_cell_pair, search_proposals
from ssmix.sweep.progress import Progress
from ssmix.sweep.schedule import CellQueue, cell_costs
from ssmix.sweep.search import Proposal, ProposalLog, proposal_seed
from ssmix.sweep.spec import SweepConfig
from ssmix.sweep.store import ResultStore
from ssmix.sweep.tpe import tpe_proposal


@dataclass
class SearchState:
    """One (task, method)'s search as this driver knows it, in proposal order."""
    params: list[dict] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)            # each proposal's phase-2 cell
    objectives: dict[str, float | None] = field(default_factory=dict)   # cell id -> objective, once done
    confirmed: bool = False

    def history(self) -> list[tuple[dict, float]]:
        return [(p, self.objectives[i]) for p, i in zip(self.params, self.ids)
                if self.objectives.get(i) is not None]

    def best(self, budget: int) -> dict | None:
        """The best proposal once the budget is spent and every proposal has an objective (as
        ``ssmix.sweep.plan.best_proposal`` picks it from the store)."""
        if len(self.params) < budget or any(self.objectives.get(i) is None for i in self.ids):
            return None
        values = [self.objectives[i] for i in self.ids]
        return self.params[max(range(len(values)), key=values.__getitem__)]     # the first of equals


class SearchFeeder:
    def __init__(self, sweep: SweepConfig, store: ResultStore, queue: CellQueue, progress: Progress, code: str):
        self.sweep, self.store, self.queue, self.progress, self.code = sweep, store, queue, progress, code
        self.searches: dict[tuple[str, str], SearchState] = {}
        self.store_reads = 0          # results read (a fast test holds them flat per proposal)

    def top_up(self) -> None:
        if self.sweep.search is None:
            return
        if not self.searches:
            self._load()
        for (task, method), state in self.searches.items():
            if state.confirmed:
                continue
            self._score(state)
            if self.sweep.search.algorithm == "tpe":
                self._propose(task, method, state)
            self._confirm(task, method, state)

    def _load(self) -> None:
        """Each search as the store has it when the sweep starts (the log of an earlier driver)."""
        for task, method, proposals in search_proposals(self.sweep, self.store):
            state = self.searches[(task, method)] = SearchState()
            self._extend(task, method, state, proposals)

    def _extend(self, task: str, method: str, state: SearchState, proposals: list[dict]) -> None:
        """The proposals beyond those ``state`` has (logged by this driver or another)."""
        for params in proposals[len(state.params):]:
            state.params.append(params)
            state.ids.append(search_cell_pair(self.sweep, task, method, params, self.code)[1].id)

    def _score(self, state: SearchState) -> None:
        """Objectives of proposals done since last time: only those neither scored nor waiting in
        this driver's queue are read (ended here, or proposed by another driver)."""
        for cell_id in state.ids:
            if cell_id in state.objectives or cell_id in self.queue.pending or cell_id in self.queue.running:
                continue
            self.store_reads += 1
            result = self.store.done(cell_id)
            if result is not None:
                state.objectives[cell_id] = result.objective()

    def _propose(self, task: str, method: str, state: SearchState) -> None:
        search = self.sweep.search
        space, budget = search.space_for(method), search.budget(method)
        log = ProposalLog(self.store.storage, task, method)
        while len(state.params) < budget:
            in_flight = sum(1 for i in state.ids if i in self.queue.pending or i in self.queue.running)
            if in_flight >= search.max_concurrent:
                return
            history = state.history()

            def make(index: int, history=history) -> Proposal:
                params = tpe_proposal(space, history, proposal_seed(search, task, method, index),
                                      search.startup_trials)
                return Proposal(index=index, params=params, seen=len(history))

            proposal, logged = log.append(make, budget)
            self._extend(task, method, state, [p.params for p in logged])
            if proposal is None:
                return
            self._add(search_cell_pair(self.sweep, task, method, proposal.params, self.code, proposal.index))
            self._score(state)     # another driver's proposals, just seen, may be done

    def _confirm(self, task: str, method: str, state: SearchState) -> None:
        best = state.best(self.sweep.search.budget(method))
        if best is None:
            return
        state.confirmed = True
        for pair in confirm_cell_pairs(self.sweep, task, method, best, self.code):
            self._add(pair)

    def _add(self, cells: tuple[Cell, Cell | None]) -> None:
        for cell in cells:
            if cell is None:
                continue
            done = not self.store.needs_training(cell)   # a phase 1 here has a phase 2 waiting for it
            if self.queue.add(cell, cell_costs([cell])[cell.id], done=done):
                self.progress.total += 1

