"""Reading a sweep's runs back from MLflow, and what an MLflow error means: shared by the tracker,
the access checks and the report's reader."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ssmix.tracking.layout import CELL_TAG

# What "MLflow did not answer" means: MLflow's own errors (a server's error answers, a store that
# fails, a connection MLflow gave up on) and the OS's (a refused or reset connection, a timeout).
# Anything else raised in here is a bug and propagates as it is.
TRANSPORT_ERRORS = (MlflowException, OSError)


def http_status(err: Exception) -> int | None:
    """The HTTP status a tracking server answered with, where the error carries one (MLflow's REST
    errors; the artifact proxy's, raised by requests)."""
    if isinstance(err, MlflowException):
        return err.get_http_status_code()
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)



def search_cell_runs(client: MlflowClient, experiment_id: str, condition: str = "") -> list:
    """Every cell run of the experiment (optionally those matching ``condition`` too)."""
    query = f"tags.`{CELL_TAG}` != ''" + (f" and {condition}" if condition else "")
    return all_runs(client, experiment_id, query)


SEARCH_PAGE = 10_000     # runs per search request (a server allows up to 50,000)


def all_runs(client: MlflowClient, experiment_id: str, query: str) -> list:
    """Every run matching ``query``, page after page (one request returns at most a page)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=SEARCH_PAGE, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs
