"""Hyperparameter search: grid, seeded random and TPE proposals as ordinary cells, exactly once."""

import os
import signal

import pytest

from ssmix.cli import main
from ssmix.sweep import ResultStore, SweepError, load_sweep, plan_cells
from ssmix.sweep.search import ProposalLog
from tests.helpers import drain, read_until, sweep_file, sweep_process

SPACE = {"phase2.lr": {"distribution": "loguniform", "low": 1e-5, "high": 1e-3},
         "mix_ratio": {"distribution": "uniform", "low": 0.1, "high": 0.5}}


def search_file(tmp, model_dir, data_dir, search, name="search", methods=("ssmix",), seeds=None, **extra):
    trial = {"batch_size": 8, "eval_every": 3, "phase1": {"epochs": 1, "lr": 5e-4}, "phase2": {"epochs": 1}}
    return sweep_file(tmp, model_dir, data_dir, name=name, methods=methods, seeds=seeds, trial=trial, search=search,
                      **extra)


def search_cells(path):
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    return sweep, store, [c for c in plan_cells(sweep, store=store) if c.is_proposal]


def test_tpe_budget_reruns_nothing_and_a_larger_budget_sees_every_earlier_result(model_dir, data_dir,
                                                                                  tmp_path, capsys):
    tpe = {"algorithm": "tpe", "trials": 6, "seed": 1, "max_concurrent": 2, "startup_trials": 2, "space": SPACE,
           "confirm_seeds": [1, 2]}
    path = search_file(tmp_path, model_dir, data_dir, tpe)
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    sweep, store, cells = search_cells(path)
    assert len(cells) == 6 and all(store.finished(c.id) for c in cells)
    lrs = {c.trial["phase2"]["lr"] for c in cells}
    assert len(lrs) == 6 and all(1e-5 <= lr <= 1e-3 for lr in lrs)         # six distinct proposals in the space
    confirm = [c for c in plan_cells(sweep, store=store) if c.origin == "confirm"]
    assert sorted(c.seed for c in confirm if c.kind == "phase2") == [1, 2]
    best = max(cells, key=lambda c: store.result(c.id).objective())
    for cell in confirm:                                    # the best configuration, on other seeds
        if cell.kind == "phase2":
            assert cell.mix_ratio == best.mix_ratio and cell.trial["phase2"]["lr"] == best.trial["phase2"]["lr"]
    assert all(store.finished(c.id) for c in confirm)
    out = capsys.readouterr().out
    assert "trec-coarse / ssmix: 6 of 6 trials with a result" in out and "confirmation on 2 seeds" in out

    assert main(["sweep", "run", "--in-process", str(path)]) == 0                           # rerun: nothing to train
    assert "0 to train" in capsys.readouterr().out

    path = search_file(tmp_path, model_dir, data_dir, {**tpe, "trials": 8})
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    sweep, store, more = search_cells(path)
    assert len(more) == 8 and {c.id for c in cells} < {c.id for c in more}  # the 6 kept, 2 new
    log = ProposalLog(store.storage, "trec-coarse", "ssmix").read()
    assert [p.index for p in log] == list(range(8))
    assert [p.seen for p in log[6:]] == [6, 6]                              # the study held all 6 results
    for cell in more:
        assert len(store.attempts(cell.id)) == 1

    # MLflow: searched settings as numeric params, the proposal's origin as a tag, the best on the parent.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sweep.tracking)
    experiment = client.get_experiment_by_name("search")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`ssmix.origin` LIKE 'search%'")
    assert len(runs) == 8
    assert {float(r.data.params["phase2.lr"]) for r in runs} == {c.trial["phase2"]["lr"] for c in more}
    parent = client.search_runs([experiment.experiment_id], filter_string="tags.`ssmix.kind` = 'sweep'",
                                order_by=["attributes.start_time DESC"], max_results=1)[0]
    summary = client.download_artifacts(parent.info.run_id, "summary.md", str(tmp_path / "dl"))
    assert "best: trial" in open(summary).read()

    # The budget grew: the plan was incomplete when the invocation began and complete when it
    # ended. No run of the final plan is left tagged superseded (the confirmation runs of the
    # 6-trial search stay only where the best configuration changed), and the report counts the same.
    from ssmix.tracking import read_sweep_runs, search_cell_runs

    final = {c.id for c in plan_cells(sweep, store=store)}
    cell_runs = search_cell_runs(client, experiment.experiment_id)
    tagged = {r.data.tags["ssmix.cell"] for r in cell_runs if "ssmix.superseded" in r.data.tags}
    assert not tagged & final
    assert tagged == {r.data.tags["ssmix.cell"] for r in cell_runs} - final
    records, _, _, left_out = read_sweep_runs(sweep.tracking, "search", with_curves=False)
    assert left_out == len(tagged)
    rows = [c for c in plan_cells(sweep, store=store) if not c.is_proposal]
    assert len(records) == len(rows)     # every cell of the final plan the report shows, once (proposals: none)


