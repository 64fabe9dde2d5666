"""Table 2 one link away: the link `ssmix sweep run` prints opens, in a fresh browser profile at
1280×800 with no click and no scroll, the summary runs sorted by mean accuracy with each row's
mean ± std, seeds and paired difference visible. Real MLflow server, real headless Chromium
(Debian's), driven by Playwright."""

import re
import shutil

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ssmix.cli import main
from ssmix.tracking.layout import TABLE2_TAG, table2_text
from tests.servers import mlflow_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")]
VIEWPORT = {"width": 1280, "height": 800}

# What the page shows of each row, and where: read in the browser from the grid MLflow renders.
READ_GRID = """() => {
  const box = e => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top,
                                                                   bottom: r.bottom}; };
  const headers = [...document.querySelectorAll('.ag-header-cell')].map(h => ({text: h.innerText.trim(),
                                                                             box: box(h)}));
  const rows = {};
  for (const row of document.querySelectorAll('.ag-row')) {
    const cells = rows[row.getAttribute('row-index')] = rows[row.getAttribute('row-index')] || {};
    for (const c of row.querySelectorAll('.ag-cell')) {
      const link = c.querySelector('a');
      cells[c.getAttribute('col-id')] = {text: (link || c).innerText.trim(), box: box(c),
        clipped: [c, ...c.querySelectorAll('*')].some(k => k.scrollWidth > k.clientWidth + 1)};
    }
  }
  const ordered = Object.keys(rows).sort((a, b) => a - b).map(k => rows[k]);
  return {headers, rows: ordered, scrollX: window.scrollX, scrollY: window.scrollY};
}"""


def inside(box) -> bool:
    return box["left"] >= 0 and box["top"] >= 0 and box["right"] <= VIEWPORT["width"] and \
        box["bottom"] <= VIEWPORT["height"]


def test_the_printed_link_opens_table2_in_a_fresh_browser(model_dir, data_dir, tmp_path, capsys):
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright's Python driver is not installed")
    with mlflow_server(tmp_path / "mlflow") as url:
        path = tmp_path / "link.yaml"
        path.write_text(yaml.safe_dump({
            "name": "link", "model": model_dir, "tasks": ["trec-coarse"], "methods": ["none", "ssmix"],
            "seeds": [0, 1, 2], "data_dir": str(data_dir), "storage_path": str(tmp_path / "storage"),
            "tracking_uri": url, "resources": {"cpu": 1},
            "trial": {"batch_size": 8, "eval_every": 3, "phase1": {"epochs": 1, "lr": 5e-4},
                      "phase2": {"epochs": 1, "lr": 1e-4}}}))
        assert main(["sweep", "run", "--in-process", str(path)]) == 0
        printed = capsys.readouterr().out
        (link,) = re.findall(r"Table 2 in MLflow\s+(\S+)", printed)
        assert link.startswith(url + "/#/experiments/")
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("link").experiment_id
        summaries = client.search_runs([experiment], "tags.`ssmix.kind` = 'summary'", order_by=["metrics.acc_mean DESC"])
        assert len(summaries) == 2

        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_context(viewport=VIEWPORT).new_page()     # a fresh profile
                page.goto(link)
                page.wait_for_selector(f".ag-header-cell:has-text('{TABLE2_TAG}')", timeout=60_000)
                page.wait_for_timeout(1500)          # the rows' cells settle after the header
                page.screenshot(path=str(tmp_path / "table2.png"))
                grid = page.evaluate(READ_GRID)
            finally:
                browser.close()

    assert grid["scrollX"] == 0 and grid["scrollY"] == 0
    headers = {h["text"]: h["box"] for h in grid["headers"] if h["text"]}
    for name in ("Run Name", "acc_mean", TABLE2_TAG):
        assert name in headers and inside(headers[name]), (name, headers.get(name))
    assert [row["attributes.`Run Name`"]["text"] for row in grid["rows"]] == [r.info.run_name for r in summaries]
    for row, run in zip(grid["rows"], summaries):                   # sorted by acc_mean, each row whole
        table2 = row[f"tags.`{TABLE2_TAG}`"]
        assert table2["text"] == table2_text(run.data.metrics, "none") == run.data.tags[TABLE2_TAG]
        assert inside(table2["box"]) and not table2["clipped"], table2
        assert inside(row["metrics.`acc_mean`"]["box"])
    shown = " ".join(row[f"tags.`{TABLE2_TAG}`"]["text"] for row in grid["rows"])
    assert "±" in shown and "(3)" in shown and "Δ" in shown and "the baseline" in shown  # mean ± std, seeds, difference
