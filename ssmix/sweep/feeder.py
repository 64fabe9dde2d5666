"""Cells a search makes while the sweep runs: adaptive proposals while the budget of a (task,
method) lasts (at most ``max_concurrent`` in flight), and the confirmation cells once its search is
complete. Every proposal is logged before it is queued (``ssmix.sweep.search``)."""

from __future__ import annotations

from ssmix.sweep.cells import Cell
from ssmix.sweep.plan import best_proposal, confirm_cell_pairs, search_cell_pair, search_proposals
from ssmix.sweep.progress import Progress
from ssmix.sweep.schedule import CellQueue, cell_costs
from ssmix.sweep.search import Proposal, ProposalLog, proposal_seed
from ssmix.sweep.spec import SweepConfig
from ssmix.sweep.store import ResultStore
from ssmix.sweep.tpe import tpe_proposal


class SearchFeeder:
    def __init__(self, sweep: SweepConfig, store: ResultStore, queue: CellQueue, progress: Progress, code: str):
        self.sweep, self.store, self.queue, self.progress, self.code = sweep, store, queue, progress, code
        self.confirmed: set[tuple[str, str]] = set()

    def top_up(self) -> None:
        if self.sweep.search is None:
            return
        for task, method, proposals in search_proposals(self.sweep, self.store):
            if self.sweep.search.algorithm == "tpe":
                proposals = self._propose(task, method, proposals)
            self._confirm(task, method, proposals)

    def _propose(self, task: str, method: str, proposals: list[dict]) -> list[dict]:
        search = self.sweep.search
        space = search.space_for(method)
        log = ProposalLog(self.store.storage, task, method)
        while True:
            ids = [search_cell_pair(self.sweep, task, method, p, self.code)[1].id for p in proposals]
            in_flight = sum(1 for i in ids if i in self.queue.pending or i in self.queue.running)
            if in_flight >= search.max_concurrent:
                return proposals
            results = [(p, self.store.done(i)) for p, i in zip(proposals, ids)]
            history = [(p, r.objective()) for p, r in results if r is not None and r.objective() is not None]

            def make(index: int, history=history) -> Proposal:
                params = tpe_proposal(space, history, proposal_seed(search, task, method, index),
                                      search.startup_trials)
                return Proposal(index=index, params=params, seen=len(history))

            proposal = log.append(make, search.budget(method))
            if proposal is None:
                return proposals
            self._add(search_cell_pair(self.sweep, task, method, proposal.params, self.code, proposal.index))
            proposals = [p.params for p in log.read()]

    def _confirm(self, task: str, method: str, proposals: list[dict]) -> None:
        if (task, method) in self.confirmed:
            return
        best = best_proposal(self.sweep, task, method, proposals, self.store, self.code)
        if best is None:
            return
        self.confirmed.add((task, method))
        for pair in confirm_cell_pairs(self.sweep, task, method, best, self.code):
            self._add(pair)

    def _add(self, cells: tuple[Cell, Cell | None]) -> None:
        for cell in cells:
            if cell is None:
                continue
            done = not self.store.needs_training(cell)   # a phase 1 here has a phase 2 waiting for it
            if self.queue.add(cell, cell_costs([cell])[cell.id], done=done):
                self.progress.total += 1
