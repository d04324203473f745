"""Shared set-up for the cluster and GUI benchmarks (not a benchmark itself).

An isolated temp root (caches, settings, run index, model store), a small synthetic training
set written with the project's own writer, a headless display, a Qt event-loop heartbeat with a
stall sampler, a Qt-friendly wait, and a monitor of the peak RSS (``VmHWM``) of the processes a
LocalHead started.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path


def isolate(prefix: str) -> Path:
    """A fresh temp root; napari-raysam's cache/config/data dirs point into it."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    for key in ("CACHE", "CONFIG", "DATA"):
        os.environ[f"NAPARI_RAYSAM_{key}"] = str(root / key.lower())
    os.environ["MICROSAM_CACHEDIR"] = str(root / "microsam")
    os.environ.pop("RAY_ADDRESS", None)  # never attach to someone else's cluster
    return root


def synthetic_set(dest: Path, n: int = 3, shape: tuple[int, int] = (128, 128)):
    """``n`` synthetic cell images with labels, written as a training set (>= 1 val image)."""
    from napari_raysam.core.dataset import SampleInput, write_dataset
    from napari_raysam.core.dataset.synthetic import make_sample

    samples = [make_sample(shape, seed=s) for s in range(n)]
    return write_dataset(dest, [SampleInput(s.image, s.labels, f"s{i}")
                                for i, s in enumerate(samples)], val_fraction=1 / n)


