"""Who made a run and where a new experiment keeps its artifacts."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from mlflow.utils.mlflow_tags import MLFLOW_USER


def creator_tags() -> dict[str, str]:
    """Who made a run, as MLflow's own fluent API records it (its UI's User column; MlflowClient
    leaves it "unknown"): the account on a server with accounts, else the OS user."""
    return {MLFLOW_USER: os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()}


def artifact_location(tracking_uri: str, experiment_name: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store's database file (MLflow's
    default is ./mlruns of whatever directory the driver runs in); a server decides its own."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///")).expanduser().resolve()
    return (database.parent / "mlartifacts" / experiment_name).as_uri()
