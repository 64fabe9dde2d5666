import csv

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from ssmix.cli import main
from ssmix.report import Record, build_report
from ssmix.stats import detectable_difference, holm, paired_comparison
from ssmix.sweep.cells import row_of
from ssmix.tracking import CELL_TAG, read_sweep_runs
from ssmix.tracking.layout import result_of_metrics

SSMIX = "ssmix λ0=0.1"      # the row of SSMix at its default mix ratio


def record(task, method, seed, metrics, kind=None, mix_ratio=None, **extra):
    """A finished run as the report reads it (its figures from the metrics it logged)."""
    kind = kind or ("phase1" if method == "none" else "phase2")
    return Record(task=task, row=row_of(kind, method, mix_ratio), seed=seed, kind=kind,
                  result=result_of_metrics(metrics, kind), **extra)

# accuracy (fraction) per method and seed on trec-coarse
KNOWN = {
    "none": {0: 0.950, 1: 0.952, 2: 0.948},
    "ssmix": {0: 0.962, 1: 0.966, 2: 0.961},
    "embedmix": {0: 0.951, 1: 0.950, 2: 0.953},
    "tmix": {0: 0.955},                           # one seed only: n/a
}


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("known", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment, tags={"ssmix.kind": "sweep"}).info.run_id
    for method, seeds in KNOWN.items():
        for seed, value in seeds.items():
            kind = "phase1" if method == "none" else "phase2"
            run = client.create_run(experiment, tags={CELL_TAG: f"{method}{seed}", "task": "trec-coarse",
                                                      "method": method, "seed": str(seed), "phase": kind,
                                                      "ssmix.kind": kind, "mix_ratio": "0.1" if method == "ssmix" else ""})
            run_id = run.info.run_id
            client.log_metric(run_id, "best_acc_test", 100 * value)
            client.log_metric(run_id, "phase2_best_acc_test", 100 * value - 1)
            for step in (10, 20, 30):
                client.log_metric(run_id, "acc_test", 100 * value - 10 / step, step=step)
            client.set_terminated(run_id, "FINISHED")
    unfinished = client.create_run(experiment, tags={CELL_TAG: "x", "task": "trec-coarse", "method": "unk",
                                                     "seed": "0", "phase": "phase2", "ssmix.kind": "phase2"})
    return uri, parent, unfinished.info.run_id


def test_cells_differences_intervals_and_holm(store):
    uri, _, _ = store
    records, missing, _, _ = read_sweep_runs(uri, "known")
    assert missing == ["trec-coarse/unk/seed 0 (phase2): running"]
    report = build_report(records, missing=missing)
    assert report.rows == ["none", "embedmix", "tmix", SSMIX]
    mean, std, n = report.cell(SSMIX, "trec-coarse")
    assert n == 3 and mean == pytest.approx(np.mean([96.2, 96.6, 96.1]))
    assert std == pytest.approx(np.std([96.2, 96.6, 96.1], ddof=1))
    assert report.best_row("trec-coarse") == SSMIX

    diffs = np.array([96.2 - 95.0, 96.6 - 95.2, 96.1 - 94.8])
    c = report.comparisons[(SSMIX, "trec-coarse")]
    assert c.mean_diff == pytest.approx(diffs.mean())
    boot = stats.bootstrap((diffs,), np.mean, confidence_level=0.95, n_resamples=10_000, method="percentile",
                           random_state=0)
    assert (c.ci_low, c.ci_high) == pytest.approx((boot.confidence_interval.low, boot.confidence_interval.high))
    assert c.ci_low <= c.mean_diff <= c.ci_high
    p_ssmix = stats.ttest_rel([96.2, 96.6, 96.1], [95.0, 95.2, 94.8]).pvalue
    p_embed = stats.ttest_rel([95.1, 95.0, 95.3], [95.0, 95.2, 94.8]).pvalue
    assert c.p_value == pytest.approx(p_ssmix)
    # Holm over the two testable comparisons (tmix has one seed)
    small, large = sorted([p_ssmix, p_embed])
    expected = {p_ssmix: None, p_embed: None}
    expected[small] = min(1, 2 * small)
    expected[large] = max(expected[small], min(1, large))
    assert c.p_holm == pytest.approx(expected[p_ssmix])
    assert report.comparisons[("embedmix", "trec-coarse")].p_holm == pytest.approx(expected[p_embed])
    assert c.significant and not report.comparisons[("embedmix", "trec-coarse")].significant

    tmix = report.comparisons[("tmix", "trec-coarse")]
    assert tmix.mean_diff is None and tmix.p_value is None and tmix.n == 1