def rss_mb(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 1e6


def peak_self_mb() -> float:
    """Peak RSS of this process so far (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set (VmHWM) of a live process, from /proc; None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def role(cmdline: str) -> str | None:
    """A readable role for a process under the Ray head (None: not interesting)."""
    for key, name in (("RayTrainWorker", "TrainWorker"), ("TrainWorker", "TrainWorker"),
                      ("TrainController", "TrainController"), ("napari_raysam.train", "job driver"),
                      ("JobSupervisor", "JobSupervisor"), ("raylet", "raylet"),
                      ("gcs_server", "gcs_server"), ("dashboard", "dashboard")):
        if key in cmdline:
            return name
    return None


class PeakMonitor(threading.Thread):
    """Polls every descendant of ``root_pid`` and keeps each one's highest VmHWM (peak RSS).

    VmHWM only grows, so the last reading before a process exits is its true peak as long as
    one poll lands between the peak and the exit (workers linger for seconds after training).
    """

    def __init__(self, root_pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.root_pid, self.interval = root_pid, interval
        self.since = time.time() - 1.0  # processes left over from an earlier run: ignored
        self.peaks: dict[int, tuple[str, float]] = {}
        self._halt = threading.Event()

    def poll(self) -> None:
        import psutil

        try:
            procs = psutil.Process(self.root_pid).children(recursive=True)
        except psutil.Error:
            return
        for proc in procs:
            try:
                if proc.create_time() < self.since:
                    continue
                name = role(" ".join(proc.cmdline()) + " " + proc.name())
            except psutil.Error:
                continue
            hwm = vm_hwm_mb(proc.pid) if name else None
            if hwm is not None and hwm >= self.peaks.get(proc.pid, ("", 0.0))[1]:
                self.peaks[proc.pid] = (name, hwm)

    def run(self) -> None:
        while not self._halt.is_set():
            self.poll()
            time.sleep(self.interval)

    def stop(self) -> dict[int, tuple[str, float]]:
        self._halt.set()
        self.join(timeout=5)
        return self.peaks

    def by_role(self, name: str) -> list[float]:
        return [mb for r, mb in self.peaks.values() if r == name]


# --- GUI -------------------------------------------------------------------------------------

def wait_until(cond, timeout: float, step_ms: int = 20) -> bool:
    """Run the Qt event loop (no sleeping on the GUI thread) until ``cond()`` or timeout."""
    from qtpy.QtCore import QEventLoop, QTimer

    deadline = time.monotonic() + timeout
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(step_ms)

    def check():
        if cond() or time.monotonic() > deadline:
            loop.quit()

    timer.timeout.connect(check)
    timer.start()
    if not cond():
        loop.exec()
    timer.stop()
    return bool(cond())


class Heartbeat:
    """A QTimer ticking every ``interval_ms`` on the GUI thread; a stall is the gap between two
    ticks minus the interval. A watchdog thread samples the GUI thread's Python stack whenever
    no tick arrived for ``sample_after_ms``, so long stalls come with the code that caused them.
    """

    def __init__(self, interval_ms: int = 10, sample_after_ms: int = 50):
        from qtpy.QtCore import Qt, QTimer

        self.interval = interval_ms / 1e3
        self.sample_after = sample_after_ms / 1e3
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.main_id = threading.get_ident()
        self.gaps: list[tuple[float, float]] = []  # (tick start, gap seconds)
        self.samples: dict[float, list[traceback.StackSummary]] = {}
        self.others: dict[float, list[traceback.StackSummary]] = {}  # other busy threads
        self.collections: list[tuple[float, float, int]] = []  # (start, end, generation)
        self._gc_start = 0.0
        self.last = 0.0
        self._halt = threading.Event()
        self._watch = None

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append((self.last, now - self.last))
        self.last = now

    def _watchdog(self) -> None:
        while not self._halt.is_set():
            last = self.last
            if time.perf_counter() - last > self.sample_after:
                frames = sys._current_frames()
                frame = frames.get(self.main_id)
                if frame is not None:
                    self.samples.setdefault(last, []).append(traceback.extract_stack(frame))
                for ident, other in frames.items():  # who else ran Python (held the GIL)
                    if ident not in (self.main_id, threading.get_ident()):
                        stack = traceback.extract_stack(other)
                        if not _waiting(stack):
                            self.others.setdefault(last, []).append(stack)
            time.sleep(0.005)

    def _gc(self, phase: str, info: dict) -> None:
        """gc.callbacks hook: a full collection holds the GIL for every thread."""
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif info.get("generation", 0) >= 1:
            self.collections.append((self._gc_start, time.perf_counter(), info["generation"]))

    def start(self) -> Heartbeat:
        import gc

        self.gaps.clear()
        self.samples.clear()
        self.others.clear()
        self.collections.clear()
        if self._gc not in gc.callbacks:
            gc.callbacks.append(self._gc)
        self.last = time.perf_counter()
        self._halt.clear()
        self.timer.start()
        self._watch = threading.Thread(target=self._watchdog, daemon=True)
        self._watch.start()
        return self

    def stop(self) -> dict:
        import gc

        self.timer.stop()
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
        self._halt.set()
        if self._watch is not None:
            self._watch.join(timeout=1)
        stalls = sorted(gap - self.interval for _, gap in self.gaps)
        if not stalls:
            return {"ticks": 0, "max_ms": float("nan"), "p99_ms": float("nan"), "over_100": 0}
        return {"ticks": len(stalls), "max_ms": stalls[-1] * 1e3,
                "p99_ms": stalls[min(len(stalls) - 1, int(0.99 * len(stalls)))] * 1e3,
                "over_100": sum(s > 0.1 for s in stalls)}

    def stall_log(self, min_stall_ms: float = 100.0) -> list[str]:
        """Each stall over ``min_stall_ms``: its length, where the GUI thread was (the innermost
        frame of this project, else the outermost library frame under the event loop) and the
        deepest frames sampled there."""
        out = []
        t0 = self.gaps[0][0] if self.gaps else 0.0
        for start, gap in self.gaps:
            stall = (gap - self.interval) * 1e3
            if stall < min_stall_ms:
                continue
            where = Counter(_describe(s) for s in self.samples.get(start, []))
            if where:
                (anchor, deep), n = where.most_common(1)[0]
                top = f"{anchor} [deepest: {deep}] ({n}/{sum(where.values())} samples)"
            else:
                top = "(no Python frame sampled: C++/GL work or GIL held)"
            out.append(f"t={start - t0:6.2f}s stall {stall:6.0f} ms: {top}")
            for begin, end, generation in self.collections:
                if begin < start + gap and end > start and end - begin > 0.02:
                    out.append(f"{'':10}garbage collection of generation {generation}: "
                               f"{(end - begin) * 1e3:.0f} ms")
            busy = Counter(_describe(s) for s in self.others.get(start, []))
            if busy:
                (anchor, deep), n = busy.most_common(1)[0]
                out.append(f"{'':10}meanwhile on another thread: {anchor} [deepest: {deep}] "
                           f"({n} samples)")
        return out


def _waiting(stack: traceback.StackSummary) -> bool:
    """A thread blocked in a wait (lock, queue, select, sleep) rather than running Python."""
    if not stack:
        return True
    inner = stack[-1]
    return inner.name in {"wait", "get", "select", "poll", "_worker", "sleep", "accept",
                          "recv", "recv_into", "readinto", "read", "_wait_for_tstate_lock"}


def _short(f) -> str:
    path = f.filename
    for marker in ("site-packages/", "src/", "benchmarks/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{f.name}:{f.lineno}"


def _describe(stack: traceback.StackSummary) -> tuple[str, str]:
    """(anchor, deepest): the innermost frame of napari_raysam, else the outermost frame that
    is not this benchmark's own (what the event loop called); and the two innermost frames."""
    frames = [f for f in stack if "/benchmarks/" not in f.filename]
    if not frames:  # only the benchmark's own wait: the GUI thread was in Qt's C++ loop
        return ("Qt event loop (C++; no Python frame)", "")
    ours = [f for f in frames if "napari_raysam" in f.filename]
    anchor = ours[-1] if ours else frames[0]
    return _short(anchor), " <- ".join(_short(f) for f in reversed(frames[-2:]))


def headless(size=(1280, 1024)):
    """A virtual X display (Xvfb) for a real, shown napari viewer."""
    from pyvirtualdisplay import Display

    return Display(visible=False, size=size)
