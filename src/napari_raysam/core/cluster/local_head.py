"""The embedded local Ray head: ``ray start --head --block`` on 127.0.0.1 as our own child.

It runs in its own session (POSIX) or process group (Windows) so closing napari does not end
it, and its PID, ports and temp dir are recorded in a state file under the config dir. ``stop()``
ends that process and its descendants (psutil, so also on Windows), nothing else (no
machine-wide Ray shutdown). The
auth token, if any, reaches the child through its environment only; the state file never
holds it.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.paths import config_dir, read_json, write_json_atomic

STATE_FILE = "local_head.json"
PORT_NAMES = ("port", "dashboard_port", "ray_client_server_port", "dashboard_agent_listen_port",
              "dashboard_agent_grpc_port", "metrics_export_port", "runtime_env_agent_port",
              "node_manager_port", "object_manager_port")


def default_temp_root() -> str:
    """Where the head's temp dir goes: ``/tmp`` on POSIX when it exists, else the OS temp dir.

    Ray puts Unix sockets (raylet, plasma store) under its temp dir, and a socket path longer
    than ~107 characters cannot be bound. macOS's ``tempfile.gettempdir()`` is a long
    ``/var/folders/.../T`` path, so prefer the short ``/tmp`` where there is one; Windows has no
    ``/tmp`` and uses its own temp dir.
    """
    if os.name == "posix" and os.path.isdir("/tmp"):
        return "/tmp"
    return tempfile.gettempdir()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_ports(n: int, span: int = 0) -> tuple[list[int], int]:
    """``n`` distinct free ports plus the start of ``span`` consecutive free ports."""
    rng, taken, ports = random.Random(), set(), []
    while len(ports) < n:
        p = rng.randint(20000, 45000)
        if p not in taken and _port_free(p):
            taken.add(p)
            ports.append(p)
    while span:
        base = rng.randint(45001, 60000 - span)
        if all(_port_free(p) for p in range(base, base + span)):
            return ports, base
    return ports, 0


#: One run at a time on the embedded head: each job asks for this resource, so runs submitted
#: back to back wait as PENDING instead of starting together and exhausting a laptop's memory.
RUN_SLOT = "napari_raysam_run_slot"


@dataclass
class HeadState:
    """What we record about a head we started (never a token)."""

    pid: int
    ports: dict[str, int]
    temp_dir: str
    log_file: str
    started: float
    auth: str = "disabled"
    num_cpus: int = 2
    worker_ports: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard_port']}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports['port']}"


def _is_our_head(state: HeadState) -> bool:
    """The recorded PID is alive and is the ``ray start`` with our temp dir (not a reused PID)."""
    import psutil

    try:
        proc = psutil.Process(state.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return state.temp_dir in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def dashboard_answers(address: str, headers: dict | None = None, timeout: float = 2.0) -> bool:
    """True when the Jobs API at ``address`` answers (any auth outcome but a refusal)."""
    import requests

    try:
        r = requests.get(f"{address}/api/jobs/", headers=headers or {}, timeout=timeout)
        return r.status_code == 200
    except requests.RequestException:
        return False


def _has_node(address: str, headers: dict | None) -> bool:
    """The head node has registered (right after start the node list can still be empty)."""
    import requests

    try:
        r = requests.get(f"{address}/api/v0/nodes", headers=headers or {}, timeout=2.0)
        return r.json()["data"]["result"]["total"] > 0
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return False


@dataclass
class LocalHead:
    """Manager of the embedded local head; ``state_file`` defaults to the config dir."""

    state_file: Path | None = None
    num_cpus: int | None = None
    temp_root: str = field(default_factory=default_temp_root)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.state_file = Path(self.state_file or config_dir() / STATE_FILE)

    def _read(self) -> HeadState | None:
        data = read_json(self.state_file, None)
        return HeadState(**data) if data else None

    def status(self, token: str | None = None) -> HeadState | None:
        """The recorded head when its process is alive and its dashboard answers, else None."""
        state = self._read()
        if state is None or not _is_our_head(state):
            return None
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return state if dashboard_answers(state.address, headers) else None

    def start(self, token: str | None = None, timeout: float = 120.0) -> HeadState:
        """Reuse the recorded head if it is up, else start one and wait for its Jobs API."""
        state = self.status(token)
        if state is not None:
            return state
        old = self._read()
        if old is not None and _is_our_head(old):
            self.stop()  # alive but not answering: replace it
        if shutil.which("ray") is None and not Path(sys.executable).with_name("ray").exists():
            raise RaysamError("The `ray` command is not installed in this environment; install "
                              "napari-raysam's dependencies (`pip install 'ray[default]'`).")
        ports, wbase = free_ports(len(PORT_NAMES), span=64)
        named = dict(zip(PORT_NAMES, ports, strict=True))
        temp_dir = str(Path(self.temp_root) / f"rs-{secrets.token_hex(3)}")
        Path(temp_dir).mkdir(mode=0o700)
        log_file = str(Path(temp_dir) / "head.log")
        cpus = self.num_cpus or os.cpu_count() or 1
        ray_bin = Path(sys.executable).with_name("ray")
        cmd = [str(ray_bin) if ray_bin.exists() else "ray", "start", "--head", "--block",
               "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
               "--include-dashboard", "true", "--num-cpus", str(cpus), "--temp-dir", temp_dir,
               "--min-worker-port", str(wbase), "--max-worker-port", str(wbase + 63),
               "--resources", json.dumps({RUN_SLOT: 1}), "--disable-usage-stats"]
        for name, port in named.items():
            cmd += [f"--{name.replace('_', '-')}", str(port)]
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
        env["RAY_AUTH_MODE"] = "token" if token else "disabled"
        # Without this Ray replaces 127.0.0.1 by the machine's routable IP and its gRPC servers
        # (GCS, raylet) listen on every interface; with it, everything binds to loopback.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if token:
            env["RAY_AUTH_TOKEN"] = token
        # Detached from napari's terminal: start_new_session is ignored on Windows, where a new
        # process group keeps a Ctrl+C in napari's console from reaching the head.
        detach = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt"
                  else {"start_new_session": True})
        with open(log_file, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env, **detach)
        state = HeadState(pid=self._proc.pid, ports=named, temp_dir=temp_dir, log_file=log_file,
                          started=time.time(), auth="token" if token else "disabled",
                          num_cpus=cpus, worker_ports=[wbase, wbase + 63])
        write_json_atomic(self.state_file, asdict(state))
        headers = {"Authorization": f"Bearer {token}"} if token else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = _tail(log_file)
                self.stop()
                raise RaysamError(f"The local Ray head exited while starting (code "
                                  f"{self._proc.returncode}). Its log ends with:\n{tail}\n"
                                  "Fix the cause above, then start the local cluster again.")
            if dashboard_answers(state.address, headers) and _has_node(state.address, headers):
                return state
            time.sleep(0.5)
        self.stop()
        raise RaysamError(f"The local Ray head did not answer within {timeout:.0f} s; the machine "
                          f"may be overloaded. Log: {_tail(log_file)}\nTry again.")

    def stop(self, timeout: float = 5.0) -> bool:
        """End the recorded head's process and its descendants; False if none ran.

        SIGTERM (``terminate``) first; what is left after ``timeout`` s is killed. Only the
        head's own process tree is touched (psutil, so this works on Windows too).
        """
        import psutil

        state = self._read()
        if state is None:
            return False
        ran = _is_our_head(state)
        if ran:
            try:
                procs = [psutil.Process(state.pid)]
                procs += procs[0].children(recursive=True)
            except psutil.NoSuchProcess:
                procs = []
            _end_all(procs, kill=False)
            alive = _wait_gone(procs, timeout)
            if alive:  # the raylet may drain for a long time after SIGTERM
                alive += _children(alive)  # workers started while it was shutting down
                _end_all(alive, kill=True)
                _wait_gone(alive, 5.0)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.state_file.unlink(missing_ok=True)
        shutil.rmtree(state.temp_dir, ignore_errors=True)
        return ran


def _children(procs: list) -> list:
    """Descendants of ``procs`` not already in it."""
    import psutil

    known, out = {p.pid for p in procs}, []
    for p in procs:
        try:
            out += [c for c in p.children(recursive=True) if c.pid not in known]
        except psutil.Error:
            continue
        known |= {c.pid for c in out}
    return out


def _end_all(procs: list, kill: bool) -> None:
    """SIGTERM (``kill``: SIGKILL) each process; TerminateProcess on Windows."""
    import psutil

    for p in procs:
        try:
            p.kill() if kill else p.terminate()
        except psutil.Error:  # already gone, or not ours to signal
            pass


def _wait_gone(procs: list, timeout: float) -> list:
    """Wait until every process has exited (zombies count as gone); returns the survivors."""
    import psutil

    def running(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    alive = [p for p in procs if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if running(p)]
    return alive


def _tail(path: str, n: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