def test_tpe_proposal_depends_only_on_seed_and_finished_results():
    from ssmix.sweep.search import Dimension
    from ssmix.sweep.tpe import tpe_proposal

    space = {"phase2.lr": Dimension(distribution="loguniform", low=1e-5, high=1e-3),
             "batch_size": Dimension(distribution="choice", values=[8, 16, 32])}
    history = [({"phase2.lr": 1e-4 * (i + 1), "batch_size": [8, 16, 32][i % 3]}, 0.5 + 0.05 * i) for i in range(5)]
    first = tpe_proposal(space, history, seed=7, startup_trials=2)
    assert tpe_proposal(space, history, seed=7, startup_trials=2) == first
    assert first["batch_size"] in (8, 16, 32) and 1e-5 <= first["phase2.lr"] <= 1e-3
    assert tpe_proposal(space, history[:3], seed=7, startup_trials=2) != first   # results change proposals


@pytest.mark.slow
def test_driver_killed_mid_search_finishes_the_budget_on_rerun(model_dir, data_dir, tmp_path):
    tpe = {"algorithm": "tpe", "trials": 4, "max_concurrent": 2, "startup_trials": 2, "space": SPACE}
    path = search_file(tmp_path, model_dir, data_dir, tpe, name="killed")
    process = sweep_process(path, in_process=True)          # killed in process, finished on Ray
    for _ in range(2):                                     # phase 1 and a proposal finished
        read_until(process, "[sweep] finished")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    sweep, store, before = search_cells(path)
    done_before = {c.id for c in before if store.result(c.id) is not None}
    assert done_before and len(before) < 4

    again = sweep_process(path)
    out = drain(again)
    assert again.returncode == 0, out[-3000:]
    sweep, store, after = search_cells(path)
    assert len(after) == 4 and all(store.finished(c.id) for c in after)
    for cell in after:
        attempts = store.attempts(cell.id)
        if cell.id in done_before:
            assert len(attempts) == 1, cell.label          # finished before the kill: not trained again
        else:
            assert len(attempts) <= 2, cell.label          # at most: started before the kill, resumed after
    assert len(ProposalLog(store.storage, "trec-coarse", "ssmix").read()) == 4


def test_grid_and_random_give_the_same_cells_on_every_run(model_dir, data_dir, tmp_path):
    grid = {"algorithm": "grid", "space": {"phase2.lr": {"distribution": "choice", "values": [1e-5, 1e-4]},
                                           "mix_ratio": {"distribution": "choice", "values": [0.1, 0.3, 0.5]}}}
    path = search_file(tmp_path, model_dir, data_dir, grid, methods=("ssmix", "embedmix"))
    ids = [c.id for c in search_cells(path)[2]]
    assert ids == [c.id for c in search_cells(path)[2]]
    # ssmix: 2 x 3 combinations; embedmix ignores the mix ratio: 2
    assert len([c for c in search_cells(path)[2] if c.method == "ssmix"]) == 6
    assert len([c for c in search_cells(path)[2] if c.method == "embedmix"]) == 2

    random4 = {"algorithm": "random", "trials": 4, "seed": 3, "space": SPACE}
    path = search_file(tmp_path, model_dir, data_dir, random4, name="random")
    first = [c.id for c in search_cells(path)[2]]
    assert first == [c.id for c in search_cells(path)[2]] and len(set(first)) == 4
    path = search_file(tmp_path, model_dir, data_dir, {**random4, "trials": 6}, name="random")
    assert [c.id for c in search_cells(path)[2]][:4] == first          # a larger budget keeps the first draws


