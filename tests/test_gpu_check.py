"""The GPU check cannot rot: run on CPU with a tiny model, it writes every figure."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ssmix.methods import METHODS

pytestmark = pytest.mark.slow   # a dozen model builds and two worker processes: about a minute

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_on_cpu_writes_every_figure(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--tiny",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["errors"] == {}
    assert set(report["peak"]) == {"bf16", "fp32", "tf32"} and all(v > 0 for v in report["peak"].values())
    steps = report["steps"]
    assert {(r["precision"], r["method"]) for r in steps} == {(p, m) for p in ("fp32", "bf16") for m in METHODS}
    for row in steps:
        for key in ("median_ms", "tokens_per_s", "mfu", "vs_none", "vs_embedmix"):
            assert math.isfinite(row[key]) and row[key] > 0, (row, key)
    assert report["host_sync"]["checked"] is False            # nothing to wait on without a device
    assert report["mixers"]["all_equal"] is True
    assert [r["k"] for r in report["sharing"]] == [1, 2] and all(r["steps_per_s"] > 0 for r in report["sharing"])
    toggles = report["toggles"]
    assert {"fp32 tf32=False", "fp32 tf32=True", "bf16 fused AdamW=False", "bf16 fused AdamW=True"} <= set(toggles)
    assert set(toggles["batch copy ms"]) == {"pinned=False", "pinned=True"}
    assert toggles["compile"]["compile_s"] > 0 and toggles["compile"]["graphs_added_over_5_lengths"] >= 0
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "| batch × length |" in markdown and "steps/s in all" in markdown and "failed" not in markdown
