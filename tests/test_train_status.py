"""The Train dock's texts without a cluster: connect, a failed run, the run list, and a fetched
model reaching the Segment dock (cluster calls replaced by fakes; tests with a real Ray head are
in test_train_widget.py)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest

from napari_raysam._qt import train_widget
from napari_raysam.core import runs
from napari_raysam.core.cluster import ClusterError
from napari_raysam.core.dataset.format import now_iso
from napari_raysam.core.model_store import RegisteredModel, register_model
from napari_raysam.core.runs.records import RunRecord

NAME = "run-20260417-153012-a1b2c3"


class FakeHead:
    def start(self, _token=None):
        return None


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    widget = viewer.window.add_plugin_dock_widget("napari-raysam", "Train")[1]
    widget.head = FakeHead()
    return viewer, widget


def _record(dock, name: str, state: str = "PENDING") -> RunRecord:
    return dock.index.put(RunRecord(name=name, profile="local", address="local",
                                    storage="/tmp/s", dataset_hash="h", dataset_uri="/tmp/s/d",
                                    config={}, submitted=now_iso(), state=state))


def _is_error(label) -> bool:
    return "e05050" in label.styleSheet()


def test_connect_says_when_it_is_done_or_failed(dock, qtbot, monkeypatch):
    _, widget = dock
    monkeypatch.setattr(train_widget, "connect", lambda *a, **k: SimpleNamespace(
        text=lambda: "local: Ray 2.60, 1 node(s), 2 CPUs"))
    widget.connect()
    assert widget.status.text() == "Connecting..."
    qtbot.waitUntil(lambda: widget.status.text() != "Connecting...", timeout=10_000)
    assert widget.status.text() == "Connected to the local cluster." and "2 CPUs" in \
        widget.summary.text() and not _is_error(widget.status)

    def refuse(*_a, **_k):
        raise ClusterError("The cluster at local refused the connection.")

    monkeypatch.setattr(train_widget, "connect", refuse)
    widget.connect()
    qtbot.waitUntil(lambda: widget.status.text() != "Connecting...", timeout=10_000)
    assert "refused" in widget.status.text() and _is_error(widget.status)
    assert widget.summary.text() == "Not connected."  # not the old cluster's summary


def _fake_run(widget, monkeypatch, name: str, lines: list[str], tail: str):
    def submit(*_args):
        return _record(widget, name)

    def follow(record, index, *_args):
        yield {"event": "status", "run": record.name, "status": "RUNNING", "message": ""}
        for line in lines:
            yield {"event": "log", "run": record.name, "line": line}
        index.update(record.name, state="FAILED", log_tail=tail)
        yield {"event": "status", "run": record.name, "status": "FAILED", "log_tail": tail,
               "message": "the training job failed; see the log tail"}

    monkeypatch.setattr(runs, "submit", submit)
    monkeypatch.setattr(runs, "follow", follow)


def test_failed_run_says_why_and_each_run_starts_a_clean_log(dock, qtbot, monkeypatch, tmp_path):
    _, widget = dock
    widget.dataset_edit.setText(str(tmp_path))
    assert widget.summary.text() == "Not connected."
    reason = "The training set /d has no val split. Export at least 2 images (planes)."
    _fake_run(widget, monkeypatch, NAME, ["first run: loading"],
              f"Traceback (most recent call last):\n  x\nerror: {reason}")
    assert widget.start() is not None
    qtbot.waitUntil(lambda: "FAILED" in widget.status.text(), timeout=10_000)
    assert widget.status.text() == f"{NAME}: FAILED: {reason}" and _is_error(widget.status)
    assert widget.summary.text().startswith("Connected to the local cluster")
    assert "first run: loading" in widget.log_view.toPlainText()

    # the run list shows the state and the whole name
    combo = widget.runs_combo
    assert combo.currentText() == f"[FAILED] {NAME}" and combo.currentData() == NAME
    assert NAME in combo.toolTip() and "FAILED" in combo.toolTip()
    text_width = combo.fontMetrics().horizontalAdvance(combo.currentText())
    assert combo.minimumWidth() > text_width  # the dock cannot squeeze it to "run-2026"
    qtbot.waitUntil(lambda: combo.width() > text_width, timeout=5000)

    second = "run-20260417-160000-d4e5f6"
    _fake_run(widget, monkeypatch, second, ["second run: loading"], "error: disk full")
    assert widget.start() is not None
    qtbot.waitUntil(lambda: second in widget.status.text() and "FAILED" in
                    widget.status.text(), timeout=10_000)
    assert "first run" not in widget.log_view.toPlainText()  # cleared between runs
    assert "second run: loading" in widget.log_view.toPlainText()
    assert widget.status.text() == f"{second}: FAILED: disk full"


def _model(tmp_path, name: str) -> RegisteredModel:
    path = tmp_path / f"{name}.pt"
    path.write_bytes(b"weights")
    return register_model(RegisteredModel(name=name, path=str(path), base_model="tiny",
                                          metrics={}, sha256="0", run=name,
                                          registered=now_iso()))


def test_fetched_model_appears_in_the_segment_dock_and_is_used(dock, qtbot, monkeypatch,
                                                                 tmp_path):
    viewer, widget = dock
    _model(tmp_path, "run-old")
    segment = viewer.window.add_plugin_dock_widget("napari-raysam", "Segment")[1]
    models = lambda: [segment.model_combo.itemText(i)  # noqa: E731
                      for i in range(segment.model_combo.count())]
    assert "run:run-old" in models()  # listed when the dock opens

    record = _record(widget, "run-new", state="SUCCEEDED")
    monkeypatch.setattr(runs, "fetch", lambda *_a: _model(tmp_path, "run-new"))
    assert widget.fetch(record) is not None
    qtbot.waitUntil(lambda: widget.model is not None, timeout=10_000)
    assert "run:run-new" in models()  # listed as soon as the Train dock fetched it
    assert segment.model_spec() != "run:run-new"

    assert widget.use_in_segment()
    assert segment.model_spec() == "run:run-new"
    assert "run:run-new" in segment.model_label.text()
    assert "The Segment dock now uses run:run-new" in widget.status.text()
    assert "_on_model_change" not in inspect.getsource(train_widget)  # public use_model only


def test_a_run_without_a_val_split_shows_a_banner(dock):
    from napari_raysam.core.training.report import NO_VAL

    _, widget = dock
    widget.record = _record(widget, NAME, "RUNNING")
    widget._on_event({"event": "start", "run": NAME, "validated": False, "warning": NO_VAL})
    assert NO_VAL in widget.result.text()
    widget._on_event({"event": "epoch", "epoch": 1, "epochs": 2, "train_loss": 0.4})
    assert "no val split" in widget.status.text()


def test_the_jobs_eta_shows_live_and_auto_epochs_are_the_default(dock):
    _, widget = dock
    widget.record = _record(widget, NAME, "RUNNING")
    assert widget.options()["epochs"] is None and widget.epochs.text() == "auto"
    assert widget.options()["patience"] is None and widget.options()["lr_schedule"] == "constant"
    assert widget.options()["lr_scaling"] == "none"  # micro-sam's recipe unless chosen
    widget._on_event({"event": "progress", "epoch": 1, "epochs": 20, "step": 3, "steps": 100,
                      "eta_s": 130.0})
    assert widget.status.text() == "epoch 1/20, step 3/100, ~2 min left"
    assert widget.progress_bar.maximum() == 20
    widget._on_event({"event": "epoch", "epoch": 2, "epochs": 20, "train_loss": 0.4,
                      "val_miou_box": 0.5, "eta_s": 50.0})
    assert widget.status.text() == "Epoch 2/20: val box mIoU 0.500, ~50 s left"
