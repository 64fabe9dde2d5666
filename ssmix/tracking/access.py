"""Before a sweep touches MLflow: the tracking store can be reached, and on a server with
accounts this user may read and log to the sweep's experiment. Each refusal is one line."""

from __future__ import annotations

import os

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ssmix.sweep.spec import shown_uri
from ssmix.tracking.runs import TRANSPORT_ERRORS, http_status


class TrackingRefused(ConnectionError):
    """The tracking server answered, and refused this user: their error (exit 2), not an outage."""


def check_tracking_uri(uri: str, timeout: float = 10.0) -> None:
    """Fail fast, with one line, when the tracking store cannot be reached."""
    import urllib.request

    shown = shown_uri(uri)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                if response.status == 200:
                    return
        except OSError as err:
            raise ConnectionError(f"MLflow tracking server {shown} is unreachable ({getattr(err, 'reason', err)})") \
                from None
        raise ConnectionError(f"MLflow tracking server {shown} did not answer /health with 200")
    if uri.startswith("sqlite:///"):
        folder = os.path.dirname(os.path.abspath(uri[len("sqlite:///"):]))
        if not os.path.isdir(folder):
            raise ConnectionError(f"MLflow tracking URI {shown}: folder {folder} does not exist")
        return
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except TRANSPORT_ERRORS as err:
        raise ConnectionError(f"MLflow tracking URI {shown} is unusable ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None


def check_access(uri: str, experiment: str, write: bool = True) -> None:
    """On a server with accounts (``mlflow server --app-name basic-auth``), before anything runs:
    the credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD are accepted (else
    401), and this user may read ``experiment`` and, with ``write``, log to it (else 403); each
    refusal is one line naming what is missing. A new experiment is its creator's. A file or
    database store has no accounts: nothing to check."""
    if not uri.startswith(("http://", "https://")):
        return
    client = MlflowClient(tracking_uri=uri)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    who = f"user {user!r}" if user else "a client without MLFLOW_TRACKING_USERNAME"
    step = "read"
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            client.search_experiments(max_results=1)
        elif write:
            step = "log to"     # the same value each time: a write that changes nothing
            client.set_experiment_tag(found.experiment_id, "ssmix.sweep", experiment)
    except MlflowException as err:
        status = http_status(err)
        if status == 401:
            raise TrackingRefused(f"MLflow at {shown_uri(uri)} refused the credentials of {who} (401): set "
                                  f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to your account on that "
                                  f"server") from None
        if status == 403:
            needs = "EDIT" if step == "log to" else "READ"
            raise TrackingRefused(f"MLflow {who} may not {step} experiment {experiment!r} at {shown_uri(uri)} (403): "
                                  f"it needs {needs} on it, from its owner or an admin (docs/clusters.md), or name "
                                  f"another experiment") from None
        raise
