"""The sweep service: knows cells and their dependencies, not Ray (``trainables/`` runs them).

Following one ``ssmix sweep run``: ``spec`` (the file) -> ``plan`` (cells and ids) -> ``store``
(what is done) -> ``invocation`` (its record) -> ``schedule`` (what runs next) -> trainables.driver
(or ``local``, in process) -> ssmix.cell_training -> ``store`` -> ``events`` -> ssmix.tracking ->
``closing``. ``preflight``, ``summary`` and ``progress`` serve the runners and the
``status``/``plan``/``gc`` commands. Nothing here imports torch, ray, mlflow or ssmix.tracking:
MLflow is reached through the tracker the caller hands to ``Invocation``.
"""

from ssmix.sweep.cells import Cell, CellResult
from ssmix.sweep.plan import plan_cells
from ssmix.sweep.spec import SweepConfig, SweepError, load_sweep
from ssmix.sweep.store import ResultStore

__all__ = ["Cell", "CellResult", "ResultStore", "SweepConfig", "SweepError", "load_sweep", "plan_cells"]
