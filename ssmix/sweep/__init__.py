"""The sweep service: knows cells and their dependencies, not Ray (``trainables/`` runs them).

Following one ``ssmix sweep run``: ``spec`` (the file) -> ``plan`` (cells and ids) -> ``store``
(what is done) -> ``schedule`` (what runs next) -> trainables.driver -> trainables.cell ->
ssmix.finetune -> ``store`` -> ssmix.tracking. ``preflight``, ``summary`` and ``progress`` serve
the driver and the ``status``/``plan``/``gc`` commands. Nothing here imports torch, ray or mlflow.
"""

from ssmix.sweep.plan import Cell, plan_cells
from ssmix.sweep.spec import SweepConfig, SweepError, load_sweep
from ssmix.sweep.store import ResultStore

__all__ = ["Cell", "ResultStore", "SweepConfig", "SweepError", "load_sweep", "plan_cells"]
