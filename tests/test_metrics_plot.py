"""The Train dock's live plot: drawn on its own thread, merged requests, napari never blocked."""

from __future__ import annotations

import threading

import numpy as np
import pytest


def _event(epoch: int) -> dict:
    return {"event": "epoch", "epoch": epoch, "train_loss": 1 / epoch, "val_loss": 1.2 / epoch,
            "val_miou_point": epoch / 20, "val_miou_box": epoch / 25,
            "val_miou_corrected": epoch / 22}


def _pixels(plot) -> np.ndarray:
    image = plot.pixmap().toImage()
    data = image.constBits().asarray(image.sizeInBytes())
    return np.array(data, np.uint8).reshape(image.height(), image.bytesPerLine())


@pytest.fixture
def plot(qtbot):
    from napari_raysam._qt.metrics_plot import MetricsPlot

    widget = MetricsPlot()
    qtbot.addWidget(widget)
    widget.resize(480, 260)
    widget.show()
    qtbot.waitUntil(widget.is_current, timeout=10_000)
    return widget


def test_epochs_are_drawn_off_the_gui_thread(qtbot, plot, monkeypatch):
    threads = []
    render = plot._render
    monkeypatch.setattr(plot, "_render", lambda *a: (threads.append(threading.current_thread()),
                                                     render(*a))[1])
    empty = _pixels(plot)
    for epoch in range(1, 11):  # ten events in one GUI turn: merged into few drawings
        plot.add(_event(epoch))
    qtbot.waitUntil(plot.is_current, timeout=10_000)

    assert threads and threading.main_thread() not in threads
    assert len(threads) < 10
    assert list(plot.lines["val_loss"].get_xdata()) == list(range(1, 11))
    assert plot.lines["val_miou_box"].get_visible()
    assert not plot.pixmap().isNull() and plot.pixmap().width() >= 480
    drawn = _pixels(plot)
    assert drawn.shape == empty.shape and (drawn != empty).any()  # the curves are on it

    plot.clear()
    qtbot.waitUntil(plot.is_current, timeout=10_000)
    assert len(plot.lines["val_loss"].get_xdata()) == 0
    assert not plot.lines["val_loss"].get_visible()


def test_missing_metric_hides_its_curve(qtbot, plot):
    plot.add({"event": "epoch", "epoch": 1, "train_loss": 0.5})  # no validation metrics
    qtbot.waitUntil(plot.is_current, timeout=10_000)
    assert plot.lines["train_loss"].get_visible()
    assert not plot.lines["val_miou_point"].get_visible()
    assert plot.loss_ax.get_legend() is not None and plot.iou_ax.get_legend() is None


def test_a_failed_drawing_leaves_napari_running(qtbot, plot, monkeypatch, caplog):
    def broken(*_args):
        raise ValueError("no fonts")

    monkeypatch.setattr(plot, "_render", broken)
    plot.add(_event(1))
    qtbot.waitUntil(plot.is_current, timeout=10_000)
    failures = [r for r in caplog.records if "could not be drawn: no fonts" in r.getMessage()]
    assert failures and failures[0].levelname == "WARNING"
    assert failures[0].name == "napari_raysam._qt.metrics_plot"  # under the CLI's own logger
    monkeypatch.undo()
    plot.add(_event(2))  # the next event draws again
    qtbot.waitUntil(plot.is_current, timeout=10_000)
    assert not plot.pixmap().isNull()
    assert sorted(plot.epochs) == [1, 2]
