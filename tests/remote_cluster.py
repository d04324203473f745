"""A genuinely remote cluster on this one machine, for the object-storage tests.

* :class:`S3Server`: ``moto_server`` on 127.0.0.1 with authentication on: a read-write user, a
  read-only user and a bucket; started and stopped by its PID.
* :class:`IsolatedNode`: ``ray start --block`` in its own mount namespace (``unshare --mount``)
  with a fresh tmpfs ``/tmp`` and its own HOME, token auth on. The client's files (pytest's
  temp folders, its HOME, config, model store) are all under ``/tmp`` and so invisible to every
  node, and two nodes share no disk. The Python environment stays visible (it is the cluster's
  "image"); when it lives under ``/tmp`` (a CI checkout's ``.venv``) it is bound back in.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from napari_raysam.core.cluster.local_head import PORT_NAMES, HeadState, free_ports

NODE_PORTS = ("node_manager_port", "object_manager_port", "metrics_export_port",
              "dashboard_agent_listen_port", "dashboard_agent_grpc_port",
              "runtime_env_agent_port")
#: Dropped from a node's environment: they would point it at the client's folders.
CLIENT_VARS = ("NAPARI_RAYSAM_CACHE", "NAPARI_RAYSAM_CONFIG", "NAPARI_RAYSAM_DATA",
               "MICROSAM_CACHEDIR", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PYTHONPATH",
               "VIRTUAL_ENV")
BUCKET = "raysam"
NAMESPACE_SCRIPT = r"""
set -e
if [ -n "$RAYSAM_KEEP" ]; then mount --bind "$RAYSAM_KEEP" /mnt; fi
mount -t tmpfs -o size=4g,mode=1777 none /tmp
if [ -n "$RAYSAM_KEEP" ]; then mkdir -p "$RAYSAM_KEEP"; mount --bind /mnt "$RAYSAM_KEEP"; fi
mkdir -p "$HOME"
exec "$@"
"""


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _stop_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process group we created and every descendant, then reap."""
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class S3Server:
    """moto's S3 on loopback with IAM auth on; ``env(user)`` gives a client's AWS variables."""

    def __init__(self, workdir: Path):
        import boto3

        self.port = free_ports(1)[0][0]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}  # then every call is signed
        self.log = open(workdir / "moto.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p",
             str(self.port)], stdout=self.log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        _wait_port(self.port)
        self.keys: dict[str, tuple[str, str]] = {}
        anon = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1", **anon)
        iam.create_user(UserName="rw")
        key = iam.create_access_key(UserName="rw")["AccessKey"]
        iam.put_user_policy(UserName="rw", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        self.keys["rw"] = (key["AccessKeyId"], key["SecretAccessKey"])
        iam = self.client("iam")
        iam.create_user(UserName="ro")
        key = iam.create_access_key(UserName="ro")["AccessKey"]
        iam.put_user_policy(UserName="ro", PolicyName="read", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket"],
                 "Resource": "*"}]}))
        self.keys["ro"] = (key["AccessKeyId"], key["SecretAccessKey"])
        self.keys["bad"] = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
        self.client("s3").create_bucket(Bucket=BUCKET)

    def env(self, user: str = "rw") -> dict[str, str]:
        key, secret = self.keys[user]
        return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self, service: str = "s3", user: str = "rw"):
        import boto3

        key, secret = self.keys[user]
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key=secret)

    def uri(self, prefix: str, bucket: str = BUCKET, port: int | None = None) -> str:
        return (f"s3://{bucket}/{prefix}?endpoint_override=127.0.0.1:{port or self.port}"
                "&scheme=http")

    def keys_under(self, prefix: str) -> list[str]:
        s3, out, token = self.client(), [], None
        while True:
            kw = {"ContinuationToken": token} if token else {}
            page = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix, **kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def stop(self) -> None:
        _stop_tree(self.proc)
        self.log.close()


