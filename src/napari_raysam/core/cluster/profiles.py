"""Cluster profiles: which cluster (``local``, the embedded head, or a remote head's Jobs API
at ``http(s)://host:8265``), its storage URI and the environment variable holding its token.

The auth token is never stored: a profile names the environment variable that holds it
(``token_env``). Addresses are checked, and a password in one is never echoed back.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from urllib.parse import urlparse

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.paths import cache_dir, config_dir, read_json, write_json_atomic
from napari_raysam.core.storage import validate_storage_uri

LOCAL = "local"
PROFILES_FILE = "profiles.json"


class ClusterError(RaysamError):
    """The cluster cannot be used; the message says why and what to do."""


def validate_address(address: str) -> str:
    """``local`` or a normalised ``http(s)://host[:port]``; ClusterError naming the fix. The
    messages show the address with any ``user:password@`` replaced by ``***@``."""
    address = (address or "").strip()
    if address == LOCAL:
        return address
    shown = _without_user_info(address)
    hint = "Use 'local' or the Jobs API address of the head, e.g. http://head-host:8265."
    if not address:
        raise ClusterError(f"The cluster address is empty. {hint}")
    if address.startswith("ray://"):
        raise ClusterError(f"{shown} is a Ray Client address; napari-raysam talks to the Jobs "
                           f"API instead. {hint}")
    if "://" not in address:
        if address.startswith(":"):
            raise ClusterError(f"The address {shown!r} has a port but no host. {hint}")
        raise ClusterError(f"The address {shown!r} has no scheme; write "
                           f"http://{shown.rpartition('@')[2]} "
                           "(or https:// behind TLS).")
    url = urlparse(address)
    if url.scheme not in ("http", "https"):
        raise ClusterError(f"The address scheme {url.scheme!r} is not supported. {hint}")
    if "@" in address:  # first: a ':', '/' or '#' in a password confuses the checks below
        raise ClusterError(f"The address {shown!r} has extra parts: a user name or password "
                           "(user:password@), which napari-raysam never sends. Remove it and give "
                           "the cluster's auth token through the profile's token variable.")
    try:
        port = url.port
    except ValueError:
        raise ClusterError(f"The port in {shown!r} is not a number from 1 to 65535. {hint}") \
            from None
    if not url.hostname:
        raise ClusterError(f"The address {shown!r} has no host. {hint}")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ClusterError(f"The address {shown!r} has extra parts (path or query); "
                           f"give only scheme, host and port. {hint}")
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return f"{url.scheme}://{host}" + (f":{port}" if port else "")


def _without_user_info(address: str) -> str:
    """``address`` with everything before its last ``@`` but the scheme replaced by ``***``:
    a ``user:password@`` is never repeated (an ``@`` elsewhere hides more, never less)."""
    before, at, after = address.rpartition("@")
    if not at:
        return address
    scheme, sep, _ = before.partition("://")
    return f"{scheme}://***@{after}" if sep else f"***@{after}"


def validate_token(token: str, source: str = "the token") -> str:
    """The token unchanged if usable; the message never contains the token itself."""
    if not token:
        raise ClusterError(f"{source} is empty; set it to the cluster's auth token.")
    if any(c.isspace() for c in token):
        raise ClusterError(f"{source} contains whitespace (often a trailing newline from a "
                           "file); remove it, e.g. export VAR=\"$(tr -d '[:space:]' < file)\".")
    if not token.isprintable():
        raise ClusterError(f"{source} contains control characters; copy the token again.")
    return token


@dataclass
class ClusterProfile:
    """A named cluster. ``storage`` None means the local default (required for remote)."""

    name: str = LOCAL
    address: str = LOCAL
    token_env: str | None = None
    storage: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    @property
    def is_local(self) -> bool:
        return self.address == LOCAL

    def validate(self) -> ClusterProfile:
        """Check every field (no I/O); returns self."""
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ClusterError(f"The profile name {self.name!r} must be letters, digits, '-' or "
                               "'_'; rename it.")
        self.address = validate_address(self.address)
        if self.token_env is not None and not self.token_env.replace("_", "").isalnum():
            raise ClusterError(f"{self.token_env!r} is not an environment variable name; give the "
                               "NAME of the variable holding the token, not the token itself.")
        if self.storage is None and not self.is_local:
            raise ClusterError(f"The remote profile {self.name!r} needs a storage URI that the "
                               "cluster and this computer both reach (a shared folder, s3:// or "
                               "gs://).")
        if self.storage is not None:
            self.storage = validate_storage_uri(self.storage)
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ClusterError("Resources per worker must be > 0 CPUs and >= 0 GPUs.")
        return self

    def storage_uri(self) -> str:
        return self.storage or str(cache_dir() / "runs")

    def token(self) -> str | None:
        """The token from ``token_env`` (None without one); a clear error if it is unusable."""
        if not self.token_env:
            return None
        value = os.environ.get(self.token_env)
        if value is None:
            raise ClusterError(f"The profile {self.name!r} reads its token from the environment "
                               f"variable {self.token_env}, which is not set; set it and retry.")
        return validate_token(value, f"The token in ${self.token_env}")

    def headers(self) -> dict[str, str]:
        token = self.token()
        return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass
class ProfileStore:
    """Profiles in ``profiles.json`` under the config dir (never a token)."""

    path: Path = field(default_factory=lambda: config_dir() / PROFILES_FILE)

    def list(self) -> list[ClusterProfile]:
        data = read_json(self.path, {"profiles": []})
        names = {f.name for f in fields(ClusterProfile)}
        out = [ClusterProfile(**{k: v for k, v in p.items() if k in names})
               for p in data.get("profiles", [])]
        if not any(p.name == LOCAL for p in out):
            out.insert(0, ClusterProfile())
        return out

    def get(self, name: str) -> ClusterProfile:
        for p in self.list():
            if p.name == name:
                return p
        raise ClusterError(f"No cluster profile named {name!r}; known: "
                           f"{', '.join(p.name for p in self.list())}. Add it first.")

    def save(self, profile: ClusterProfile) -> None:
        profile.validate()
        rest = [p for p in self.list() if p.name != profile.name]
        write_json_atomic(self.path, {"profiles": [asdict(p) for p in [*rest, profile]]})

    def delete(self, name: str) -> None:
        keep = [asdict(p) for p in self.list() if p.name != name]
        write_json_atomic(self.path, {"profiles": keep})
