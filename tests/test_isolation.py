"""What the service needs and leaves behind: no Ray for anything but the Ray driver, no torch to plan
or check a sweep, nothing written outside the sweep's own folders, and a bug of ours reported as a
bug (its traceback, exit 1), never as an outage."""

import subprocess
import sys
from pathlib import Path

import pytest

from ssmix.sweep import load_sweep
from tests.helpers import BIN, sweep_file

REPO = Path(__file__).resolve().parent.parent
# Run before the command: any import of ray fails as if Ray were not installed.
BLOCK_RAY = """
import sys
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, NoRay())
"""


def ssmix(*args, cwd, prelude="", env=None):
    """`ssmix ARGS` as a process, after ``prelude`` (Python run first in the same interpreter)."""
    code = prelude + "\nfrom ssmix.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", "import sys\n" + code, *args], cwd=cwd, capture_output=True,
                          text=True, env=env)


@pytest.mark.slow
def test_every_sweep_command_but_the_ray_driver_works_without_ray(model_dir, data_dir, tmp_path):
    """Ray blocked from import, in one interpreter: a whole sweep in process, a rerun, and every
    other subcommand; only the Ray driver says it needs Ray."""
    path = sweep_file(tmp_path, model_dir, data_dir, name="noray", seeds=(0,))
    commands = [["run", "--in-process"], ["run", "--dry-run"], ["run", "--in-process"], ["status"],
                ["plan", "--workers", "2"], ["sync"], ["gc", "--dry-run"], ["power", "--delta", "1"], ["run"]]
    code = (BLOCK_RAY + "\nfrom ssmix.cli import main\n"
            f"for command in {commands!r}:\n"
            f"    print('exit', command, main(['sweep', *command, {str(path)!r}]), flush=True)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    statuses = [line for line in out.stdout.splitlines() if line.startswith("exit ")]
    # Every command but the last, the Ray driver, whose import of Ray fails, loudly.
    assert statuses == [f"exit {command} 0" for command in commands[:-1]], out.stdout[-3000:] + out.stderr[-3000:]
    assert out.returncode == 1 and "blocked by the test" in out.stderr
    assert "| trec-coarse  | ssmix λ0=0.1" in out.stdout


def test_checking_a_sweep_loads_no_torch(model_dir, data_dir, tmp_path):
    """Preflight reads and checks every split row by row without torch (what `--dry-run` runs)."""
    path = sweep_file(tmp_path, model_dir, data_dir, name="light", seeds=(0,))
    code = (f"import sys\nfrom ssmix.sweep import load_sweep\nfrom ssmix.sweep.preflight import preflight\n"
            f"preflight(load_sweep({str(path)!r}))\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"
    bad = sweep_file(tmp_path, model_dir, tmp_path / "nowhere", name="bad", seeds=(0,))
    failed = subprocess.run([sys.executable, "-c", code.replace(str(path), str(bad))], capture_output=True,
                            text=True, cwd=tmp_path)
    assert "data_dir:" in failed.stderr and "does not exist" in failed.stderr


@pytest.mark.slow
def test_a_sweep_writes_only_under_its_storage_and_beside_its_tracking_store(model_dir, data_dir, tmp_path):
    """Started from a directory of its own: nothing lands there (a SQLite store's artifacts go
    beside its database file, not into ./mlruns of whatever directory the driver runs in)."""
    work = tmp_path / "started-here"
    work.mkdir()
    path = sweep_file(tmp_path, model_dir, data_dir, name="tidy", seeds=(0,))
    out = subprocess.run([str(BIN / "ssmix"), "sweep", "run", "--in-process", str(path)], cwd=work,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert list(work.iterdir()) == []
    artifacts = tmp_path / "mlartifacts" / "tidy"
    assert any(p.name == "mix_examples.html" for p in artifacts.rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlartifacts", "mlflow.db", "started-here", "storage",
                                                         "tidy.yaml"]


@pytest.mark.slow
def test_a_bug_in_our_closing_code_fails_with_its_traceback_not_as_an_mlflow_outage(model_dir, data_dir, tmp_path):
    """A KeyError raised while the run closes (after training, while MLflow answers) must not be
    retried for tracking_retry_seconds and reported as "MLflow did not answer" (exit 3): it exits
    1 with its traceback, and the invocation is recorded as failed, with the error."""
    path = sweep_file(tmp_path, model_dir, data_dir, name="buggy", seeds=(0,), tracking_retry_seconds=120)
    bug = ("import ssmix.sweep.closing as closing\n"
           "def format_summary(table):\n    raise KeyError('a bug of ours')\n"
           "closing.format_summary = format_summary\n")
    out = ssmix("sweep", "run", "--in-process", str(path), cwd=tmp_path, prelude=bug)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" in out.stderr and "KeyError: 'a bug of ours'" in out.stderr
    assert "MLflow did not answer" not in out.stdout + out.stderr
    records = Path(load_sweep(path).sweep_url) / "cells" / "invocations.json"
    assert '"status": "failed"' in records.read_text() and "a bug of ours" in records.read_text()
