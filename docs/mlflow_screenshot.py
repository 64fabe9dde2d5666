"""Screenshots of a finished sweep in the MLflow UI, as a user sees it: starts `mlflow ui` on the
sweep's store (127.0.0.1, a free port), opens the experiment in headless Chromium (Debian's
`chromium`, driven by Playwright), sets the view as a user would (the model-training view, the
columns, the grouping), saves PNGs, and stops the server.

    pip install playwright        # the Python driver only: the browser is Debian's chromium
    python docs/mlflow_screenshot.py --tracking-uri sqlite:///mlflow.db --experiment quickstart --out docs/

Pictures (``--views``, default the first three):
- ``summary``: the link `ssmix sweep run` and `ssmix report` print ("Table 2 in MLflow"), opened in
  a fresh browser at 1280×800 with no click: the summary runs sorted by ``acc_mean``, each with its
  row of Table 2 (mean ± std (seeds), the paired difference to the baseline, its interval and p);
- ``chart``: the same link in the chart view (``compareRunsMode=CHART``), the assistant panel
  closed (one click) so that the charts have room;
- ``cells``: the cell runs grouped by method, with each run's ``best_acc_<split>`` (set up with
  clicks, as a user would);
- ``compare``: the compare page of the phase-2 runs whose tag ``ssmix.origin`` starts with
  --origin (a search's parallel-coordinates plot of params and metrics).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

CELLS = {"searchFilter": "tags.`ssmix.kind` LIKE 'phase%'", "orderByKey": "tags.`method`", "orderByAsc": "true"}
HIDDEN_COLUMNS = ["Dataset", "Source", "Models"]     # empty for our runs: room for the numbers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"mlflow ui at {url} did not come up in {timeout:.0f} s")


def experiment_id(tracking_uri: str, experiment: str) -> str:
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} at {tracking_uri}")
    return found.experiment_id


def compare_url(base: str, tracking_uri: str, exp_id: str, origin: str | None) -> str:
    from mlflow.tracking import MlflowClient

    query = "tags.`ssmix.kind` = 'phase2'" + (f" and tags.`ssmix.origin` LIKE '{origin}%'" if origin else "")
    runs = MlflowClient(tracking_uri=tracking_uri).search_runs([exp_id], filter_string=query, max_results=200)
    if not runs:
        raise SystemExit(f"no runs match {query!r}")
    params = urllib.parse.urlencode({"runs": json.dumps([r.info.run_id for r in runs]),
                                     "experiments": json.dumps([exp_id])})
    return f"{base}/#/compare-runs?{params}"


class Browser:
    def __init__(self, playwright, width: int, height: int):
        executable = shutil.which("chromium") or shutil.which("chromium-browser")
        if executable is None:
            raise SystemExit("chromium not found (apt-get install chromium)")
        self.browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        self.page = self.browser.new_page(viewport={"width": width, "height": height})

    def open_runs(self, url: str) -> None:
        self.page.goto(url)
        self.page.get_by_role("button", name="Group by", exact=True).wait_for(timeout=90_000)
        time.sleep(2)

    def close_assistant(self) -> None:
        """MLflow opens its assistant panel on a first visit to a local server: close it."""
        if self.page.get_by_role("button", name="Close").count():
            self.page.get_by_role("button", name="Close").click()
            time.sleep(1)

    def model_training_view(self) -> None:
        """Close the assistant panel and switch the sidebar to "Model training" (a preference
        the UI keeps in the browser, so it holds for the pages opened after)."""
        self.close_assistant()
        self.page.get_by_text("Model training", exact=True).click()
        time.sleep(1)

    def toggle_columns(self, names: list[str]) -> None:
        self.page.get_by_role("button", name="Columns", exact=True).click()
        search = self.page.get_by_placeholder("Search columns")
        for name in names:
            search.fill(name)
            time.sleep(0.4)
            # The menu highlights the match inside each entry ("phase2_<b>best_acc_test</b>"): take
            # the element whose whole entry is the name, the menu's (rendered after the table).
            matches = [el for el in self.page.get_by_text(name, exact=True).all()
                       if el.evaluate("e => e.parentElement.innerText.trim()") == name]
            matches[-1].click()
            time.sleep(0.3)
        self.page.keyboard.press("Escape")
        time.sleep(1)

    def group_by(self, tag: str) -> None:
        self.page.get_by_role("button", name="Group by", exact=True).click()
        time.sleep(0.5)
        self.page.get_by_text(tag, exact=True).last.click()
        self.page.keyboard.press("Escape")
        time.sleep(1)

    def widen_names(self, pixels: int = 170) -> None:
        """Drag the run-name column's right edge so the names are read whole."""
        header = self.page.get_by_text("Run Name", exact=True).first.bounding_box()
        if header is None:
            return
        handles = [h.bounding_box() for h in self.page.locator(".ag-header-cell-resize").all()]
        right = [h for h in handles if h is not None and h["x"] > header["x"]]
        if not right:
            return
        edge = min(right, key=lambda h: h["x"])
        x, y = edge["x"] + edge["width"] / 2, edge["y"] + edge["height"] / 2
        self.page.mouse.move(x, y)
        self.page.mouse.down()
        self.page.mouse.move(x + pixels, y, steps=8)
        self.page.mouse.up()
        time.sleep(0.5)

    def shoot(self, path: Path) -> None:
        self.page.screenshot(path=str(path))
        print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--views", nargs="+", default=["summary", "chart", "cells"],
                        choices=["summary", "cells", "chart", "compare"])
    parser.add_argument("--origin", default=None, help="compare: runs whose ssmix.origin tag starts with this")
    parser.add_argument("--out", default="docs", help="folder for mlflow-<view>.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    exp_id = experiment_id(args.tracking_uri, args.experiment)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", args.tracking_uri, "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_page = f"{base}/#/experiments/{exp_id}/runs"
    try:
        wait_healthy(base)
        best = sorted({k for r in _cell_metrics(args.tracking_uri, exp_id) for k in r if k.startswith("best_acc_")})
        from ssmix.tracking import table2_address

        link = table2_address(args.tracking_uri, args.experiment, base)
        with sync_playwright() as playwright:
            for view in args.views:
                # A fresh browser per picture: the UI remembers column choices per browser.
                browser = Browser(playwright, args.width, args.height)
                if view in ("summary", "chart"):      # the printed link (the summary: alone, no click)
                    if link is None:
                        raise SystemExit(f"experiment {args.experiment!r} has no Table 2 view: rerun its sweep")
                    browser.open_runs(link + ("&compareRunsMode=CHART" if view == "chart" else ""))
                    if view == "chart":
                        browser.close_assistant()
                        time.sleep(8)                  # the charts draw after the page
                    browser.shoot(out / f"mlflow-{view}.png")
                    browser.browser.close()
                    continue
                browser.open_runs(runs_page)
                browser.model_training_view()
                if view == "compare":
                    browser.page.goto(compare_url(base, args.tracking_uri, exp_id, args.origin))
                    time.sleep(15)
                elif view == "cells":
                    browser.open_runs(f"{runs_page}?{urllib.parse.urlencode(CELLS)}")
                    browser.toggle_columns(HIDDEN_COLUMNS + best)
                    browser.group_by("method")
                    browser.widen_names()
                browser.shoot(out / f"mlflow-{view}.png")
                browser.browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


def _cell_metrics(tracking_uri: str, exp_id: str) -> list[dict]:
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(tracking_uri=tracking_uri).search_runs(
        [exp_id], filter_string="tags.`ssmix.kind` LIKE 'phase%'", max_results=50)
    return [r.data.metrics for r in runs]


if __name__ == "__main__":
    sys.exit(main())