def node_env(token: str, aws: dict[str, str]) -> dict[str, str]:
    """A Ray node's environment: this Python first on PATH, its own HOME inside its /tmp, the
    cluster's token and S3 credentials, nothing that points at the client's files."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARS}
    env.update(aws)
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "HOME": "/tmp/home", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "PYTHONUNBUFFERED": "1",
        # notice a killed node within a few seconds (defaults: ~30 s)
        "RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
        "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3",
    })
    if sys.prefix.startswith("/tmp/"):
        env["RAYSAM_KEEP"] = sys.prefix
    return env


class IsolatedNode:
    """One Ray node in its own mount namespace; ``head`` or joining ``gcs_address``."""

    def __init__(self, workdir: Path, env: dict[str, str], num_cpus: int = 1,
                 gcs_address: str | None = None):
        names = PORT_NAMES if gcs_address is None else NODE_PORTS
        ports, wbase = free_ports(len(names), span=32)
        self.ports = dict(zip(names, ports, strict=True))
        ray_bin = Path(sys.executable).with_name("ray")
        cmd = [str(ray_bin), "start", "--block", "--node-ip-address", "127.0.0.1",
               "--num-cpus", str(num_cpus), "--temp-dir", "/tmp/rn",
               "--object-store-memory", str(200 * 1024 * 1024),
               "--min-worker-port", str(wbase), "--max-worker-port", str(wbase + 31),
               "--disable-usage-stats"]
        if gcs_address is None:
            cmd += ["--head", "--dashboard-host", "127.0.0.1", "--include-dashboard", "true"]
        else:
            cmd += ["--address", gcs_address]
        for name, port in self.ports.items():
            cmd += [f"--{name.replace('_', '-')}", str(port)]
        self.log_path = workdir / f"node-{ports[0]}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", NAMESPACE_SCRIPT,
             "raysam-node", *cmd], stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.token = env["RAY_AUTH_TOKEN"]
        time.sleep(0.5)
        if self.proc.poll() is not None:
            self.log.close()
            raise RuntimeError(
                "Could not start a Ray node in its own mount namespace (`unshare --mount` "
                f"exited with {self.proc.returncode}; it needs root or CAP_SYS_ADMIN). This "
                "test proves the remote path on an isolated cluster and cannot run without "
                f"it. Node log:\n{self.log_path.read_text(errors='replace')[-2000:]}")

    address = HeadState.address  # the same ports, the same addresses as the local head
    gcs_address = HeadState.gcs_address

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def alive_nodes(self) -> list[dict]:
        import requests

        try:
            r = requests.get(f"{self.address}/api/v0/nodes?detail=1", headers=self.headers,
                             timeout=5)
            return [n for n in r.json()["data"]["result"]["result"] if n["state"] == "ALIVE"]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return []

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_nodes(self, n: int, timeout: float = 120.0,
                   joining: IsolatedNode | None = None) -> None:
        """Wait until the head sees ``n`` alive nodes; fail early when the head (or the
        ``joining`` node) exits, naming its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the head exited: {self.log_tail()}")
            if joining is not None and joining.proc.poll() is not None:
                raise RuntimeError(f"the joining node exited: {joining.log_tail()}")
            if len(self.alive_nodes()) == n:
                return
            time.sleep(0.5)
        joined = f"; joining node log: {joining.log_tail()}" if joining is not None else ""
        raise RuntimeError(f"{n} node(s) not alive after {timeout:.0f} s; head log: "
                           f"{self.log_tail()}{joined}")

    def train_worker_nodes(self) -> list[str]:
        """Node ids of the alive Ray Train worker actors."""
        import requests

        r = requests.get(f"{self.address}/api/v0/actors?detail=1&limit=1000",
                         headers=self.headers, timeout=10)
        actors = r.json()["data"]["result"]["result"]
        return [a["node_id"] for a in actors if a.get("state") == "ALIVE"
                and "TrainWorker" in str(a.get("class_name"))]

    def stop(self) -> None:
        _stop_tree(self.proc)
        self.log.close()


class Client:
    """``python -m napari_raysam.cli ...`` with the client's environment; lines collected."""

    def __init__(self, env: dict, *args: str):
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "napari_raysam.cli", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, stdin=subprocess.DEVNULL)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self) -> list[dict]:
        out = []
        for line in list(self.lines):
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def wait_for(self, pred, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events():
                if pred(e):
                    return e
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.2)
        raise AssertionError("never saw the event; output:\n" + "\n".join(self.lines[-60:]))

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code

    @property
    def text(self) -> str:
        return "\n".join(self.lines)
