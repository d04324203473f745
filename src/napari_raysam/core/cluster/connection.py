"""Reach a cluster: the Jobs-API client factory, the head's summary, the storage probe job and
``connect``. The client process never joins the cluster (no ``ray.init``): everything goes over
the dashboard's HTTP API.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from napari_raysam.core.cluster.local_head import LocalHead
from napari_raysam.core.cluster.profiles import ClusterError, ClusterProfile, validate_address
from napari_raysam.core.storage import Storage, StorageError, redact

#: The probe job's result line starts with this (see napari_raysam.probe).
PROBE_MARK = "RAYSAM-PROBE "


def resolve_address(profile: ClusterProfile, head: LocalHead | None = None,
                    start_local: bool = False) -> str:
    """The Jobs API URL of the profile; for ``local`` the recorded head (started if asked)."""
    if not profile.is_local:
        return validate_address(profile.address)
    head = head or LocalHead()
    state = head.start(profile.token()) if start_local else head.status(profile.token())
    if state is None:
        raise ClusterError("The local cluster is not running; start it (Train dock or "
                           "`napari-raysam cluster start`).")
    return state.address


def make_client(address: str, headers: dict[str, str] | None = None, timeout: float = 60.0):
    """A ``JobSubmissionClient`` whose requests time out (``timeout`` s to read, 5 s to
    connect); construction itself checks the Jobs API. Errors become ClusterError."""
    from ray.job_submission import JobSubmissionClient

    class _Client(JobSubmissionClient):
        def _do_request(self, method, endpoint, **kwargs):
            kwargs.setdefault("timeout", (5.0, timeout))
            return super()._do_request(method, endpoint, **kwargs)

    probe(address, headers or {}, timeout=5.0)
    try:
        return _Client(address, headers=dict(headers or {}))
    except Exception as exc:  # noqa: BLE001 - turned into a message for the user
        raise _translate(exc, address) from None


def _translate(exc: Exception, address: str) -> ClusterError:
    from ray.exceptions import AuthenticationError

    if isinstance(exc, AuthenticationError):
        return ClusterError(f"The cluster at {address} refused the auth token; set the right "
                            "token in the profile's token variable.")
    return ClusterError(f"The Jobs API at {address} failed: {type(exc).__name__}. Check the "
                        "address and that the head is running Ray >= 2.0 with the dashboard.")


def probe(address: str, headers: dict[str, str], timeout: float = 5.0) -> dict:
    """GET /api/version and /api/jobs/ with short timeouts; ClusterError for each failure kind:
    unreachable, not a Ray dashboard, token missing or refused. Returns the version JSON."""
    import requests

    def get(endpoint: str):
        try:
            return requests.get(address + endpoint, headers=headers, timeout=timeout)
        except requests.exceptions.SSLError:
            raise ClusterError(f"TLS to {address} failed; check the certificate, or use http:// "
                               "if the head has no TLS.") from None
        except (requests.ConnectionError, requests.Timeout):
            raise ClusterError(f"Cannot reach {address} within {timeout:.0f} s. Check the host and "
                               "port, that the Ray head is running and that a port-forward or "
                               "ingress to its dashboard (port 8265) is up.") from None

    r = get("/api/version")
    _check_auth(r, address)
    try:
        version = r.json()
        assert r.status_code == 200 and "ray_version" in version
    except (ValueError, AssertionError):
        raise ClusterError(f"{address} answers (HTTP {r.status_code}) but is not a Ray dashboard "
                           "with the Jobs API. Check the port (the dashboard's default is "
                           "8265).") from None
    jobs = get("/api/jobs/")
    _check_auth(jobs, address)
    if jobs.status_code != 200:
        raise ClusterError(f"The Ray dashboard at {address} has no working Jobs API (HTTP "
                           f"{jobs.status_code}); start the head with ray[default] installed.")
    version["jobs"] = jobs.json()
    return version


def _check_auth(r, address: str) -> None:
    if r.status_code == 401:
        raise ClusterError(f"The cluster at {address} requires an auth token; set the profile's "
                           "token variable (token_env) to the cluster's token.")
    if r.status_code == 403:
        raise ClusterError(f"The cluster at {address} refused the auth token; check the value "
                           "of the profile's token variable (token_env).")


@dataclass
class ClusterSummary:
    """What the Train dock shows after connecting."""

    address: str
    ray_version: str
    client_ray_version: str
    python_version: str | None
    client_python_version: str
    nodes: int
    cpus: float
    gpus: float
    memory_gb: float
    running_jobs: list[str]
    warnings: list[str] = field(default_factory=list)
    cluster_versions: dict = field(default_factory=dict)
    storage_checked: bool = False

    def text(self) -> str:
        lines = [f"{self.address}: Ray {self.ray_version} (client {self.client_ray_version}), "
                 f"Python {self.python_version or '?'} (client {self.client_python_version})",
                 f"{self.nodes} node(s), {self.cpus:g} CPUs, {self.gpus:g} GPUs, "
                 f"{self.memory_gb:.1f} GB memory; {len(self.running_jobs)} running job(s)"]
        if self.storage_checked:
            v = self.cluster_versions
            lines.append("storage reachable from both sides; cluster torch "
                         f"{v.get('torch') or 'missing'}, "
                         f"micro-sam {v.get('micro-sam') or 'missing'}")
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def _minor(version: str | None) -> str:
    return ".".join((version or "").split(".")[:2])


def package_dir() -> str:
    """This package's folder, shipped to jobs as ``runtime_env.py_modules``."""
    import napari_raysam

    return str(Path(napari_raysam.__file__).resolve().parent)


