"""The storage side of deploy/ and docs/deployment.md (static checks, as in test_deploy.py):
the storage images are pinned, no credential is a literal (compose: git-ignored env files;
KubeRay: secretKeyRef), and the "Storage" section of docs/deployment.md gives a working profile
and `submit` line for each storage kind."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from test_deploy import (
    CLUSTERS,
    COMPOSE,
    DEPLOY,
    DOCS,
    MINIO_POLICY,
    RAY_SERVICES,
    RAYCLUSTER,
    RAYJOB,
    S3_SECRET,
    SECRET_VARS,
    _compose_port,
    _compose_services,
    _load,
    _pod_specs,
    _ray_cluster_specs,
    _walk,
)

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
