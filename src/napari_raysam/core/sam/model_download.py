"""Fail fast and clearly when micro-sam registry weights are missing and cannot be fetched."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

from napari_raysam.core.errors import RaysamError


def registry_files(name: str) -> list[str]:
    """The registry entries a model name needs (its weights and, if any, its decoder)."""
    from micro_sam.util import models

    registry = models().registry
    return [n for n in (name, f"{name}_decoder") if n in registry]


def ensure_registry_weights(name: str, timeout: float = 3.0) -> None:
    """Return if ``name``'s weights are cached or the server is reachable; else raise.

    micro-sam's registry (pooch) downloads missing weights; offline that can take minutes
    to fail with a network traceback, so probe the server first with a short timeout.
    """
    from micro_sam.util import models

    registry = models()
    missing = [n for n in registry_files(name) if not (Path(registry.abspath) / n).exists()]
    if not missing:
        return
    url = registry.get_url(missing[0])
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise RaysamError(
            f"The weights for {name!r} are not in the local cache ({registry.abspath}) and could "
            f"not be downloaded from {host} ({exc.__class__.__name__}). Connect to the internet "
            f"once, or download the file yourself and give its path as the model "
            f"(e.g. --model /path/to/{name}.pt), or use the offline model 'tiny'."
        ) from exc
