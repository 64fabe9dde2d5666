"""`ssmix sweep power`: seeds planned from a pilot's spread of paired differences."""

import functools
import statistics

from ssmix.cli import main
from ssmix.stats import seeds_needed
from ssmix.sweep import ResultStore, load_sweep, plan_cells
from tests import helpers

sweep_file = functools.partial(helpers.sweep_file, name="service")


def test_power_from_the_files_own_results_and_from_a_report_csv(model_dir, data_dir, tmp_path, capsys):
    path = sweep_file(tmp_path, model_dir, data_dir, seeds=(0, 1, 2))
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    shown = {(c.kind, c.seed): store.finished(c.id).figure().value for c in plan_cells(sweep)}
    diffs = [shown[("phase2", s)] - shown[("phase1", s)] for s in (0, 1, 2)]
    capsys.readouterr()
    assert main(["sweep", "power", str(path), "--delta", "2"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| trec-coarse | ssmix λ0=0.1 vs none"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "3" and cells[3] == f"{statistics.stdev(diffs):.2f}"
    assert cells[4] == str(seeds_needed(statistics.stdev(diffs), 2.0))
    assert "true sd may be up to" in out

    # A pilot given as a report's CSV (what a colleague shares), for a file that plans 5 seeds.
    pilot = tmp_path / "pilot.csv"
    pilot.write_text("method,column,seeds\nnone,trec-coarse,0:90.0;1:91.0;2:92.0\n"
                     "ssmix,trec-coarse,0:91.0;1:91.5;2:93.5\n")
    bigger = sweep_file(tmp_path, model_dir, data_dir, name="bigger", seeds=(0, 1, 2, 3, 4))
    assert main(["sweep", "power", str(bigger), "--delta", "1", "--pilot", str(pilot)]) == 0
    out = capsys.readouterr().out
    spread = statistics.stdev([1.0, 0.5, 1.5])
    assert f"| trec-coarse | ssmix λ0=0.1 vs none | 3 | {spread:.2f} | {seeds_needed(spread, 1.0)} | ≥ " in out
    assert "what 5 seeds detect" in out


def test_power_says_what_is_wrong_with_its_input(model_dir, data_dir, tmp_path, capsys):
    path = sweep_file(tmp_path, model_dir, data_dir)
    assert main(["sweep", "power", str(path), "--delta", "1"]) == 2
    assert "has no finished results to measure a spread from" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("method,column,seeds\nssmix,trec-coarse,zero:90\n")
    assert main(["sweep", "power", str(path), "--delta", "1", "--pilot", str(bad)]) == 2
    assert f"{bad}: line 2: expected an `ssmix report` CSV" in capsys.readouterr().err
    assert main(["sweep", "power", str(path), "--delta", "-1", "--pilot", str(bad)]) == 2
    assert "--delta must be > 0" in capsys.readouterr().err


def test_power_plans_exactly_the_rows_the_report_of_the_sweep_shows(model_dir, data_dir, tmp_path, capsys):
    """EmbedMix reads no mix ratio: one row whatever the file lists; SSMix has one per λ0, and
    each row is named as every table names it."""
    from ssmix.sweep.cells import BASELINE_ROW, Row
    from ssmix.sweep.power import planned_rows

    path = sweep_file(tmp_path, model_dir, data_dir, methods=("none", "ssmix", "embedmix"), mix_ratios=[0.1, 0.3])
    sweep = load_sweep(path)
    rows = planned_rows(sweep, "trec-coarse", Row(BASELINE_ROW))
    assert [r.name for r in rows] == ["embedmix", "ssmix λ0=0.1", "ssmix λ0=0.3"]
    assert set(rows) == {c.row for c in plan_cells(sweep) if c.kind == "phase2"}    # the cells' own rows
    pilot = tmp_path / "pilot.csv"
    pilot.write_text("method,column,seeds\nnone,trec-coarse,0:90.0;1:91.0;2:92.0\n"
                     "embedmix,trec-coarse,0:91.0;1:91.5;2:93.5\nssmix λ0=0.3,trec-coarse,0:90.5;1:92.0;2:92.5\n")
    assert main(["sweep", "power", str(path), "--delta", "1", "--pilot", str(pilot)]) == 0
    table = [line.split("|")[2].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("| trec")]
    assert table == ["embedmix vs none", "ssmix λ0=0.1 vs none", "ssmix λ0=0.3 vs none"]

    # λ0 drawn from a search space: its drawn values are the rows.
    spaced = sweep_file(tmp_path, model_dir, data_dir, name="drawn", methods=("none", "ssmix"),
                        mix_ratios={"distribution": "uniform", "low": 0.1, "high": 0.5, "samples": 2, "seed": 3})
    drawn = load_sweep(spaced)
    assert [r.mix_ratio for r in planned_rows(drawn, "trec-coarse", Row(BASELINE_ROW))] == drawn.mix_ratio_values
    assert main(["sweep", "power", str(spaced), "--delta", "1", "--pilot", str(pilot)]) == 0
