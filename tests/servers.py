"""Real servers for integration tests, bound to 127.0.0.1 and stopped by whoever starts them."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import BIN
from trainables.slurm import free_ports

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    return free_ports(1)[0]


def wait_for_http(url: str, timeout: float = 90, process: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(process: subprocess.Popen, log) -> None:
    """Terminate a server started in its own session (killed with its group if it lingers)."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
    log.close()


@contextmanager
def mlflow_server(root: Path, backend_uri: str | None = None, port: int | None = None):
    """``mlflow server`` on 127.0.0.1 with a served artifact store; yields its URL."""
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", backend_uri or f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts")]
    # Without MLflow's job runner (a huey consumer with five workers and a periodic one, each an
    # interpreter importing mlflow): sweeps use no MLflow jobs, and on two cores every server
    # start paid for them.
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with _serving(command, env, root / "mlflow-server.log", port) as url:
        yield url


@contextmanager
def _serving(command: list[str], env: dict, log_path: Path, port: int):
    """``command`` in a session of its own, logging to ``log_path``, once /health answers on
    ``port``; yields its URL; stopped afterwards."""
    log = open(log_path, "w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process=process)
        yield url
    finally:
        stop(process, log)


ADMIN = ("admin", "admin-" + secrets.token_hex(8))     # the auth server's admin (12 characters or more)


@contextmanager
def mlflow_auth_server(root: Path, backend_uri: str | None = None, auth_uri: str | None = None,
                       env: dict | None = None):
    """The team's MLflow server as the compose file runs it (cluster/mlflow-server.sh: basic-auth,
    accounts beside the tracking store, NO_PERMISSIONS by default) on 127.0.0.1; yields its URL.
    Its admin is ``ADMIN``."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    server_env = dict(os.environ, MLFLOW_BACKEND_STORE_URI=backend_uri or f"sqlite:///{root / 'mlflow.db'}",
                      MLFLOW_AUTH_DATABASE_URI=auth_uri or f"sqlite:///{root / 'auth.db'}",
                      MLFLOW_ARTIFACTS_DESTINATION=str(root / "artifacts"), MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
                      MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16), MLFLOW_HOST="127.0.0.1",
                      MLFLOW_PORT=str(port), MLFLOW_WORKERS="1", PATH=f"{BIN}:{os.environ['PATH']}",
                      MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server_env.update(env or {})
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        server_env.pop(key, None)
    with _serving(["sh", str(REPO / "cluster" / "mlflow-server.sh")], server_env, root / "mlflow-server.log",
                  port) as url:
        yield url


def create_user(url: str, username: str, password: str) -> None:
    """An account on the auth server, made by its admin (the REST call docs/clusters.md shows)."""
    import requests

    done = requests.post(f"{url}/api/2.0/mlflow/users/create", json={"username": username, "password": password},
                         auth=ADMIN, timeout=30)
    done.raise_for_status()


def session_processes(session_id: int) -> list[int]:
    """The live processes of a session (``start_new_session=True`` makes the child its leader):
    whatever it started, however deep, unless something left the session on purpose."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id and fields[0] != "Z":   # fields: state, ppid, pgrp, session
            found.append(int(entry.name))
    return found


def stop_session(process: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop a process started in a session of its own and everything in that session: SIGTERM,
    then SIGKILL for what is left after ``grace`` seconds. Never anything outside the session
    (``ray stop`` would end every Ray process of the machine, another user's sweep among them)."""
    def signal_all(number):
        for pid in session_processes(process.pid):
            try:
                os.kill(pid, number)
            except ProcessLookupError:
                pass

    signal_all(15)
    deadline = time.time() + grace
    while session_processes(process.pid) and time.time() < deadline:
        process.poll()
        time.sleep(0.2)
    signal_all(9)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@contextmanager
def ray_node(args: list[str], env: dict, root: Path, ready: str = "Ray runtime started"):
    """``ray start ARGS --block`` in a session of its own, with a temp dir of its own (nodes that
    share one garbage-collect each other's runtime environments, a job's working_dir among them,
    and /tmp/ray/session_latest would point at ours); stopped by stopping that session."""
    import tempfile

    temp_dir = tempfile.mkdtemp(prefix="rn-", dir="/tmp")   # short: Ray puts unix sockets in it
    log_path = Path(temp_dir) / "ray-start.log"
    log = open(log_path, "w")
    # Ports of its own where Ray's are fixed (the dashboard agent's 52365, the client server's
    # 10001): a second Ray on the machine would otherwise find them taken and run without a job agent.
    agent, client = free_ports(2)
    own_ports = [f"--dashboard-agent-listen-port={agent}"] + ([f"--ray-client-server-port={client}"] if "--head" in args
                                                              else [])
    process = subprocess.Popen([str(BIN / "ray"), "start", *args, *own_ports, f"--temp-dir={temp_dir}", "--block",
                                "--disable-usage-stats"], env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.time() + 120
        while ready not in log_path.read_text():
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ray start did not start a node:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield process
    finally:
        stop_session(process)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def token_env(**extra) -> dict:
    return dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(24),
                PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0", **extra)


@contextmanager
def ray_head(root: Path, num_cpus: int = 2, node_env: dict | None = None):
    """A Ray head with token authentication on 127.0.0.1; yields (dashboard URL, client env, GCS
    address). ``node_env`` is the node's own environment (a container's), which jobs inherit."""
    env = token_env()
    gcs_port, dashboard_port = free_ports(2)
    args = ["--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}", f"--num-cpus={num_cpus}"]
    with ray_node(args, dict(env, **(node_env or {})), root):
        yield f"http://127.0.0.1:{dashboard_port}", env, f"127.0.0.1:{gcs_port}"


def submit_job(dashboard: str, env: dict, workdir: Path, entrypoint: list[str], extra: list[str] = (),
               timeout: float = 600) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while the freshly started head has no job agent yet (Ray
    answers "No available agent to submit job, please try again later" for a while on a busy
    machine)."""
    deadline = time.time() + 120
    while True:
        done = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", dashboard, "--working-dir", str(workdir),
                               *extra, "--", *entrypoint], env=env, capture_output=True, text=True, timeout=timeout)
        if "No available agent" not in done.stdout + done.stderr or time.time() > deadline:
            return done
        time.sleep(3)


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL server binaries (initdb, pg_ctl), newest version first."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: float(p.parts[-3]), reverse=True)
    if found:
        return found[0].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@contextmanager
def postgres_server(database: str = "mlflow", *more: str):
    """A throw-away PostgreSQL on 127.0.0.1 (temporary data directory and port) with ``database``
    (and ``more`` databases beside it); yields the URI of ``database``. initdb refuses root, so
    as root the server runs as the `postgres` system user."""
    import pwd
    import tempfile

    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL server binaries not found")
    data = Path(tempfile.mkdtemp(prefix="ssmix-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(data, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *cmd: subprocess.run(as_user + list(cmd), check=True, capture_output=True, text=True)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "server.log"), "-w", "-t", "60",
        "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start")
    try:
        for name in (database, *more):
            run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name)
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def ray_worker(gcs_address: str, env: dict, root: Path, num_cpus: int = 1, num_gpus: int = 0):
    """One more Ray node joining the head at ``gcs_address``, as a separate container would;
    ``num_gpus`` logical GPUs (Ray assigns their ids to trials as it would real cards)."""
    with ray_node([f"--address={gcs_address}", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
                   f"--num-gpus={num_gpus}"], env, root):
        yield


@contextmanager
def ssh_node(root: Path):
    """A machine for Ray's cluster launcher, on loopback: Debian's sshd on 127.0.0.1 (a free port,
    a throw-away host key, key-only login for the current user) whose sessions get their own HOME
    (root/home), so what `ray up` installs and writes lands there, and a PATH with this venv first
    (the node "has the project installed"). Yields (port, private key path, node home)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        raise RuntimeError("sshd not found (Debian package openssh-server)")
    root.mkdir(parents=True, exist_ok=True)
    home = root / "home"
    home.mkdir(exist_ok=True)
    path = f"{BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
    # Ray's command runner sources ~/.bashrc in every session.
    (home / ".bashrc").write_text(f"export PATH={path}\n")
    (home / ".profile").write_text(". ~/.bashrc\n")
    key, host_key = root / "id_ed25519", root / "host_ed25519"
    for target in (key, host_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(target)], check=True)
    (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
    port = free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
        f"SetEnv HOME={home} PATH={path}", "MaxSessions 50", "MaxStartups 50"]) + "\n")
    Path("/run/sshd").mkdir(exist_ok=True)   # sshd's privilege-separation directory
    log = open(root / "sshd.log", "w")
    # A process namespace of its own: Ray's launcher runs `ray stop` on its nodes (before `ray
    # start`, and for `ray down`), which ends every Ray process it can see. In here it sees only
    # what was started over this sshd, and the whole namespace ends with it (--kill-child).
    process = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                                sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"sshd did not start: {(root / 'sshd.log').read_text()}") from None
                time.sleep(0.2)
        yield port, key, home
    finally:
        stop_session(process)
        log.close()


