"""What a killed export leaves behind, and removing it safely.

A killed export leaves its temp folder (new set) or its ``*-<token>.tif`` files (append).
Both carry the writer's tag ``<token>-<pid>-<host id>`` (in the folder name, or in an empty
``.raysam-append-<tag>`` marker created before the append's first file and removed after its
commit), so the next write into the same parent folder / set removes exactly the debris whose
writer provably died on this host (:func:`sweep_debris`), never files the manifest lists. No lock
is needed: a running writer's tag exists before its first file and its PID stays alive; debris of
another host, of an untagged (older) export or of a live PID is left alone and only reported by
:func:`~napari_raysam.core.dataset.validate_dataset`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from napari_raysam.core.dataset.format import IMAGES_DIR, LABELS_DIR, MANIFEST, open_dataset

__all__ = ["APPEND_MARKER", "TMP_INFIX", "Debris", "find_debris", "host_id", "sweep_debris",
           "writer_tag"]

#: A new set is written into ``.<name>.raysam-tmp-<tag>`` beside it; an append announces itself
#: with an empty ``.raysam-append-<tag>`` file in the set. ``<tag>`` = ``<token>-<pid>-<host>``
#: names the writer, so a later write can tell a dead writer's debris from a running export.
TMP_INFIX = ".raysam-tmp-"
APPEND_MARKER = ".raysam-append-"
_TAG = re.compile(r"^(?P<token>[0-9a-f]{8})-(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{8})$")


def host_id() -> str:
    """This host (and PID namespace): a PID is only comparable between equal host ids."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}|{namespace}".encode()).hexdigest()[:8]


def writer_tag(token: str) -> str:
    """``<token>-<pid>-<host id>``: names this process as the writer of a new write."""
    return f"{token}-{os.getpid()}-{host_id()}"


def _pid_alive(pid: int) -> bool:
    """The process exists (a zombie counts as dead). Never ``os.kill(pid, 0)``: on Windows
    that terminates the process."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists, owned by someone else


@dataclass
class Debris:
    """What an interrupted export left: a temp folder (new set) or an append's files.

    ``writer``: ``"dead"`` (its process is gone on this host: safe to remove), ``"running"``
    (its PID is alive: an export may still be writing) or ``"unknown"`` (another host, or a
    name without a writer tag): never removed automatically.
    """

    kind: str  # "temp-folder" | "append"
    path: Path  # the temp folder, or the append's marker file
    writer: str
    pid: int | None = None
    files: list[Path] = field(default_factory=list)  # append: files not in manifest.json

    @property
    def token(self) -> str | None:
        """The interrupted write's token (its files are named ``*-<token>.tif``)."""
        match = _TAG.match(self.path.name.rsplit(TMP_INFIX if self.kind == "temp-folder"
                                                 else APPEND_MARKER, 1)[-1])
        return match["token"] if match else None

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid else "an unknown process"
        state = {"dead": f"its writer ({who}) is gone",
                 "running": f"its writer ({who}) is still running",
                 "unknown": "its writer cannot be checked from here"}[self.writer]
        if self.kind == "temp-folder":
            return f"{self.path}: the hidden temp folder of an interrupted new export ({state})"
        return (f"{self.path.parent}: {len(self.files)} file(s) of an interrupted append, not in "
                f"{MANIFEST} ({state}), e.g. {self.files[0].name if self.files else '-'}")


def _judge(tag: str) -> tuple[str, int | None]:
    match = _TAG.match(tag)
    if match is None:
        return "unknown", None
    pid = int(match["pid"])
    if match["host"] != host_id() or pid <= 0:
        return "unknown", pid
    return ("running" if _pid_alive(pid) else "dead"), pid


def find_debris(parent: Path, name: str | None = None, dataset: Path | None = None
                ) -> list[Debris]:
    """Debris of interrupted exports: temp folders in ``parent`` (of set ``name``, or of any
    set) and the unreferenced files of interrupted appends into the set ``dataset``."""
    out: list[Debris] = []
    prefix = f".{name}{TMP_INFIX}" if name is not None else None
    try:
        entries = sorted(Path(parent).iterdir()) if Path(parent).is_dir() else []
    except OSError:
        entries = []
    for entry in entries:
        base = entry.name
        if not base.startswith(".") or TMP_INFIX not in base or not entry.is_dir():
            continue
        if prefix is not None and not base.startswith(prefix):
            continue
        writer, pid = _judge(base.rsplit(TMP_INFIX, 1)[1])
        out.append(Debris("temp-folder", entry, writer, pid))
    if dataset is not None and (Path(dataset) / MANIFEST).is_file():
        out += _append_debris(Path(dataset))
    return out


def _append_debris(dest: Path) -> list[Debris]:
    try:
        listed = {Path(p).as_posix() for r in open_dataset(dest).samples
                  for p in (r.image, r.labels)}
    except Exception:  # noqa: BLE001 - a damaged manifest: never guess what is referenced
        return []
    out = []
    for marker in sorted(dest.glob(f"{APPEND_MARKER}*")):
        tag = marker.name[len(APPEND_MARKER):]
        writer, pid = _judge(tag)
        match = _TAG.match(tag)
        files: list[Path] = []
        if match is not None:
            token = match["token"]
            files = [p for sub in (IMAGES_DIR, LABELS_DIR) for p in sorted((dest / sub).glob(
                f"*-{token}.tif")) if f"{sub}/{p.name}" not in listed]
            files += list(dest.glob(f".{MANIFEST}.tmp-{token}"))
        out.append(Debris("append", marker, writer, pid, files))
    return out


def sweep_debris(dest: str | Path) -> list[Path]:
    """Remove what exports killed on this host left beside ``dest`` (temp folders of any set
    in its parent folder) and in it (an append's unreferenced files). Only debris whose writer
    is provably dead is touched; returns the removed paths."""
    dest = Path(dest).absolute()
    removed = []
    for d in find_debris(dest.parent, dataset=dest):
        if d.writer != "dead":
            continue
        if d.kind == "temp-folder":
            shutil.rmtree(d.path, ignore_errors=True)
        for path in [*d.files, d.path] if d.kind == "append" else ():  # the marker last
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass  # best effort: what stays is reported by validate_dataset
        removed += [d.path, *d.files]
    return removed