def test_bad_search_block_gets_one_clear_message(model_dir, data_dir, tmp_path):
    bad = {"algorithm": "grid", "trials": 3,
           "space": {"phase3.lr": {"distribution": "uniform", "low": 0.1, "high": 0.2},
                     "phase2.lr": {"distribution": "loguniform", "low": 0, "high": 1e-3}}}
    path = search_file(tmp_path, model_dir, data_dir, bad)
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    message = str(err.value)
    assert "search.space.phase2.lr: Value error, loguniform needs low > 0" in message or \
        "search.space.phase2.lr: loguniform needs low > 0" in message
    path = search_file(tmp_path, model_dir, data_dir, {"algorithm": "tpe", "space": SPACE}, seeds=[0, 1])
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    assert "tpe needs a budget" in str(err.value)
    path = search_file(tmp_path, model_dir, data_dir, {"algorithm": "random", "trials": 2, "space": {
        "batch_size": {"distribution": "int", "low": 1, "high": 8}}})
    with pytest.raises(SweepError, match=r"search.space.batch_size: value 1: .*greater than or equal to 2"):
        load_sweep(path)
    path = search_file(tmp_path, model_dir, data_dir, {"algorithm": "random", "trials": 2, "space": SPACE},
                       seeds=[0, 1])
    with pytest.raises(SweepError, match="with `search`, leave out seeds"):
        load_sweep(path)


def test_dev_split_search_shows_one_figure_per_cell_everywhere_named_by_its_split(model_dir, data_dir, tmp_path,
                                                                                 capsys):
    """selection: dev-split selects on a held-out part of train; every table shows the test
    accuracy at that checkpoint, labelled test: the closing table, `sweep status`, the MLflow
    summary runs and the report. A search's proposals are no table's rows (`sweep best`'s)."""
    import statistics

    from mlflow.tracking import MlflowClient

    from ssmix.report import build_report, to_markdown
    from ssmix.tracking import read_sweep_runs

    grid = {"algorithm": "grid", "selection": "dev-split", "confirm_seeds": [1, 2],
            "space": {"phase2.lr": {"distribution": "choice", "values": [1e-4]}}}
    path = search_file(tmp_path, model_dir, data_dir, grid, name="devsplit")
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    closing = capsys.readouterr().out
    assert main(["sweep", "status", str(path)]) == 0
    status = capsys.readouterr().out
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    cells = plan_cells(sweep, store=store)
    rows = {"none": [c for c in cells if c.kind == "phase1"],                    # seeds 0 (the search's), 1, 2
            "ssmix λ0=0.1": [c for c in cells if c.origin == "confirm" and c.kind == "phase2"]}     # seeds 1, 2
    assert [sorted(c.seed for c in v) for v in rows.values()] == [[0, 1, 2], [1, 2]]
    client = MlflowClient(tracking_uri=sweep.tracking)
    experiment = client.get_experiment_by_name("devsplit").experiment_id
    summaries = {r.data.tags["method"]: r for r in client.search_runs([experiment], "tags.`ssmix.kind` = 'summary'")}
    records, _, _, _ = read_sweep_runs(sweep.tracking, "devsplit", with_curves=False)
    report = build_report(records)
    assert "TREC-c test" in to_markdown(report)
    for row, row_cells in rows.items():
        results = [store.finished(c.id) for c in row_cells]
        assert all(set(r.accuracy()) == {"dev", "test"} for r in results)
        test = [r.accuracy()["test"] for r in results]          # not dev
        assert [r.figure().value for r in results] == test and {r.figure().split for r in results} == {"test"}
        mean, std = statistics.mean(test), statistics.stdev(test)
        line = f"| trec-coarse  | {row:<28} | test       | {f'{mean:.2f} ± {std:.2f}':>24} | {len(test):>2} |"
        assert line in closing, closing[-2000:]
        assert line in status, status[-2000:]
        summary = summaries[row.split(" ")[0]]
        assert summary.data.metrics["acc_mean"] == pytest.approx(mean) and summary.data.tags["ssmix.split"] == "test"
        assert summary.data.metrics["n_seeds"] == len(test)
        assert report.cell(row, "trec-coarse")[:2] == (pytest.approx(mean), pytest.approx(std))


