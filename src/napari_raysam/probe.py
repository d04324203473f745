"""Probe job: ``python -m napari_raysam.probe STORAGE_URI``.

Run on a cluster by Connect (and ``napari-raysam cluster check``) before anything is uploaded:
writes, reads back and deletes a probe object under the storage URI from the cluster's side and
reports the cluster's Python/Ray/torch/micro-sam versions. Prints one JSON line starting with
``RAYSAM-PROBE`` and exits 0 whether or not the storage works (the line says).
"""

from __future__ import annotations

import json
import platform
import sys

from napari_raysam.core.cluster import PROBE_MARK


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("ray", "torch", "micro-sam", "pyarrow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def probe(uri: str) -> dict:
    """``{"versions": {...}, "storage_ok": bool, "storage_error": str | None}``."""
    from napari_raysam.core.errors import RaysamError
    from napari_raysam.core.storage import Storage

    result = {"versions": _versions(), "storage_ok": False, "storage_error": None}
    try:
        Storage.open(uri, side="the cluster").check_writable(side="the cluster")
        result["storage_ok"] = True
    except RaysamError as exc:
        result["storage_error"] = str(exc)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m napari_raysam.probe STORAGE_URI", file=sys.stderr)
        return 2
    print(PROBE_MARK + json.dumps(probe(argv[0])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
