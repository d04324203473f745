"""The deployment files in deploy/ agree with the package they deploy.

Static checks only (no Docker engine, no Kubernetes, no network): every YAML parses, the Ray and
Python versions match pyproject's pins, the KubeRay GPU group is schedulable and has a memory
/dev/shm, token auth is on everywhere, the RayJob entrypoint parses with the real job parser,
docker-compose publishes only the Jobs API and MinIO on loopback. The storage side (MinIO,
S3 credentials, the docs' storage profiles) is checked in test_deploy_storage.py.
docs/deployment.md says what these checks cannot cover.
"""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
RAYCLUSTER = DEPLOY / "kuberay" / "raycluster.yaml"
RAYJOB = DEPLOY / "kuberay" / "rayjob.yaml"
S3_SECRET = DEPLOY / "kuberay" / "s3-secret.example.yaml"
MINIO_POLICY = DEPLOY / "minio" / "raysam-rw.json"
DOCS = ROOT / "docs" / "deployment.md"

#: The Ray node services of docker-compose; the others serve storage.
RAY_SERVICES = ("head", "worker")
#: Environment variables that hold secrets: never a literal value in a deploy file.
SECRET_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
               "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "RAY_AUTH_TOKEN")

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dependency_spec(name: str) -> SpecifierSet:
    for line in PYPROJECT["project"]["dependencies"]:
        req = Requirement(line)
        if canonicalize_name(req.name) == canonicalize_name(name):
            return req.specifier
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


RAY_SPEC = _dependency_spec("ray")
PYTHON_SPEC = SpecifierSet(PYPROJECT["project"]["requires-python"])


def _load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _walk(obj) -> Iterator[dict]:
    """Every mapping nested anywhere in a parsed YAML document."""
    if isinstance(obj, dict):
        yield obj
        for value in obj.values():
            yield from _walk(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _walk(value)


def _ray_cluster_specs() -> list[tuple[str, dict]]:
    """(label, RayClusterSpec) of the RayCluster and of the RayJob's own cluster."""
    specs = []
    for path in (RAYCLUSTER, RAYJOB):
        for doc in _load(path):
            if doc.get("kind") == "RayCluster":
                specs.append((f"{path.name}: RayCluster", doc["spec"]))
            elif doc.get("kind") == "RayJob":
                specs.append((f"{path.name}: RayJob.rayClusterSpec", doc["spec"]["rayClusterSpec"]))
    assert len(specs) == 2, specs
    return specs


def _pod_specs(cluster: dict) -> list[tuple[str, dict]]:
    pods = [("head", cluster["headGroupSpec"]["template"]["spec"])]
    pods += [(group["groupName"], group["template"]["spec"])
             for group in cluster.get("workerGroupSpecs", [])]
    return pods


def _gpu_limit(pod: dict) -> int:
    return sum(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
               for c in pod["containers"])


def _rayjob() -> dict:
    (job,) = [doc for doc in _load(RAYJOB) if doc.get("kind") == "RayJob"]
    return job


def _dockerfile_args() -> dict[str, str]:
    args = {}
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"^\s*ARG\s+(\w+)=(\S+)\s*$", line)
        if m:
            args.setdefault(m.group(1), m.group(2))
    return args


def _train_parser() -> argparse.ArgumentParser:
    from napari_raysam.train import add_train_arguments

    parser = argparse.ArgumentParser(prog="python -m napari_raysam.train", exit_on_error=False)
    add_train_arguments(parser)
    return parser


def _compose_port(entry) -> tuple[str | None, str, str]:
    """(host_ip, published, target) of a compose `ports:` entry, short or long syntax."""
    if isinstance(entry, dict):
        return entry.get("host_ip"), str(entry.get("published", "")), str(entry["target"])
    parts = str(entry).split("/")[0].rsplit(":", 2)
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return None, parts[0], parts[1]
    return None, "", parts[0]


# --- every file parses ----------------------------------------------------------------------