@pytest.mark.slow
def test_tpe_proposes_what_ray_tunes_optuna_searcher_proposed():
    """Proposals made with Optuna directly are the ones the sweep made through Ray Tune's
    OptunaSearch (same seed, same finished results): a search resumed on new code goes on as it was."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from ray.tune.search.optuna import OptunaSearch

    from ssmix.sweep.search import Dimension
    from ssmix.sweep.tpe import tpe_proposal

    space = {"phase2.lr": Dimension(distribution="loguniform", low=1e-6, high=1e-3),
             "mix_ratio": Dimension(distribution="uniform", low=0.05, high=0.5),
             "phase2.epochs": Dimension(distribution="int", low=1, high=5),
             "saliency": Dimension(distribution="choice", values=["free", "separate"])}
    distributions = {"phase2.lr": FloatDistribution(1e-6, 1e-3, log=True), "mix_ratio": FloatDistribution(0.05, 0.5),
                     "phase2.epochs": IntDistribution(1, 5), "saliency": CategoricalDistribution([0, 1])}

    def through_ray(history, seed):
        import optuna

        searcher = OptunaSearch(space=distributions, metric="objective", mode="max",
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3))
        for params, value in history:
            searcher.add_evaluated_point({**params, "saliency": space["saliency"].values.index(params["saliency"])},
                                         value)
        proposed = searcher.suggest("next")
        return {**proposed, "saliency": space["saliency"].values[proposed["saliency"]]}

    history = []
    for k in range(12):
        ours = tpe_proposal(space, history, seed=100 + k, startup_trials=3)
        assert ours == through_ray(history, 100 + k), k
        history.append((ours, (k * 37 % 11) / 11))


def test_a_tpe_proposal_reads_the_same_few_results_however_many_came_before(tmp_path):
    """The feeder keeps each search's state: a proposal reads only the results of the cells that
    ended since the last one, not the whole store (the proposal log is read once per proposal)."""
    from ssmix.sweep.feeder import SearchFeeder
    from ssmix.sweep.progress import Progress
    from ssmix.sweep.schedule import CellQueue
    from ssmix.sweep.storage import PosixStorage
    from tests.helpers import finished_result

    class CountingStorage(PosixStorage):
        reads = 0

        def read_bytes(self, key):
            CountingStorage.reads += 1
            return super().read_bytes(key)

    tpe = {"algorithm": "tpe", "trials": 40, "seed": 3, "max_concurrent": 2, "startup_trials": 4, "space": SPACE}
    sweep = load_sweep(search_file(tmp_path, "tiny-model", None, tpe))
    store = ResultStore(CountingStorage(tmp_path / "storage"))
    queue = CellQueue([], {})
    feeder = SearchFeeder(sweep, store, queue, Progress(0, 0, live=False), code="test")
    reads, proposals = [], 0
    while (cell := (feeder.top_up(), queue.pop())[1]) is not None:
        before = CountingStorage.reads
        if cell.is_proposal:
            proposals += 1
            # a result that depends on the proposal: the sampler has something to model
            store.write_result(cell, finished_result(accuracy=1.0 - abs(cell.trial["phase2"]["lr"] - 3e-4)))
        else:
            store.write_result(cell, finished_result(phase2=False))
        queue.complete(cell.id, True)
        feeder.top_up()
        reads.append(CountingStorage.reads - before)
    assert proposals == 40 and len(feeder.searches[("trec-coarse", "ssmix")].history()) == 40
    early, late = reads[2:12], reads[-10:]
    assert max(late) <= max(early) <= 8, (early, late)
