"""The deployment files in deploy/ agree with the package they deploy.

Static checks only (no Docker engine, no Kubernetes, no network): every YAML parses, the Ray and
Python versions match pyproject's pins, the KubeRay GPU group is schedulable and has a memory
/dev/shm, token auth is on everywhere, the RayJob entrypoint parses with the real job parser,
docker-compose publishes only the Jobs API and MinIO on loopback, the storage images are pinned,
no credential is a literal (compose: git-ignored env files; KubeRay: secretKeyRef), and the
"Storage" section of docs/deployment.md gives a working profile for each storage kind.
docs/deployment.md says what these checks cannot cover.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

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


# --- storage: MinIO in docker-compose ---------------------------------------------------------


MINIO_RELEASE = r"RELEASE\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z"


def _image_default(image: str) -> str:
    """The image compose uses when the variable is unset: `${VAR:-default}` -> default."""
    m = re.fullmatch(r"\$\{\w+:-([^}]+)\}", image)
    return m.group(1) if m else image


def _service_by_image(fragment: str) -> tuple[str, dict]:
    found = [(name, s) for name, s in _compose_services().items()
             if fragment in str(s.get("image", ""))]
    assert len(found) == 1, f"want one compose service running {fragment}, found {found}"
    return found[0]


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def _compose_env(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return env


def _is_reference(value) -> bool:
    """`${VAR}` / `$VAR`: compose takes the value from the caller's environment or .env."""
    return value is None or (isinstance(value, str) and re.fullmatch(r"\$\{?\w+\}?", value))


def test_compose_every_image_is_pinned_and_minio_to_a_release():
    for name, service in _compose_services().items():
        image = _image_default(service["image"])
        _, sep, tag = image.rpartition(":")
        pinned = "@sha256:" in image or (sep and tag and "/" not in tag and tag != "latest")
        assert pinned, f"{name}: image {image} is not pinned to a tag"
    for fragment in ("minio/minio", "minio/mc"):
        _, service = _service_by_image(fragment)
        assert re.search(":" + MINIO_RELEASE + "$", service["image"]), service["image"]


def test_compose_minio_init_creates_the_profile_bucket_before_the_ray_nodes_start():
    services = _compose_services()
    minio_name, minio = _service_by_image("minio/minio")
    init_name, init = _service_by_image("minio/mc")
    assert minio.get("healthcheck", {}).get("test"), "MinIO needs a healthcheck to depend on"
    assert init["depends_on"][minio_name]["condition"] == "service_healthy"
    assert str(init.get("restart", "no")) == "no", "the init is one-shot"
    for name in RAY_SERVICES:
        assert services[name]["depends_on"][init_name]["condition"] == \
            "service_completed_successfully", name

    command = init["command"]
    script = "\n".join(command) if isinstance(command, list) else str(command)
    bucket = urlparse(_docs_profile("minio")["Storage"]).netloc
    assert re.search(rf"mc mb --ignore-existing \S+/{re.escape(bucket)}\s", script), script
    assert f"http://{minio_name}:9000" in script, "the init talks to MinIO by its service name"
    # Credentials reach the script as shell variables ($$ is compose's escaped $), not literals.
    assert "$$MINIO_ROOT_PASSWORD" in script and "$$AWS_SECRET_ACCESS_KEY" in script

    # napari's S3 user gets read/write on exactly the profile's bucket.
    policy = json.loads(MINIO_POLICY.read_text())
    resources = {r for s in policy["Statement"] for r in s["Resource"]}
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= actions
    mounts = [str(v).split(":") for v in init.get("volumes", [])]
    (target,) = [m[1] for m in mounts if (DEPLOY / m[0]).resolve() == MINIO_POLICY.resolve()]
    assert target in script, "the script reads the mounted policy file"


def test_compose_minio_endpoint_is_the_same_name_and_port_on_both_sides():
    # The profile URI goes unchanged to the job: `minio:9000` must reach MinIO from a Ray
    # container (the compose service name) and from the host (127.0.0.1:9000 + a hosts line).
    minio_name, minio = _service_by_image("minio/minio")
    query = parse_qs(urlparse(_docs_profile("minio")["Storage"]).query)
    host, _, port = query["endpoint_override"][0].partition(":")
    assert host == minio_name and minio.get("hostname", host) == host
    assert query["scheme"] == ["http"]
    published = [_compose_port(entry) for entry in minio.get("ports", [])]
    assert ("127.0.0.1", port, port) in published, "publish MinIO's port unchanged on loopback"
    assert f"--address :{port}" in str(minio["command"]), "MinIO listens on the URI's port"
    for text in (_docs_storage_section("minio"), COMPOSE.read_text()):
        assert f"127.0.0.1 {host}" in text, "say how the host resolves the endpoint name"


