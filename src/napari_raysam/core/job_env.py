"""What every job entrypoint does first on the cluster: attach to Ray."""

from __future__ import annotations

import os


def ensure_ray(log_to_driver: bool = True) -> None:
    """Attach to RAY_ADDRESS (a Ray Job sets it) or start a local cluster; reuse an existing.

    ``ray.init`` resets the ``ray`` logger's level: it keeps the level the process chose (the
    command line quiets Ray unless ``--verbose``; otherwise it is Ray's own INFO)."""
    import logging

    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=log_to_driver,
                 logging_level=logging.getLogger("ray").level or logging.INFO)