def test_holm_matches_definition():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_fewer_than_two_seeds_is_na():
    assert paired_comparison({0: 1.0}, {0: 0.5}).mean_diff is None
    assert paired_comparison({0: 1.0, 1: 2.0}, {2: 0.5, 3: 0.1}).n == 0


def test_detectable_difference_is_found_80_percent_of_the_time():
    # Simulate paired differences of exactly that true size and spread: the t-test at 0.05 finds
    # it in 80% of the simulated studies; a difference half as large mostly goes unseen.
    rng = np.random.default_rng(0)
    for n in (3, 5, 10):
        d = detectable_difference(1.5, n)
        for shift, low, high in ((d, 0.77, 0.83), (d / 2, 0.0, 0.45)):
            diffs = rng.normal(shift, 1.5, size=(20_000, n))
            found = stats.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05
            assert low < found.mean() < high, (n, shift, found.mean())
    assert detectable_difference(1.5, 10) < detectable_difference(1.5, 5) < detectable_difference(1.5, 3)
    assert detectable_difference(3.0, 5) == pytest.approx(2 * detectable_difference(1.5, 5))


def test_report_says_what_the_seeds_can_detect(store, tmp_path):
    uri, _, _ = store
    records, missing, _, _ = read_sweep_runs(uri, "known")
    report = build_report(records, missing=missing)
    c = report.comparisons[(SSMIX, "trec-coarse")]
    diffs = np.array([96.2 - 95.0, 96.6 - 95.2, 96.1 - 94.8])
    assert c.detectable == pytest.approx(detectable_difference(diffs.std(ddof=1), 3))
    assert report.comparisons[("tmix", "trec-coarse")].detectable is None      # one seed: nothing to say
    from ssmix.report import to_csv, to_markdown
    assert f"detects ≥ {c.detectable:.2f}" in to_markdown(report)
    to_csv(report, tmp_path / "t.csv")
    rows = {(r["method"], r["column"]): r for r in csv.DictReader(open(tmp_path / "t.csv"))}
    assert float(rows[(SSMIX, "trec-coarse")]["detectable_diff"]) == pytest.approx(c.detectable, abs=1e-4)


def test_phase2_control_is_its_own_row_and_can_be_the_baseline():
    from ssmix.report import to_markdown

    records = [record("rte", m, s, kind=k, metrics={"best_acc_validation": v + s})
               for m, k, v in (("none", "phase1", 50.0), ("none", "phase2", 51.0), ("ssmix", "phase2", 53.0))
               for s in range(3)]
    report = build_report(records)
    assert report.rows == ["none", "none (phase 2)", "ssmix"]
    assert report.cell("none (phase 2)", "rte")[0] == pytest.approx(52.0)    # not merged with phase 1
    assert "| No mixup, phase 2 (control) |" in to_markdown(report)
    paper_rows = [line for line in to_markdown(report, with_paper=True).splitlines() if line.startswith("| ↳ paper")]
    # the control is not in the paper
    assert paper_rows == ["| ↳ paper | 65.56 |", "| ↳ paper | – |", "| ↳ paper | 67.22 |"]
    against_control = build_report(records, baseline="none (phase 2)")
    assert against_control.comparisons[("ssmix", "rte")].mean_diff == pytest.approx(2.0)


def test_phase2_only_figure(store):
    uri, _, _ = store
    records, _, _, _ = read_sweep_runs(uri, "known")
    report = build_report(records, phase2_only=True)
    assert report.cell(SSMIX, "trec-coarse")[0] == pytest.approx(np.mean([95.2, 95.6, 95.1]))
    assert report.cell("none", "trec-coarse")[0] == pytest.approx(95.0)   # phase-1 runs keep their figure
    # The paper's figure is the best over both phases: beside phase 2's own best it would mislead.
    from ssmix.report import to_html, to_markdown
    text = to_markdown(report, with_paper=True)
    assert "↳ paper" not in text and "phase 2's own best" in text and "no paper figures" in text
    assert "↳ paper" not in to_html(report, [], "t", with_paper=True)
    assert "↳ paper" in to_markdown(build_report(records), with_paper=True)