def slurm_binaries() -> str | None:
    """Why a Slurm cluster cannot be started here, or None when it can (as root, with Debian's
    slurm-wlm and munge)."""
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol") if shutil.which(b) is None
               and not Path(f"/usr/sbin/{b}").exists()]
    if missing:
        return f"Debian's slurm-wlm and munge are not installed ({', '.join(missing)} missing; .ci/run installs them)"
    if os.geteuid() != 0:
        return "slurmctld and slurmd run as root here, and the tests are not root"
    return None


@contextmanager
def slurm_cluster(root: Path, nodes: tuple[str, ...] = ("n1", "n2"), cpus: int = 2):
    """A Slurm cluster on loopback: its own munged (key and socket in ``root``), a slurmctld and
    one slurmd per node name on this machine, every port free, everything in ``root``; yields the
    environment a client needs (``SLURM_CONF``). Stopped by stopping their sessions."""
    sbin = lambda name: shutil.which(name) or f"/usr/sbin/{name}"   # noqa: E731
    import tempfile

    root.mkdir(parents=True, exist_ok=True)
    # munged wants its socket's folder, and every folder above, open to all (pytest's are not)
    munge = Path(tempfile.mkdtemp(prefix="munge-", dir="/tmp"))
    munge.chmod(0o755)
    (munge / "munge.key").write_bytes(os.urandom(1024))
    (munge / "munge.key").chmod(0o400)
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    host = socket.gethostname()
    conf = root / "slurm.conf"
    controller_port, *node_ports = free_ports(1 + len(nodes))
    node_lines = [f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs={cpus} "
                  f"RealMemory=4000 State=UNKNOWN" for name, port in zip(nodes, node_ports)]
    conf.write_text("\n".join([
        "ClusterName=ssmixtest", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={controller_port}",
        "AuthType=auth/munge", f"AuthInfo=socket={munge / 'munge.sock'}", "CredType=cred/munge",
        "SlurmUser=root", "SlurmdUser=root", f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}/%n", f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root}/slurmd-%n.pid", f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log'}/slurmd-%n.log", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "ReturnToService=2", "JobRequeue=1", "KillWait=5", "MinJobAge=600", "MpiDefault=none",
        *node_lines, f"PartitionName=test Nodes={','.join(nodes)} Default=YES MaxTime=INFINITE State=UP"]) + "\n")
    env = dict(os.environ, SLURM_CONF=str(conf))
    daemons = []

    def start(args: list[str], name: str) -> None:
        log = open(root / "log" / f"{name}.out", "w")
        daemons.append((subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True),
                        log))

    try:
        start([sbin("munged"), "-F", f"--socket={munge / 'munge.sock'}", f"--key-file={munge / 'munge.key'}",
               f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'seed'}",
               f"--log-file={munge / 'munged.log'}"], "munged")
        deadline = time.time() + 20
        while not (munge / "munge.sock").exists():
            if time.time() > deadline:
                raise RuntimeError(f"munged did not start: {(root / 'log' / 'munged.out').read_text()[-2000:]}")
            time.sleep(0.2)
        start([sbin("slurmctld"), "-D", "-f", str(conf)], "slurmctld")
        for name in nodes:
            start([sbin("slurmd"), "-D", "-f", str(conf), "-N", name], f"slurmd-{name}")
        deadline = time.time() + 60
        while True:
            listed = subprocess.run(["sinfo", "-h", "-o", "%T %D"], env=env, capture_output=True, text=True)
            if listed.stdout.split()[:2] == ["idle", str(len(nodes))]:
                break
            if time.time() > deadline:
                raise RuntimeError(f"Slurm's nodes did not come up: {listed.stdout} {listed.stderr}\n"
                                   + (root / "log" / "slurmctld.log").read_text()[-3000:])
            time.sleep(0.5)
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True)
        deadline = time.time() + 30     # the jobs' steps (their Ray nodes) end before the daemons
        while time.time() < deadline and subprocess.run(["squeue", "-h"], env=env, capture_output=True,
                                                         text=True).stdout.strip():
            time.sleep(0.5)
        for process, log in reversed(daemons):
            stop_session(process)
            log.close()
        shutil.rmtree(munge, ignore_errors=True)