def test_every_yaml_under_deploy_parses():
    files = sorted({*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")})
    assert {COMPOSE, RAYCLUSTER, RAYJOB} <= set(files)
    for path in files:
        docs = _load(path)
        assert docs, f"{path} holds no YAML document"
        assert all(isinstance(doc, dict) for doc in docs), path


def test_kuberay_manifests_use_the_v1_api():
    for path in (RAYCLUSTER, RAYJOB):
        for doc in _load(path):
            if doc["kind"] in ("RayCluster", "RayJob"):
                assert doc["apiVersion"] == "ray.io/v1", path


# --- versions agree with pyproject ------------------------------------------------------------


def test_dockerfile_python_and_ray_match_pyproject():
    args = _dockerfile_args()
    ray_version, python_version = args["RAY_VERSION"], args["PYTHON_VERSION"]
    assert Version(ray_version) in RAY_SPEC, (ray_version, str(RAY_SPEC))
    assert Version(python_version) in PYTHON_SPEC, (python_version, str(PYTHON_SPEC))
    # The image runs the Python the project targets: the minimum requires-python allows.
    (lower,) = [s.version for s in PYTHON_SPEC if s.operator == ">="]
    assert Version(python_version).release[:2] == Version(lower).release[:2]
    assert args["PYTHON_TAG"] == "py" + python_version.replace(".", "")
    text = DOCKERFILE.read_text()
    assert re.search(
        r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON_TAG\}-\$\{RAY_VARIANT\}\s*$",
        text, re.M), "the base image must be rayproject/ray tagged from the version ARGs"
    assert args["RAY_VARIANT"] in ("cpu", "gpu") or args["RAY_VARIANT"].startswith("cu")


def test_dockerfile_installs_torch_micro_sam_and_this_package_within_the_pins():
    args = _dockerfile_args()
    for arg, dist in (("TORCH_VERSION", "torch"), ("TORCHVISION_VERSION", "torchvision"),
                      ("MICRO_SAM_VERSION", "micro-sam")):
        assert Version(args[arg]) in _dependency_spec(dist), (arg, args[arg])
    text = DOCKERFILE.read_text().replace("\\\n", " ")  # join continued lines
    assert re.search(r"pip install .*torch==\$\{TORCH_VERSION\}", text)
    assert re.search(r"pip install .*micro-sam==\$\{MICRO_SAM_VERSION\}", text)
    assert re.search(r"^COPY .*\bsrc\b", text, re.M) and "pyproject.toml" in text
    assert re.search(r"pip install /home/ray/napari-raysam\s*$", text, re.M)
    # Ray's images run as the non-root user `ray`; the image must end as that user too.
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")


def test_manifests_name_the_pinned_ray_and_python_versions():
    python_tag = _dockerfile_args()["PYTHON_TAG"]
    for label, cluster in _ray_cluster_specs():
        assert Version(str(cluster["rayVersion"])) in RAY_SPEC, label
    ray_nodes = [{"image": s["image"]} for n, s in _compose_services().items() if n in RAY_SERVICES]
    images = [(path.name, d["image"]) for path, docs in ((COMPOSE, ray_nodes),
                                                        (RAYCLUSTER, _load(RAYCLUSTER)),
                                                        (RAYJOB, _load(RAYJOB)))
              for doc in docs for d in _walk(doc) if isinstance(d.get("image"), str)]
    assert len(images) >= 6, images
    for name, image in images:
        # Our tag convention (<version>-ray<ray>-py<python>-<variant>) or Ray's own image.
        versions = re.findall(r"(?:rayproject/ray:|-ray)(\d+\.\d+\.\d+)", image)
        assert versions, f"{name}: image {image} does not name its Ray version"
        assert all(Version(v) in RAY_SPEC for v in versions), (name, image)
        assert f"-{python_tag}-" in image, (name, image)


# --- KubeRay: GPU group, /dev/shm, token auth, RayJob --------------------------------------


CLUSTERS = [pytest.param(label, spec, id=label) for label, spec in _ray_cluster_specs()]


@pytest.mark.parametrize("label,cluster", CLUSTERS)
def test_kuberay_gpu_group_tolerates_gpu_taint_and_mounts_memory_shm(label, cluster):
    gpu_groups = [(name, pod) for name, pod in _pod_specs(cluster)
                  if name != "head" and _gpu_limit(pod) > 0]
    assert gpu_groups, f"{label}: no worker group with nvidia.com/gpu limits"
    assert _gpu_limit(cluster["headGroupSpec"]["template"]["spec"]) == 0, "the head is CPU-only"
    for name, pod in gpu_groups:
        tolerations = pod.get("tolerations", [])
        assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations), (label, name)
    for name, pod in _pod_specs(cluster):
        shm = {v["name"] for v in pod.get("volumes", [])
               if (v.get("emptyDir") or {}).get("medium") == "Memory"}
        assert shm, f"{label}/{name}: no memory-backed emptyDir"
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/dev/shm") in shm, f"{label}/{name}: /dev/shm is not in memory"