def test_compose_credentials_come_from_gitignored_env_files_not_literals():
    services = _compose_services()
    for name, service in services.items():
        env = _compose_env(service)
        for var in SECRET_VARS:
            assert var not in env or _is_reference(env[var]), f"{name}: {var} is a literal"
    ignored = {line.strip() for line in (DEPLOY / ".gitignore").read_text().splitlines()}
    minio_name, _ = _service_by_image("minio/minio")
    init_name, _ = _service_by_image("minio/mc")
    wanted = {minio_name: {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"},
              init_name: {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "AWS_ACCESS_KEY_ID",
                          "AWS_SECRET_ACCESS_KEY"}}
    wanted |= {name: {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} for name in RAY_SERVICES}
    for name, keys in wanted.items():
        given = set()
        for entry in services[name].get("env_file", []):
            rel = (DEPLOY / entry).resolve().relative_to(DEPLOY.resolve())
            assert f"{rel.parts[0]}/" in ignored, f"{name}: {entry} is not git-ignored"
            example = DEPLOY / f"{rel.name}.example"
            assert example.is_file(), f"{name}: no {example.name} documents {entry}"
            values = _env_file(example)
            for key, value in values.items():
                if "SECRET" in key or "PASSWORD" in key:
                    assert value.startswith("change-me"), f"{example.name}: {key} is no placeholder"
            given |= set(values)
        assert keys <= given, (name, keys - given)


def test_no_deploy_file_holds_something_that_looks_like_a_real_key():
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file() and ".secrets" not in p.parts):
        text = path.read_text(errors="replace")
        assert not re.search(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", text), path
        assert "minioadmin" not in text, f"{path}: MinIO's default credentials"


# --- storage: KubeRay takes the S3 key from a Secret ---------------------------------------


def _s3_secret() -> dict:
    (secret,) = [doc for doc in _load(S3_SECRET) if doc.get("kind") == "Secret"]
    return secret


@pytest.mark.parametrize("label,cluster", CLUSTERS)
def test_kuberay_head_and_workers_take_s3_credentials_from_the_secret(label, cluster):
    secret = _s3_secret()
    keys = set(secret.get("stringData") or secret.get("data") or {})
    for group, pod in _pod_specs(cluster):
        for container in pod["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                entry = env.get(var)
                assert entry, f"{label}/{group}/{container['name']}: no {var}"
                assert "value" not in entry, f"{label}/{group}: {var} is a literal"
                ref = entry["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret["metadata"]["name"], (label, group, ref)
                assert ref["key"] in keys, (label, group, ref)


def test_kuberay_no_literal_credentials_and_a_placeholder_secret():
    for path in (RAYCLUSTER, RAYJOB):
        for doc in _load(path):
            for d in _walk(doc):
                if d.get("name") in SECRET_VARS:
                    assert "value" not in d, f"{path.name}: {d['name']} is a literal"
    secret = _s3_secret()
    assert secret["apiVersion"] == "v1" and secret.get("type") == "Opaque"
    data = secret["stringData"]
    assert set(data) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(re.fullmatch(r"<[^<>]+>", str(v)) for v in data.values()), data
    create = f"kubectl create secret generic {secret['metadata']['name']}"
    for path in (S3_SECRET, RAYCLUSTER, DOCS):
        assert create in path.read_text(), f"{path.name} does not say how to create the Secret"


# --- docs/deployment.md: one profile per storage kind ---------------------------------------


#: kind -> a word its "### ..." heading in the Storage section contains.
STORAGE_KINDS = {"minio": "MinIO", "s3": "AWS S3", "gcs": "GCS", "nfs": "NFS"}


def _docs_storage() -> str:
    m = re.search(r"^## Storage\s*$(.*?)(?=^## |\Z)", DOCS.read_text(), re.M | re.S)
    assert m, "docs/deployment.md has no '## Storage' section"
    return m.group(1)


def _docs_storage_section(kind: str) -> str:
    parts = re.split(r"^### (.+)$", _docs_storage(), flags=re.M)
    found = [body for title, body in zip(parts[1::2], parts[2::2], strict=True)
             if STORAGE_KINDS[kind] in title]
    assert len(found) == 1, f"want one '### ...{STORAGE_KINDS[kind]}...' under Storage"
    return found[0]


def _docs_profile(kind: str) -> dict[str, str]:
    """The Train dock fields of a storage kind's table: Address, Token env, Storage."""
    rows = re.findall(r"^\|\s*(Address|Token env|Storage)\s*\|\s*`([^`]+)`",
                      _docs_storage_section(kind), re.M)
    return dict(rows)


def _docs_commands(kind: str, command: str) -> list[list[str]]:
    body = re.sub(r"\\\n\s*", " ", _docs_storage_section(kind))  # join continued lines
    return [shlex.split(line.strip()) for line in body.splitlines()
            if line.strip().startswith(f"napari-raysam {command} ")]


def _assert_no_credentials(uri: str) -> None:
    parsed = urlparse(uri)
    assert "@" not in parsed.netloc, f"{uri}: user:password@ in a storage URI"
    keys = {k.lower() for k in parse_qs(parsed.query)}
    assert not keys & {"access_key", "secret_key", "session_token"}, uri


@pytest.mark.parametrize("kind", STORAGE_KINDS)
def test_docs_give_a_profile_and_a_submit_line_per_storage_kind(kind):
    from napari_raysam.cli import build_parser

    profile = _docs_profile(kind)
    assert set(profile) == {"Address", "Token env", "Storage"}, (kind, profile)
    assert profile["Address"].startswith(("http://", "https://"))
    assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", profile["Token env"]), "the variable's NAME"
    uri = profile["Storage"]
    _assert_no_credentials(uri)
    submits = _docs_commands(kind, "submit")
    assert submits, f"{kind}: no `napari-raysam submit ... --storage` line"
    for argv in submits:
        try:
            args = build_parser().parse_args(argv[1:])
        except SystemExit:  # pragma: no cover - the failure path
            pytest.fail(f"{kind}: {shlex.join(argv)} does not parse")
        assert args.command == "submit"
        assert (args.address, args.token_env, args.storage) == \
            (profile["Address"], profile["Token env"], uri), kind
    from napari_raysam.core.storage import validate_storage_uri

    assert validate_storage_uri(uri)  # the plugin accepts the documented URI as it is
    for argv in _docs_commands(kind, "cluster check"):
        args = build_parser().parse_args(argv[1:])
        assert args.func.__name__ == "_cluster_check" and args.storage, shlex.join(argv)

    body = _docs_storage_section(kind)
    parsed = urlparse(uri)
    query = parse_qs(parsed.query)
    if kind == "minio":
        assert parsed.scheme == "s3" and "endpoint_override" in query
        assert "AWS_EC2_METADATA_DISABLED=true" in body and "deploy/.secrets/s3.env" in body
    elif kind == "s3":
        assert parsed.scheme == "s3" and "endpoint_override" not in query
        assert "AWS_PROFILE" in body or "AWS_ACCESS_KEY_ID" in body
        assert "secretKeyRef" in body
    elif kind == "gcs":
        assert parsed.scheme == "gs"
        assert "GOOGLE_APPLICATION_CREDENTIALS" in body and "application-default" in body
    else:  # nfs: the same absolute path on every node (compose and KubeRay) and the laptop
        assert uri.startswith("/") and "://" not in uri
        services = _compose_services()
        for name in RAY_SERVICES:
            assert any(str(v).endswith(":" + uri) for v in services[name].get("volumes", [])), name
        for label, cluster in _ray_cluster_specs():
            for group, pod in _pod_specs(cluster):
                for container in pod["containers"]:
                    mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
                    assert uri in mounts, (label, group)


def test_docs_say_credentials_never_go_in_the_uri_and_every_uri_is_clean():
    storage = _docs_storage()
    assert "Credentials never go in the URI" in storage
    for refused in ("access_key=", "secret_key=", "user:password@", "refuses"):
        assert refused in storage, refused
    assert "napari-raysam cluster check" in storage, "name the preflight"
    texts = [DOCS.read_text()] + [p.read_text() for p in DEPLOY.rglob("*.y*ml")]
    uris = [u for text in texts for u in re.findall(r"\b(?:s3|gs)://[^\s\"'`<>)|]+", text)]
    assert len(uris) >= 4, uris
    for uri in uris:
        _assert_no_credentials(uri)