class S3Server:
    """An S3-compatible server on loopback (moto's ThreadedMotoServer), reached through a proxy
    that can answer 503 SlowDown for a while (``slow_down``) or go away and come back on the same
    address (``down`` / ``up``), as a real store does under load or when it restarts. Its
    ``env`` is the standard AWS environment a sweep is given."""

    SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                 b'<Message>Please reduce your request rate.</Message></Error>')

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        self.port = free_port()
        self.slowing = False
        self.refused = 0            # requests answered 503
        self._connections: set = set()
        self._proxy = None
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing-key",
                "AWS_SECRET_ACCESS_KEY": "testing-" + secrets.token_hex(8), "AWS_DEFAULT_REGION": "us-east-1"}

    def __enter__(self) -> "S3Server":
        self.moto.start()
        self.secret = self.env["AWS_SECRET_ACCESS_KEY"]
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()
        self.moto.stop()

    def bucket(self, name: str) -> None:
        import requests

        requests.put(f"{self.url}/{name}", timeout=30).raise_for_status()

    def up(self) -> None:
        import http.client
        import http.server
        import threading

        server = self

        class Forward(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
            # holds the body until the client's delayed ACK, 40 ms on every answer with a body.
            disable_nagle_algorithm = True

            def setup(self):
                super().setup()
                server._connections.add(self.connection)

            def finish(self):
                server._connections.discard(self.connection)
                super().finish()

            def log_message(self, *args):
                pass

            def _body(self) -> bytes | None:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):     # pyarrow's uploads
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _any(self):
                body = self._body()
                if server.slowing:
                    server.refused += 1
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(S3Server.SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(S3Server.SLOW_DOWN)
                    return
                host, port = server.moto.get_host_and_port()
                upstream = http.client.HTTPConnection(host, port, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "transfer-encoding", "content-length", "expect")}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._proxy = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Forward)
        self._proxy.daemon_threads = True
        self._thread = threading.Thread(target=self._proxy.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Gone: the listening socket closed, and every open connection cut, as in a restart."""
        if self._proxy is not None:
            self._proxy.shutdown()
            self._proxy.server_close()
            self._proxy = None
        for connection in list(self._connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def slow_down(self, on: bool) -> None:
        self.slowing = on
