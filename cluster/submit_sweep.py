"""Start a sweep on the cluster `ray up` made; `ray submit` runs this on the head node:

    ray submit cluster/local.yaml cluster/submit_sweep.py sweeps/quickstart.yaml [--dry-run ...]

The sweep file is read from the project copy `ray up` synced to ~/ssmix (so it is the file in your
checkout when you last ran `ray up`). cluster/cluster.env, synced with it, names the MLflow server
and the shared storage; what the head's environment already sets wins. The driver joins the running
cluster (token authentication on), so Ray Tune places the trials on its GPU workers.
"""

import os
import sys
from pathlib import Path

PROJECT = Path.home() / "ssmix"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments are skipped."""
    if not path.is_file():
        return {}
    pairs = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            sys.exit(f"submit_sweep: {path}:{number}: expected KEY=VALUE, got {line!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        sys.exit("usage: ray submit CLUSTER.yaml cluster/submit_sweep.py SWEEP.yaml [ssmix sweep run options]")
    for key, value in read_env_file(PROJECT / "cluster" / "cluster.env").items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_AUTH_MODE", "token")   # the token is ~/.ray/auth_token, copied by `ray up`
    os.chdir(PROJECT)
    os.execv(sys.executable, [sys.executable, "-m", "ssmix", "sweep", "run", argv[0], "--address", "auto", *argv[1:]])


if __name__ == "__main__":
    main(sys.argv[1:])
