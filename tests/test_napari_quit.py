"""Fault: napari quits entirely (SIGKILL) while its Train dock follows a run.

A real napari process (a child ``python3 -c`` with a viewer and the Train dock) submits a small
run to a real ``ray start --head`` started by this test module, and is killed by its PID after
the first epoch event. The run lives in Ray, not in napari: it must go on and succeed, and a new
Train dock (in the test process, sharing the child's isolated config/data dirs) re-attaches to it
from its run list and shows the whole history, the epochs before the kill included.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from napari_raysam.core.dataset import SampleInput, write_dataset
from napari_raysam.core.dataset.synthetic import make_sample

pytestmark = pytest.mark.ray
EPOCHS = 4
MARK = "RAYSAM-CHILD "

NAPARI_CHILD = textwrap.dedent("""
    import json, sys
    import napari
    from qtpy.QtCore import QTimer
    from napari_raysam._qt.train_widget import TrainWidget

    address, storage, dataset, epochs = sys.argv[1:5]
    viewer = napari.Viewer(show=True)
    dock = TrainWidget(viewer)
    viewer.window.add_dock_widget(dock, name="Train")
    dock.profile_combo.addItem("lab")
    dock.profile_combo.setCurrentText("lab")
    dock.address_edit.setText(address)
    dock.storage_edit.setText(storage)
    dock.dataset_edit.setText(dataset)
    dock.epochs.setValue(int(epochs))
    dock.lr.setValue(3e-3)

    def say(**what):
        print("MARK" + json.dumps(what), flush=True)

    def poll():
        if dock.record is not None and dock.plot.epochs:
            say(run=dock.record.name, epochs=sorted(dock.plot.epochs))
            timer.stop()
        elif "FAILED" in dock.status.text() or "rror" in dock.status.text():
            say(error=dock.status.text())

    timer = QTimer()
    timer.timeout.connect(poll)
    timer.start(100)
    assert dock.start() is not None, dock.status.text()
    say(started=True)
    QTimer.singleShot(240_000, viewer.close)  # a safety net: the test kills it long before
    napari.run()
""").replace("MARK", MARK)


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        if line.startswith(MARK):
            out.put(json.loads(line[len(MARK):]))


def test_napari_killed_mid_run_run_succeeds_and_new_dock_reattaches(
        qtbot, make_napari_viewer, ray_head, tmp_path):
    from napari_raysam._qt.train_widget import TrainWidget
    from napari_raysam.core import runs
    from napari_raysam.core.runs.records import RunIndex

    assert os.environ.get("DISPLAY"), "pytest-xvfb gives the child napari its display"
    samples = [make_sample((96, 96), seed=s) for s in range(3)]
    dataset = write_dataset(tmp_path / "set", [SampleInput(s.image, s.labels, f"s{i}")
                                               for i, s in enumerate(samples)])
    # the child shares this test's isolated NAPARI_RAYSAM_* dirs (run index, model store)
    env = {**os.environ, "NAPARI_CONFIG": str(tmp_path / "napari" / "settings.yaml")}
    err_path = tmp_path / "child.err"
    with open(err_path, "w") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", NAPARI_CHILD, ray_head[1].address, str(tmp_path / "storage"),
             str(dataset.path), str(EPOCHS)],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True)
    spawned: list[psutil.Process] = []
    try:
        messages: queue.Queue = queue.Queue()
        threading.Thread(target=_lines, args=(child.stdout, messages), daemon=True).start()
        seen, deadline = None, time.monotonic() + 120
        while seen is None and time.monotonic() < deadline and child.poll() is None:
            try:
                message = messages.get(timeout=0.2)
            except queue.Empty:
                continue
            assert "error" not in message, message
            seen = message if "run" in message else None
        assert seen is not None, f"no epoch event in the child napari: " \
            f"{err_path.read_text()[-3000:]}"
        name = seen["run"]
        spawned = psutil.Process(child.pid).children(recursive=True)
        os.kill(child.pid, signal.SIGKILL)  # napari quits entirely, no cleanup of any kind
        assert child.wait(timeout=30) == -signal.SIGKILL
        index = RunIndex()
        assert index.get(name).state == "RUNNING"  # as the dead dock last saw it
        time.sleep(1.0)
        assert runs.refresh(index.get(name), index).state == "RUNNING"  # napari's death is not

        # a new napari session: the run is listed and re-attaching replays then follows it
        viewer = make_napari_viewer()
        dock = TrainWidget(viewer)
        viewer.window.add_dock_widget(dock, name="Train")
        assert dock.runs_combo.findData(name) >= 0
        dock.reattach(name)
        qtbot.waitUntil(lambda: dock.model is not None or "FAILED" in dock.status.text()
                        or "STOPPED" in dock.status.text(), timeout=240_000)
        record = index.get(name)
        assert record.state == "SUCCEEDED", (record.state, dock.status.text(),
                                             dock.log_view.toPlainText()[-2000:])
        assert dock.model is not None and dock.model.name == name and not dock.model.partial
        assert sorted(dock.plot.epochs) == list(range(1, EPOCHS + 1))  # the whole history
        assert max(seen["epochs"]) < EPOCHS  # the run went on after napari was killed
        assert dock.progress_bar.value() == EPOCHS and "box mIoU" in dock.result.text()
        assert dock.fetch_button.text() == "Fetch"
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        for proc in spawned:  # anything the child napari started, by PID
            try:
                proc.kill()
            except psutil.Error:
                pass
