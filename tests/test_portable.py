"""Portability: napari-raysam's own code needs no POSIX-only module (``fcntl``, ``pwd``, ``grp``).

Each check runs in a fresh interpreter in which those modules are unimportable
(``sys.modules[name] = None`` before anything else is imported), so neither this process nor a
conftest can have imported them first.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import napari_raysam

BLOCKED = ("fcntl", "pwd", "grp")
SRC = Path(napari_raysam.__file__).resolve().parents[1]
REPO = Path(__file__).resolve().parents[1]
BLOCK = f"import sys\nBLOCKED = {BLOCKED!r}\nfor _n in BLOCKED:\n    sys.modules[_n] = None\n"

#: Imports every napari_raysam module; prints {"ours": {...}, "third_party": {...}, "n": N}.
#: A blocked import is "ours" when the frame that asked for it is napari_raysam's own file.
WALK = BLOCK + r'''
import importlib, json, os, pkgutil, traceback
import napari_raysam

root = os.path.dirname(os.path.abspath(napari_raysam.__file__))
ours, third_party, names = {}, {}, []
for info in pkgutil.walk_packages(napari_raysam.__path__, "napari_raysam.",
                                  onerror=lambda name: ours.setdefault(name, "walk failed")):
    if info.name.endswith(".__main__"):
        continue  # a script (python -m), not a module to import: it runs the command
    names.append(info.name)
    try:
        importlib.import_module(info.name)
    except BaseException as exc:  # noqa: BLE001 - reported below
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if "importlib" not in f.filename and not f.filename.startswith("<frozen")]
        culprit = frames[-1].filename if frames else "?"
        blocked = isinstance(exc, ImportError) and exc.name in BLOCKED
        where = third_party if blocked and not os.path.abspath(culprit).startswith(root) else ours
        where[info.name] = f"{type(exc).__name__}: {exc} (imported from {culprit})"
print(json.dumps({"ours": ours, "third_party": third_party, "n": len(names)}))
'''


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")  # the _qt modules are imported, never shown
    return env


def test_every_module_imports_without_posix_only_modules():
    out = subprocess.run([sys.executable, "-c", WALK], capture_output=True, text=True,
                         env=_env(), cwd=REPO, timeout=540)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n"] > 40  # the walk found the package's modules
    assert result["ours"] == {}, json.dumps(result["ours"], indent=1)
    if result["third_party"]:  # not our code: reported, not failed
        print("third-party modules needing", BLOCKED, ":",
              json.dumps(result["third_party"], indent=1))


def test_run_index_and_debris_tests_pass_without_posix_only_modules():
    """The run index (file lock) and export debris (PID liveness) tests, in a pytest whose
    interpreter cannot import fcntl/pwd/grp."""
    args = ["tests/test_runs.py", "tests/test_dataset_debris.py", "-k",
            "index or traversal or debris", "-q", "-p", "no:cacheprovider"]
    code = BLOCK + f"import pytest\nsys.exit(pytest.main({args!r}))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), cwd=REPO, timeout=540)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    passed = re.search(r"(\d+) passed", out.stdout)
    assert passed and int(passed[1]) >= 11, out.stdout[-2000:]  # 1 + 7 run-index, 3 debris


def test_local_head_stop_ends_its_process_tree_only(tmp_path):
    """``LocalHead.stop`` without process groups (psutil): the recorded head and its
    descendants end, SIGKILL after the timeout for one that ignores SIGTERM; a process that
    is not the head's descendant is left alone."""
    import time

    import psutil

    from napari_raysam.core.cluster.local_head import HeadState, LocalHead, default_temp_root
    from napari_raysam.core.paths import write_json_atomic

    assert len(default_temp_root()) < 20  # Ray's Unix socket paths under it stay short
    temp_dir = tmp_path / "rs-test"
    temp_dir.mkdir()
    pid_file = tmp_path / "grandchild.pid"
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "time.sleep(60)")
    head_code = ("import subprocess, sys, time; "
                 f"p = subprocess.Popen([sys.executable, '-c', {stubborn!r}]); "
                 f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    head = subprocess.Popen([sys.executable, "-c", head_code, str(temp_dir)])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        grandchild = psutil.Process(int(pid_file.read_text()))
        state_file = tmp_path / "head.json"
        write_json_atomic(state_file, HeadState(pid=head.pid, ports={}, temp_dir=str(temp_dir),
                                                log_file="", started=time.time()).__dict__)
        t = time.monotonic()
        assert LocalHead(state_file=state_file).stop(timeout=1.0) is True
        assert time.monotonic() - t < 15
        head.wait(timeout=5)
        assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE
        assert bystander.poll() is None  # not the head's: untouched
        assert not temp_dir.exists() and not state_file.exists()
    finally:
        for proc in (head, bystander):
            proc.kill()
            proc.wait()