def check_cluster_storage(client, storage_uri: str, timeout: float = 180.0) -> dict:
    """Run the probe job (``python -m napari_raysam.probe``) on the cluster: it writes and
    reads a probe object under ``storage_uri`` from the cluster's side. Returns the cluster's
    versions; StorageError naming the cluster side and the fix when it cannot use the storage,
    ClusterError when the probe itself does not run."""
    import json
    import secrets
    import shlex
    import time

    name = f"raysam-probe-{secrets.token_hex(4)}"
    entry = shlex.join(["python", "-m", "napari_raysam.probe", storage_uri])
    try:
        client.submit_job(entrypoint=entry, submission_id=name,
                          runtime_env={"py_modules": [package_dir()]},
                          metadata={"napari_raysam_probe": "1"})
    except Exception as exc:  # noqa: BLE001 - turned into a message
        raise ClusterError(f"The cluster did not accept the storage probe job "
                           f"({type(exc).__name__}: {str(exc)[:200]}).") from None
    deadline, status = time.monotonic() + timeout, "PENDING"
    while time.monotonic() < deadline:
        status = str(client.get_job_status(name).value)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(0.5)
    else:
        try:
            client.stop_job(name)
        except Exception:  # noqa: BLE001 - best effort
            pass
        raise ClusterError(f"The storage probe job did not finish within {timeout:.0f} s (it is "
                           f"{status}); the cluster may be busy or lack free CPUs. Retry later.")
    logs = client.get_job_logs(name)
    line = next((x for x in reversed(logs.splitlines()) if x.startswith(PROBE_MARK)), None)
    if status != "SUCCEEDED" or line is None:
        tail = "\n".join(logs.splitlines()[-10:])
        raise ClusterError(f"The storage probe job {status} on the cluster; is napari-raysam's "
                           f"image (torch, ray, pyarrow) installed there? Its log ends:\n{tail}")
    result = json.loads(line[len(PROBE_MARK):])
    if not result.get("storage_ok"):
        raise StorageError(f"The cluster cannot use the storage {redact(storage_uri)}: "
                           f"{result.get('storage_error')} This computer can; fix the cluster "
                           "side (its credentials, or an endpoint its nodes can reach).")
    return result.get("versions", {})


def connect(profile: ClusterProfile, timeout: float = 5.0, check_storage: bool = True,
            head: LocalHead | None = None, start_local: bool = False) -> ClusterSummary:
    """Check the profile end to end (address, token, Jobs API, storage) and summarise the
    cluster; ``start_local`` starts the embedded head for the ``local`` profile if needed.
    For a remote profile the storage is checked from this computer and then from the cluster
    (a probe job). Raises ClusterError/StorageError with a message naming the fix."""
    import ray
    import requests

    profile.validate()
    address = resolve_address(profile, head, start_local=start_local)
    headers = profile.headers()
    info = probe(address, headers, timeout)
    nodes: list = []
    try:
        r = requests.get(f"{address}/api/v0/nodes?detail=1&limit=1000", headers=headers,
                         timeout=timeout)
        nodes = [n for n in r.json()["data"]["result"]["result"] if n.get("state") == "ALIVE"]
        r = requests.get(f"{address}/api/v0/cluster_metadata", headers=headers, timeout=timeout)
        info["python_version"] = r.json()["data"].get("pythonVersion")
    except (requests.RequestException, ValueError, KeyError, TypeError):
        pass
    res = [n.get("resources_total", {}) for n in nodes]
    running = [j.get("submission_id") or j.get("job_id") for j in info.get("jobs", [])
               if j.get("status") in ("PENDING", "RUNNING")]
    client_py = ".".join(map(str, sys.version_info[:3]))
    summary = ClusterSummary(
        address=address, ray_version=info["ray_version"], client_ray_version=ray.__version__,
        python_version=info.get("python_version"), client_python_version=client_py,
        nodes=len(nodes), cpus=sum(x.get("CPU", 0) for x in res),
        gpus=sum(x.get("GPU", 0) for x in res),
        memory_gb=sum(x.get("memory", 0) for x in res) / 1e9, running_jobs=running)
    if _minor(summary.ray_version) != _minor(ray.__version__):
        summary.warnings.append(f"the cluster runs Ray {summary.ray_version} but this client "
                                f"{ray.__version__}; install the same Ray minor version")
    if summary.python_version and _minor(summary.python_version) != _minor(client_py):
        summary.warnings.append(f"the cluster runs Python {summary.python_version}, this client "
                                f"{client_py}; the shipped code must work on both")
    if check_storage:
        Storage.open(profile.storage_uri()).check_writable(timeout=max(timeout, 5.0))
        if not profile.is_local:
            versions = check_cluster_storage(make_client(address, headers), profile.storage_uri())
            summary.cluster_versions = versions
            summary.storage_checked = True
    return summary
