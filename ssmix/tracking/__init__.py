"""MLflow logging for sweeps: the only package that imports mlflow.

What a sweep looks like in MLflow (one experiment per sweep, opening in the UI's model-training
view, its description from the sweep file):

- **One parent run per sweep** (tag ``ssmix.kind = sweep``), found again by every invocation.
  Invocations (``ssmix.sweep.invocations``) are recorded on it: an ``invocations.md`` log, the
  latest summary, counts as metrics; its status is the truth about the latest invocation.
- **One run per cell** (tag ``ssmix.cell``, the cell's content hash), reattached by a retried
  trial, a resumed sweep or a rerun. ``record_cell`` is the one operation that makes a cell's run
  match its stored result: every path (the live callback, the end-of-sweep retry, ``sweep sync``,
  a rerun) calls it, and repeating it changes nothing.
- **One summary run per (task, method, mix ratio)** (tag ``ssmix.kind = summary``): the mean,
  spread and seed count, and the paired difference to the baseline with its 95% interval and
  p-value, so that sorting the runs table by ``acc_mean`` is Table 2; a method tried in several
  configurations also carries its budget curve (``budget_*`` with step k).
- **One aggregate run per method** (tag ``ssmix.kind = aggregate``): the mean and IQM over the
  sweep's tasks with their intervals, and P(method > baseline).

Accuracies are logged in percent (``acc_<split>``); each run carries only the settings that
determine it, and the data it trained and was evaluated on as dataset inputs.

The package: ``layout`` (names, tags, params, metrics: pure), ``datasets`` (dataset inputs),
``client`` (the MLflow calls of a sweep),
``access`` (reachable, and this user's permissions), ``runs`` (paged run searches), ``read`` (runs back into report records).
"""

from ssmix.tracking.access import TrackingRefused, check_access, check_tracking_uri
from ssmix.tracking.client import SweepTracker, tracker_for
from ssmix.tracking.layout import CELL_TAG
from ssmix.tracking.read import (
    archive_superseded_runs,
    log_report_artifacts,
    read_budget_curves,
    read_sweep_runs,
    table2_address,
)
from ssmix.tracking.runs import search_cell_runs

__all__ = ["CELL_TAG", "SweepTracker", "TrackingRefused", "archive_superseded_runs", "check_access",
           "check_tracking_uri", "log_report_artifacts", "read_budget_curves", "read_sweep_runs", "search_cell_runs",
           "table2_address", "tracker_for"]
