"""The four docks opened through napari fit a 1280x800 window: no squashed rows, a plot that
keeps to its place."""

from __future__ import annotations

from qtpy.QtWidgets import QFormLayout, QLabel

LONG = ("A long status text that keeps growing, as a failed run's reason or an export's "
        "summary does, with a path /data/experiments/2026/plates/set-42 in it. ") * 6
ROLES = (QFormLayout.ItemRole.LabelRole, QFormLayout.ItemRole.FieldRole,
         QFormLayout.ItemRole.SpanningRole)


def _open_three(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    docks = {name: viewer.window.add_plugin_dock_widget("napari-raysam", name)[1]
             for name in ("Segment", "Export", "Train", "Apply")}
    return viewer, window, docks


def _squashed(dock) -> list[str]:
    """Form rows and word-wrapped labels of ``dock`` shown smaller than they ask for."""
    out = []
    for form in dock.findChildren(QFormLayout):
        for row in range(form.rowCount()):
            for role in ROLES:
                item = form.itemAt(row, role)
                if item is None or (item.widget() is not None and not item.widget().isVisible()):
                    continue
                if item.geometry().height() < item.sizeHint().height():
                    out.append(f"row {row}: {item.geometry().height()} < {item.sizeHint()}")
    for label in dock.findChildren(QLabel):
        if label.isVisible() and label.wordWrap() and \
                label.height() < label.heightForWidth(label.width()):
            out.append(f"label {label.text()[:30]!r}: {label.height()} px")
    return out


def test_four_docks_fit_800_px_and_no_row_is_squashed(make_napari_viewer, qtbot):
    viewer, window, docks = _open_three(make_napari_viewer, qtbot)
    segment, export, train = docks["Segment"], docks["Export"], docks["Train"]
    for label in (segment.status, export.plan_label, export.status, train.summary, train.status,
                  train.result, train.evaluation, docks["Apply"].status):
        label.setText(LONG)
    train.log_box.setChecked(True)  # the log open below the plot
    window.resize(1280, 800)
    qtbot.wait(300)

    assert window.minimumSizeHint().height() <= 800  # was 1591 with the three docks
    assert window.minimumHeight() <= 800
    qtbot.waitUntil(lambda: window.height() <= 800, timeout=5000)
    for name, dock in docks.items():
        assert dock.isVisible()
        qtbot.waitUntil(lambda d=dock: not _squashed(d), timeout=5000)  # laid out
        assert _squashed(dock) == [], name
        assert dock.scroll_area.widget().width() <= dock.scroll_area.viewport().width(), name

    # the plot keeps to its own rectangle: above the result, "Use in Segment" and the log
    plot = train.plot
    qtbot.waitUntil(plot.is_current, timeout=10_000)
    for widget in (train.status, train.result, train.use_button, train.evaluate_button,
                   train.evaluation, train.auto_use, train.log_box):
        assert not plot.geometry().intersects(widget.geometry()), widget
    assert plot.geometry().bottom() < train.use_button.geometry().top()
    shown = plot.pixmap().deviceIndependentSize()
    assert shown.width() <= plot.width() and shown.height() <= plot.height()


def test_empty_plot_has_no_made_up_ranges(make_napari_viewer, qtbot):
    _, _, docks = _open_three(make_napari_viewer, qtbot)
    plot = docks["Train"].plot
    qtbot.waitUntil(plot.is_current, timeout=10_000)
    loss, iou = plot.loss_ax, plot.iou_ax
    assert not any(t.get_visible() and t.label1.get_visible()
                   for t in loss.xaxis.get_major_ticks() + loss.yaxis.get_major_ticks())
    assert plot._waiting.get_visible()
    assert loss.get_xlabel() == iou.get_xlabel() == "epoch"
    assert loss.get_ylabel() == "loss" and iou.get_ylabel() == "val mIoU"

    for epoch in (1, 2, 3):
        plot.add({"event": "epoch", "epoch": epoch, "train_loss": 1 / epoch,
                  "val_miou_box": epoch / 4})
    qtbot.waitUntil(plot.is_current, timeout=10_000)
    assert not plot._waiting.get_visible()
    ticks = [t for t in loss.get_xticks() if loss.get_xlim()[0] <= t <= loss.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)  # whole epochs only
    assert loss.get_xlim() == (0.5, 3.5)
