"""A local Flower deployment: one SuperLink and N SuperNodes on 127.0.0.1, stopped by PID.

Used by `fedgan up` and by the deployment tests. Every process is stopped by PID, with the
processes it spawned (found through parent links in /proc); nothing is
found by name. Flower facts this relies on (flwr 1.42, see /work/shared/notes/flower-1.42.md):

- The SuperLink serves its Fleet, Control and Runtime APIs on one `--host/--port`; each
  SuperNode needs a port of its own for the Runtime API its ClientApp processes call back on.
- TLS needs all three of `--ssl-ca-certfile/--ssl-certfile/--ssl-keyfile` on the SuperLink and
  `--root-certificates` on every node; node authentication (`--enable-supernode-auth`) refuses
  to start without TLS, and a node's public key must be registered (`flwr supernode register`)
  before the node starts, or the node is refused and exits.
- `FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`: otherwise the SuperLink runs `uv sync`, which
  ignores the local CPU torch and downloads a CUDA build.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from fedgan.simulator.engines.procs import ProcKey, alive, descendants, wait_gone
from fedgan.simulator.messages import NODE_NUM_PARTITIONS, NODE_PARTITION_ID

__all__ = [
    "CONNECTION",
    "ClusterError",
    "LocalCluster",
    "flwr_cli",
    "flwr_env",
    "free_port",
    "stop_process",
    "stop_processes",
    "write_connection",
]

CONNECTION = "fedgan"
"""Name of the SuperLink connection written into a private `$FLWR_HOME/config.toml`."""

STOP_WAIT_S = 10.0
"""How long a stopped process group gets to exit after SIGTERM before it is SIGKILLed."""


class ClusterError(RuntimeError):
    """A Flower process failed to start, or the Flower CLI failed."""


def _bin(name: str) -> str:
    """Path of a Flower console script beside this Python (a venv need not be on PATH)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flwr_env(home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower processes: private FLWR_HOME, quiet, offline, one torch thread.

    The project root goes first on PYTHONPATH so that the ClientApp and ServerApp processes
    import this checkout's packages even where the FAB's copy is not first on sys.path.
    """
    env = dict(os.environ if base is None else base)
    root = str(Path(__file__).resolve().parents[2])
    env.update(
        {
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p),
            # The SuperLink and SuperNodes start `flower-superexec` by name from PATH.
            "PATH": os.pathsep.join(
                p for p in (str(Path(sys.executable).parent), env.get("PATH")) if p
            ),
        }
    )
    # Tiny networks on shared cores: a second thread per process spins instead of helping.
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(key, "1")
    env.setdefault("FLWR_LOG_LEVEL", "WARNING")
    return env


def write_connection(home: Path, address: str, root_certificates: Path | None = None) -> None:
    """Write `$FLWR_HOME/config.toml` with one default connection named CONNECTION."""
    conn: dict[str, Any] = {"address": address}
    if root_certificates is None:
        conn["insecure"] = True
    else:
        conn["root-certificates"] = str(Path(root_certificates).resolve())
    home.mkdir(parents=True, exist_ok=True)
    text = tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: conn}})
    (home / "config.toml").write_text(text)


def flwr_cli(
    args: list[str], env: Mapping[str, str], timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `flwr ARGS` and return it; a non-zero exit raises ClusterError with its output."""
    proc = subprocess.run(
        [_bin("flwr"), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise ClusterError(
            f"`flwr {' '.join(args)}` exited {proc.returncode}: "
            f"{(proc.stdout + proc.stderr).strip()[-2000:]}"
        )
    return proc


def cli_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object a `flwr ... --format json` command printed (its last `{` line on)."""
    text = proc.stdout
    start = text.find("{")
    if start < 0:
        raise ClusterError(f"expected JSON from flwr, got: {(text + proc.stderr)[-2000:]}")
    out: dict[str, Any] = json.loads(text[start:])
    return out


def _signal(procs: set[ProcKey], sig: int) -> None:
    for pid, start in procs:
        if alive((pid, start)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def stop_processes(
    procs: list[subprocess.Popen[bytes]],
    timeout: float = STOP_WAIT_S,
    extra: set[ProcKey] | None = None,
) -> None:
    """Stop `procs` together with every descendant (plus `extra`, say the children of a killed
    process): SIGTERM all leaders at once and let them stop their own children, then SIGTERM
    what is left, then SIGKILL after `timeout` s."""
    tree = set(extra or set())
    for proc in procs:
        tree |= descendants(proc.pid)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _signal(tree, signal.SIGTERM)
    left = wait_gone(tree, timeout)
    _signal(left, signal.SIGKILL)
    wait_gone(left, 2.0)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_WAIT_S) -> None:
    """Stop one process and its descendants (see `stop_processes`)."""
    stop_processes([proc], timeout)


@dataclass
class LocalCluster:
    """One SuperLink and `n_nodes` SuperNodes on 127.0.0.1 (node i: partition-id=i).

    `tls`: a folder made by `fedgan certs` (ca.crt, server.pem, server.key, node-<i>.key/.pub);
    `auth`: turn on SuperNode authentication and register each node's public key (needs TLS).
    Logs go to `home/logs/`. Use as a context manager, or call `start()` and `stop()`.
    """

    n_nodes: int
    home: Path
    port: int = 0
    tls: Path | None = None
    auth: bool = False
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    orphans: set[ProcKey] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.n_nodes < 1:
            raise ValueError(f"n_nodes must be >= 1, got {self.n_nodes}")
        if self.auth and self.tls is None:
            raise ValueError("node authentication needs TLS: give a certificate folder (--tls)")
        self.home = Path(self.home).resolve()
        if self.tls is not None:
            self.tls = Path(self.tls).resolve()
            missing = [
                f for f in ("ca.crt", "server.pem", "server.key") if not (self.tls / f).is_file()
            ]
            if missing:
                raise ValueError(
                    f"TLS folder {self.tls} lacks {', '.join(missing)}: "
                    "make it with `fedgan certs DIR --nodes N`"
                )
        if self.port == 0:
            self.port = free_port()

    # --- addresses and environment --------------------------------------------------------

    @property
    def address(self) -> str:
        """host:port of the SuperLink (Fleet, Control and Runtime APIs)."""
        return f"127.0.0.1:{self.port}"

    @property
    def root_certificates(self) -> Path | None:
        return None if self.tls is None else self.tls / "ca.crt"

    def env(self, role: str) -> dict[str, str]:
        """Environment of one process (`role`: superlink, node-<i>, cli): its own FLWR_HOME.

        Servers log at INFO: a node's log then shows each message it receives and sends."""
        env = flwr_env(self.home / role)
        if role != "cli":
            env["FLWR_LOG_LEVEL"] = "INFO"
        return env

    @property
    def cli_env(self) -> dict[str, str]:
        """Environment for `flwr` commands against this cluster (connection CONNECTION)."""
        env = self.env("cli")
        write_connection(self.home / "cli", self.address, self.root_certificates)
        return env

    # --- processes ------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "wb") as log:  # a restarted name starts afresh
            proc = subprocess.Popen(
                cmd,
                env=self.env(name),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not them
            )
        self.procs[name] = proc
        return proc

    def log_text(self, name: str) -> str:
        path = self.home / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_superlink(self) -> None:
        cmd = [
            _bin("flower-superlink"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        ]
        if self.tls is None:
            cmd.append("--insecure")
        else:
            cmd += [
                "--ssl-ca-certfile",
                str(self.tls / "ca.crt"),
                "--ssl-certfile",
                str(self.tls / "server.pem"),
                "--ssl-keyfile",
                str(self.tls / "server.key"),
            ]
        if self.auth:
            cmd.append("--enable-supernode-auth")
        self._spawn("superlink", cmd)
        self._wait_port(self.port, "superlink")

    def node_key(self, i: int) -> Path:
        assert self.tls is not None
        return self.tls / f"node-{i}.key"

    def register(self, public_key: Path) -> None:
        """Register a SuperNode public key (OpenSSH ECDSA) with the SuperLink."""
        flwr_cli(["supernode", "register", str(public_key), CONNECTION], self.cli_env)

    def start_node(
        self, i: int, n_partitions: int | None = None, key: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start SuperNode `node-<i>` with partition-id=i (and its key when auth is on)."""
        n = self.n_nodes if n_partitions is None else n_partitions
        cmd = [
            _bin("flower-supernode"),
            "--superlink",
            self.address,
            "--port",
            str(free_port()),
            "--node-config",
            f"{NODE_PARTITION_ID}={i} {NODE_NUM_PARTITIONS}={n}",
        ]
        if self.tls is None:
            cmd.append("--insecure")
        else:
            cmd += ["--root-certificates", str(self.tls / "ca.crt")]
        if key is None and self.auth:
            key = self.node_key(i)
        if key is not None:
            cmd += ["--auth-supernode-private-key", str(key)]
        return self._spawn(f"node-{i}", cmd)

    def _wait_port(self, port: int, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise ClusterError(
                    f"{name} exited with {proc.returncode}:\n{self.log_text(name)[-2000:]}"
                )
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise ClusterError(f"{name} did not open port {port} within {timeout:.0f} s")

    def nodes_online(self) -> int:
        """How many SuperNodes the SuperLink lists as online (`flwr supernode ls`)."""
        out = cli_json(flwr_cli(["supernode", "ls", CONNECTION, "--format", "json"], self.cli_env))
        nodes = out.get("nodes", [])
        return sum(1 for n in nodes if str(n.get("status", "")).lower() == "online")

    def wait_nodes(self, timeout: float = 60.0) -> None:
        """Block until every started node has joined; a node that exits meanwhile is an error.

        A node logs its `SuperNode ID` once the SuperLink has accepted (and, with auth,
        activated) it: reading the logs costs nothing, where `flwr supernode ls` costs ~2 s.
        """
        deadline = time.monotonic() + timeout
        while True:
            waiting = []
            for name, proc in self.procs.items():
                if not name.startswith("node-"):
                    continue
                if proc.poll() is not None:
                    raise ClusterError(
                        f"{name} exited with {proc.returncode}:\n{self.log_text(name)[-2000:]}"
                    )
                if "SuperNode ID:" not in self.log_text(name):
                    waiting.append(name)
            if not waiting:
                return
            if time.monotonic() >= deadline:
                raise ClusterError(f"{', '.join(waiting)} not online after {timeout:.0f} s")
            time.sleep(0.2)

    def start(self) -> LocalCluster:
        """Start the SuperLink, register node keys (auth), start the nodes, wait for them."""
        try:
            write_connection(self.home / "cli", self.address, self.root_certificates)
            self.start_superlink()
            if self.auth:
                assert self.tls is not None
                for i in range(self.n_nodes):
                    self.register(self.tls / f"node-{i}.pub")
            for i in range(self.n_nodes):
                self.start_node(i)
            self.wait_nodes()
        except BaseException:
            self.stop()
            raise
        return self

    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode i alone, as a crash would; its children are stopped by `stop`."""
        proc = self.procs[f"node-{i}"]
        self.orphans |= descendants(proc.pid)  # found through the parent while it lives
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        """Stop every process this cluster started (nodes first, then the SuperLink)."""
        orphans, self.orphans = self.orphans, set()
        nodes = [p for name, p in self.procs.items() if name != "superlink"]
        stop_processes(nodes, extra=orphans)
        if "superlink" in self.procs:
            stop_process(self.procs["superlink"])

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def signals_stop(self) -> Iterator[None]:
        """Turn SIGTERM and SIGINT into KeyboardInterrupt meanwhile, so `finally: stop()` runs.

        SIGINT too: a shell starts background jobs with SIGINT ignored, and Python then never
        raises KeyboardInterrupt on its own.
        """

        def _raise(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        old = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
