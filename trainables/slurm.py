"""Ray inside a Slurm allocation, for ``cluster/slurm.sbatch``:

    python3 -m trainables.slurm node head|worker HEAD_IP PORT   # run as a job step on each node
    python3 -m trainables.slurm wait HEAD_IP:PORT NODES SECONDS  # until every node has joined
    python3 -m trainables.slurm port                              # a free port (the head's)

A node runs ``ray start --block`` with the CPUs Slurm granted its task (``SLURM_CPUS_PER_TASK``;
the GPUs Ray finds in the ``CUDA_VISIBLE_DEVICES`` Slurm sets), its own address as Slurm knows it,
a temporary directory of its own and free ports where Ray's defaults are fixed, so that two jobs
(or two nodes of a test) on one machine never meet. The head's dashboard listens on loopback
only. Token authentication comes from the environment the job passes on (``RAY_AUTH_MODE``,
``RAY_AUTH_TOKEN``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time


def free_ports(count: int) -> list[int]:
    """``count`` different free ports: held open together, so the kernel cannot hand one out twice."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def node_address() -> str:
    """This node's address as Slurm knows it (NodeAddr), else the hostname's."""
    name = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    shown = subprocess.run(["scontrol", "show", "node", name], capture_output=True, text=True).stdout
    for field in shown.split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1]
    return socket.gethostbyname(socket.gethostname())


def ray_start_args(role: str, head_ip: str, port: int) -> list[str]:
    cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or "1"
    temp_dir = tempfile.mkdtemp(prefix=f"ray-{os.environ.get('SLURM_JOB_ID', 'job')}-", dir="/tmp")  # short: sockets
    agent, metrics, runtime_env, dashboard, client = [p for p in free_ports(6) if p != port][:5]   # not the GCS's
    args = ["ray", "start", "--block", f"--num-cpus={cpus}", f"--node-ip-address={node_address()}",
            f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--dashboard-agent-listen-port={agent}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"]
    if role == "head":
        return args + ["--head", f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                       f"--ray-client-server-port={client}"]
    return args + [f"--address={head_ip}:{port}"]


def wait_for_nodes(address: str, count: int, seconds: float) -> bool:
    import ray

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            break
        except Exception:    # the head is not up yet
            time.sleep(2)
    else:
        return False
    try:
        while time.time() < deadline:
            alive = sum(1 for node in ray.nodes() if node["Alive"])
            if alive >= count:
                print(f"[slurm] Ray has {alive} node(s) with {ray.cluster_resources()}", flush=True)
                return True
            time.sleep(2)
        return False
    finally:
        ray.shutdown()


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "node" and argv[1] in ("head", "worker"):
        command = ray_start_args(argv[1], argv[2], int(argv[3]))
        os.execvp(command[0], command)
    if argv == ["port"]:
        print(free_ports(1)[0])
        return 0
    if len(argv) == 4 and argv[0] == "wait":
        return 0 if wait_for_nodes(argv[1], int(argv[2]), float(argv[3])) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