def test_report_command_writes_files_logs_them_and_plots_are_images(store, tmp_path, capsys):
    uri, parent, _ = store
    out = tmp_path / "report"
    assert main(["report", "known", "--tracking-uri", uri, "--paper", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| SSMix λ0=0.1 | **96.30 ± 0.26 (3)** |" in printed
    assert "↳ paper | 97.60" in printed
    assert "n/a (n=1)" in printed and "Not finished (1)" in printed
    for name in ("report.md", "report.csv", "report.html", "accuracy.png", "curves.png"):
        assert (out / name).stat().st_size > 0
    rows = list(csv.DictReader(open(out / "report.csv")))
    assert {r["method"] for r in rows} == {"none", "embedmix", "tmix", SSMIX}
    from PIL import Image

    with Image.open(out / "accuracy.png") as image:
        assert image.size[0] >= 400 and image.size[1] >= 300
    logged = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(parent, "report")}
    assert "report/report.html" in logged and "report/accuracy.png" in logged


def test_unknown_experiment_is_one_clear_error(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["report", "nope", "--tracking-uri", uri]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err


def test_anli_has_dev_and_test_columns_per_round_with_paper_numbers():
    from ssmix.report import to_markdown

    splits = ["dev_r1", "dev_r2", "dev_r3", "test_r1", "test_r2", "test_r3"]
    records = [record("anli", m, s, metrics={"best_selection_acc": 50, **{f"best_acc_{x}": 50 + i + 0.1 * s
                                                            for i, x in enumerate(splits)}})
               for m in ("none", "ssmix") for s in (0, 1)]
    report = build_report(records)
    assert report.columns == [f"anli {x}" for x in splits]
    assert report.cell("ssmix", "anli test_r2")[0] == pytest.approx(54 + 0.05)
    text = to_markdown(report, with_paper=True)
    assert "anli dev_r1" in text and "57.26" in text and "48.06" in text     # SSMix dev r1, test r2


def test_two_seeds_bold_nothing_and_say_why(tmp_path):
    from ssmix.report import to_html, to_markdown

    values = {"none": {0: 90.0, 1: 90.5}, "ssmix": {0: 95.0, 1: 96.0}}     # a large gap, but n = 2
    records = [record("trec-coarse", m, s, metrics={"best_acc_test": v}) for m, seeds in values.items()
               for s, v in seeds.items()]
    report = build_report(records)
    c = report.comparisons[("ssmix", "trec-coarse")]
    assert c.mean_diff == pytest.approx(5.25) and c.p_value is None and c.ci_low is None and not c.significant
    text = to_markdown(report, with_paper=True)
    assert "**" not in text and "no difference can be significant" in text
    assert "95.50 ± 0.71 (2) †" in text and "+5.25 (n=2, no test)" in text
    page = to_html(report, [], "t", with_paper=True)
    assert "class='bold'" not in page and "↳ paper" in page and "97.60" in page     # the paper rows too


def test_bold_needs_a_significant_paired_difference():
    # ssmix has the highest mean but its seeds straddle the baseline's: not significant, so †
    values = {"none": {0: 90.0, 1: 91.0, 2: 92.0}, "ssmix": {0: 93.0, 1: 89.0, 2: 92.5}}
    records = [record("trec-coarse", m, s, metrics={"best_acc_test": v}) for m, seeds in values.items()
               for s, v in seeds.items()]
    report = build_report(records)
    assert report.testable and report.emphasis("ssmix", "trec-coarse") == "best"


def test_paper_trec_fine_figure_only_beside_the_47_class_task():
    from ssmix.report import paper_value, to_markdown

    assert paper_value("ssmix", "trec-fine") is None and paper_value("ssmix", "trec-fine-47") == 90.24
    records = [record("trec-fine", m, s, metrics={"best_acc_test": 80.0 + s}, model="minilm")
               for m in ("none", "ssmix") for s in (0, 1)]
    text = to_markdown(build_report(records), with_paper=True, models={"minilm"})
    assert "90.24" not in text and "86.68" not in text                  # no 47-class figure beside 50 classes
    assert "TREC-f (50): 50 classes; the paper's TREC-f has 47" in text
    assert "model: ours minilm; the paper's BERT-base-uncased" in text


def test_table2_sweep_has_the_papers_figure_for_every_method_and_column():
    """sweeps/table2.yaml is the paper's Table 2: each of its tasks and methods meets a paper
    figure in the report (ANLI per round and split), none left blank for want of a matching task."""
    from pathlib import Path

    from ssmix.report import paper_value
    from ssmix.sweep import load_sweep
    from ssmix.tasks import TASKS

    sweep = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "table2.yaml")
    assert len(sweep.tasks) == 9 and "trec-fine-47" in sweep.tasks and "trec-fine" not in sweep.tasks
    for task in sweep.tasks:
        columns = [f"{task} {split}" for split in TASKS[task].eval_splits] if task == "anli" else [task]
        for column in columns:
            for method in sweep.methods:
                assert paper_value(method, column) is not None, (method, column)


def test_across_tasks_table_intervals_and_budget_plot_in_the_report(tmp_path, capsys):
    """Two tasks: the aggregate over every (task, seed) score and P(X > none) as rliable defines
    them, a comparison asked for, and the budget curve a summary run carries, drawn."""
    from ssmix.stats import across_tasks, budget_curve

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("two", artifact_location=(tmp_path / "artifacts").as_uri())
    client.create_run(experiment, tags={"ssmix.kind": "sweep"})
    scores = {"none": {"trec-coarse": [95.0, 95.2, 94.8], "rte": [70.0, 71.0, 69.0]},
              "ssmix": {"trec-coarse": [96.2, 96.6, 96.1], "rte": [71.5, 70.5, 72.0]},
              "embedmix": {"trec-coarse": [95.1, 95.0, 95.3], "rte": [70.0, 72.0, 69.5]}}
    for method, tasks in scores.items():
        for task, values in tasks.items():
            for seed, value in enumerate(values):
                kind = "phase1" if method == "none" else "phase2"
                run = client.create_run(experiment, tags={CELL_TAG: f"{method}{task}{seed}", "task": task,
                                                          "method": method, "seed": str(seed), "phase": kind,
                                                          "ssmix.kind": kind})
                split = "test" if task == "trec-coarse" else "validation"
                client.log_metric(run.info.run_id, f"best_acc_{split}", value)
                client.set_terminated(run.info.run_id, "FINISHED")
    curve = budget_curve([90.0, 92.0, 91.0], [89.0, 90.5, 90.0])
    summary = client.create_run(experiment, tags={"ssmix.kind": "summary", "task": "trec-coarse", "method": "ssmix"})
    client.log_metric(summary.info.run_id, "budget_trials", 3)
    for point in curve:
        client.log_metric(summary.info.run_id, "budget_best_selection", point.expected_best, step=point.k)
        client.log_metric(summary.info.run_id, "budget_best_selection_low", point.expected_best - point.std, step=point.k)
        client.log_metric(summary.info.run_id, "budget_best_selection_high", point.expected_best + point.std,
                          step=point.k)
        client.log_metric(summary.info.run_id, "budget_reported_acc", point.expected_reported, step=point.k)
    out = tmp_path / "report"
    assert main(["report", "two", "--tracking-uri", uri, "--out", str(out), "--no-log",
                 "--compare", "ssmix:embedmix"]) == 0
    printed = capsys.readouterr().out
    pooled = across_tasks({t: scores["ssmix"][t] for t in ("rte", "trec-coarse")}, "mean")   # the table's order
    assert pooled.value == pytest.approx(np.mean(scores["ssmix"]["trec-coarse"] + scores["ssmix"]["rte"]))
    line = next(line for line in printed.splitlines() if line.startswith("| SSMix | RTE, TREC-c"))
    assert f"{pooled.value:.2f} [{pooled.low:.2f}, {pooled.high:.2f}]" in line
    # P(SSMix > none): TREC-c 9/9 pairs above; RTE: 8 of 9 pairs above (71.5, 70.5, 72.0 vs 70, 71, 69)
    assert f"| {(1.0 + 8 / 9) / 2:.2f} [" in line
    assert "P(SSMix > EmbedMix) = " in printed and "budget.png" in printed
    for name in ("across_tasks.png", "budget.png"):
        assert (out / name).stat().st_size > 10_000
    assert main(["report", "two", "--tracking-uri", uri, "--compare", "ssmix:mixup"]) == 2
    assert "--compare names 'mixup', which is not a row of this report" in capsys.readouterr().err


def test_the_report_reads_every_run_page_by_page_and_curves_of_a_bounded_number_of_seeds(store, monkeypatch):
    """Reading a sweep stays linear in its runs: searches page (a page here: 2 runs, of 11), and
    the learning curves, one request per run, are read for the first CURVE_SEEDS seeds per task."""
    from ssmix.tracking import read
    from ssmix.tracking import runs as tracking_runs

    uri, _, _ = store
    monkeypatch.setattr(tracking_runs, "SEARCH_PAGE", 2)
    monkeypatch.setattr(read, "CURVE_SEEDS", 2)
    asked = []
    history = MlflowClient.get_metric_history
    monkeypatch.setattr(MlflowClient, "get_metric_history",
                        lambda self, run_id, key: asked.append(run_id) or history(self, run_id, key))
    records, missing, _, _ = read_sweep_runs(uri, "known")
    assert len(records) == 10 and len(missing) == 1                 # every run, over six pages
    with_curves = [r for r in records if r.curve]
    assert len(asked) == len(with_curves) == 7 and {r.seed for r in with_curves} == {0, 1}