@pytest.mark.parametrize("label,cluster", CLUSTERS)
def test_kuberay_token_auth_is_on(label, cluster):
    assert cluster.get("authOptions", {}).get("mode") == "token", label


def test_rayjob_entrypoint_parses_with_the_real_train_parser():
    job = _rayjob()
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "napari_raysam.train"]
    try:
        args = _train_parser().parse_args(argv[3:])
    except (argparse.ArgumentError, SystemExit) as exc:  # pragma: no cover - the failure path
        pytest.fail(f"the RayJob entrypoint does not parse: {exc}")
    assert args.json, "napari and the logs read JSON events"
    assert args.mode == "decoder" and args.workers == 2 and args.gpus_per_worker == 1

    cluster = job["spec"]["rayClusterSpec"]
    # The dataset and the run storage lie on a volume every pod mounts (Ray Train needs shared
    # storage across workers).
    for name, pod in _pod_specs(cluster):
        for container in pod["containers"]:
            mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
            for path in (args.dataset, args.storage):
                assert any(path.startswith(m.rstrip("/") + "/") for m in mounts), (name, path)
    # The cluster offers the GPUs the run asks for.
    gpus = sum(int(g["replicas"]) * _gpu_limit(g["template"]["spec"])
               for g in cluster["workerGroupSpecs"])
    assert gpus >= args.workers * args.gpus_per_worker


def test_rayjob_lifecycle_and_cluster_selector_alternative():
    spec = _rayjob()["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0
    # The commented alternative selects the RayCluster that raycluster.yaml defines.
    (cluster,) = [d for d in _load(RAYCLUSTER) if d["kind"] == "RayCluster"]
    text = RAYJOB.read_text()
    assert re.search(r"^\s*#\s*clusterSelector:\s*$", text, re.M)
    selected = re.search(r"^\s*#\s*ray\.io/cluster:\s*(\S+)\s*$", text, re.M)
    assert selected and selected.group(1) == cluster["metadata"]["name"]


def test_the_selectable_raycluster_mounts_the_entrypoint_paths():
    # With clusterSelector the job runs on raycluster.yaml's cluster: same paths must exist there.
    args = _train_parser().parse_args(shlex.split(_rayjob()["spec"]["entrypoint"])[3:])
    (cluster,) = [d["spec"] for d in _load(RAYCLUSTER) if d["kind"] == "RayCluster"]
    for name, pod in _pod_specs(cluster):
        for container in pod["containers"]:
            mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", [])]
            for path in (args.dataset, args.storage):
                assert any(path.startswith(m) for m in mounts), (name, path)


# --- docker-compose ------------------------------------------------------------------------


def _compose_services() -> dict[str, dict]:
    (compose,) = _load(COMPOSE)
    return compose["services"]


def test_compose_publishes_the_jobs_api_on_loopback_only():
    published = []
    for name, service in _compose_services().items():
        for entry in service.get("ports", []):
            host_ip, host_port, target = _compose_port(entry)
            assert host_ip == "127.0.0.1", f"{name} publishes {entry!r} beyond loopback"
            published.append((name, host_port, target))
    assert ("head", "8265", "8265") in published
    assert ("minio", "9000", "9000") in published, "napari reaches MinIO on 127.0.0.1:9000"
    assert sorted(published) == [("head", "8265", "8265"), ("minio", "9000", "9000")], \
        "only the Jobs API and MinIO's S3 API are published (not the GCS, not MinIO's console)"


def test_compose_head_worker_token_shm_and_storage():
    services = _compose_services()
    head, worker = services["head"], services["worker"]
    head_cmd, worker_cmd = shlex.split(head["command"]), shlex.split(worker["command"])
    assert head_cmd[:3] == ["ray", "start", "--head"] and "--block" in head_cmd
    assert head_cmd[head_cmd.index("--dashboard-host") + 1] == "0.0.0.0"
    assert head_cmd[head_cmd.index("--port") + 1] == "6379"
    assert worker_cmd[:2] == ["ray", "start"] and "--block" in worker_cmd
    assert worker_cmd[worker_cmd.index("--address") + 1] == "head:6379"
    for name in RAY_SERVICES:
        service = services[name]
        env = service["environment"]
        assert env.get("RAY_AUTH_MODE") == "token", name
        assert env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH"), name
        assert service.get("shm_size"), f"{name}: Docker's 64 MB /dev/shm is too small"
        assert any(str(v).endswith(":/data/raysam") for v in service.get("volumes", [])), name
