"""What the docks share about their frame: a scrolling body and finding each other."""

from __future__ import annotations

from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget


class DockScroll(QScrollArea):
    """A vertical scroll area for a dock's body: as wide as the body needs (no horizontal
    scrolling, no clipped fields), and at least ``min_height`` tall (or the whole body when it is
    shorter), so each dock keeps a useful share of the column when napari stacks docks."""

    def __init__(self, parent: QWidget, min_height: int):
        super().__init__(parent)
        self.min_height = min_height
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # always there: a scroll bar that comes and goes changes the body's width after its
        # word-wrapped labels' heights were worked out for the other width (rows got squashed)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)

    def setWidget(self, body: QWidget) -> None:  # noqa: N802 - Qt's name
        super().setWidget(body)
        body.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the body's minimum width may have changed: so has ours
        return super().eventFilter(obj, event)

    def _extra(self) -> QSize:
        frame = 2 * self.frameWidth()
        return QSize(frame + self.verticalScrollBar().sizeHint().width(), frame)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        body = self.widget().minimumSizeHint()
        return QSize(body.width(), min(body.height(), self.min_height)) + self._extra()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return self.widget().sizeHint() + self._extra()


def scroll_body(dock: QWidget, min_height: int = 120) -> QVBoxLayout:
    """Give ``dock`` a scroll area filling it and return the vertical layout inside.

    napari stacks the docks in one column: a dock that insists on its full height raised the
    main window's minimum height past the screen (1.6k px with all three open) and squashed its
    rows; inside a scroll area each dock keeps its rows at their size and scrolls instead."""
    area = DockScroll(dock, min_height)
    body = QWidget()
    area.setWidget(body)
    outer = QVBoxLayout(dock)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    dock.scroll_area = area
    return QVBoxLayout(body)


def find_dock(viewer, method: str):
    """The first docked widget of ``viewer`` that has a public ``method`` (None if none), e.g.
    ``find_dock(viewer, "use_model")`` for the Segment dock."""
    for widget in viewer.window.dock_widgets.values():
        if callable(getattr(widget, method, None)):
            return widget
    return None
