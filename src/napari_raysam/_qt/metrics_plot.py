"""A live plot of loss and val mIoU per epoch, drawn by matplotlib off napari's GUI thread."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from qtpy.QtCore import QSize, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy

CURVES = (("train_loss", "train loss", 0), ("val_loss", "val loss", 0),
          ("val_miou_point", "point", 1), ("val_miou_box", "box", 1),
          ("val_miou_corrected", "corrected", 1))
DPI = 100
MIN_SIZE = (240, 180)  # below this the figure's text no longer fits
HINT_SIZE = (400, 220)

log = logging.getLogger(__name__)


class MetricsPlot(QLabel):
    """Two small axes: losses and val mIoU per epoch; redrawn from the epoch events.

    Laying out and rasterising the text of a figure takes 40-300 ms of CPU (more while
    training shares the cores), which stalled napari's GUI thread at every epoch
    (``benchmarks/responsiveness.py``). So the figure is drawn into an image on a thread of
    its own, which alone touches it after construction; the GUI thread only shows the image.
    Requests made while a drawing is under way are merged into one more drawing.
    """

    rendered = Signal(object, int)  # (QImage, request number)

    def __init__(self):
        super().__init__()
        self.epochs: dict[int, dict] = {}
        self.figure = Figure(figsize=(4, 2.6), dpi=DPI)
        FigureCanvasAgg(self.figure)
        self.loss_ax, self.iou_ax = self.figure.subplots(1, 2)
        self._axes = (self.loss_ax, self.iou_ax)
        for ax, title in zip(self._axes, ("loss", "val mIoU"), strict=True):
            ax.set_xlabel("epoch", fontsize=7, labelpad=1)
            ax.set_ylabel(title, fontsize=7, labelpad=1)
            ax.tick_params(labelsize=6)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        # until the first epoch: empty axes without made-up ranges (matplotlib's -0.05..0.05)
        self._waiting = self.loss_ax.text(0.5, 0.5, "curves appear after\nthe first epoch",
                                          ha="center", va="center", fontsize=7, color="0.4",
                                          transform=self.loss_ax.transAxes)
        self.lines = {key: self._axes[which].plot([], [], marker="o", markersize=3,
                                                  label=label)[0]
                      for key, label, which in CURVES}
        self._legend_keys: list[tuple] = [(), ()]
        self._laid_out_for: tuple | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="raysam-plot")
        self._requested = self._drawn = 0  # touched on the GUI thread only
        self._busy = False
        self.setMinimumSize(MIN_SIZE[0], MIN_SIZE[1])
        # the image follows the widget's size, never the other way round (see sizeHint)
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Expanding)
        self.rendered.connect(self._show)
        self._request()

    # --- GUI thread -----------------------------------------------------------------------

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        """A fixed wish, not the image's size (a QLabel's default): layouts that work out
        heights from the hints (a dock's scrolling body) then leave the plot its place."""
        return QSize(*HINT_SIZE)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(*MIN_SIZE)  # not the last image's size: the plot would only ever grow

    def clear(self) -> None:
        if self.epochs:
            self.epochs.clear()
            self._request()

    def add(self, event: dict) -> None:
        """Add an ``epoch`` event (a replayed epoch replaces the earlier one)."""
        self.epochs[int(event["epoch"])] = event
        self._request()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._request()

    def is_current(self) -> bool:
        """True when the image shown reflects every request made so far."""
        return self._drawn == self._requested and not self._busy

    def _request(self) -> None:
        self._requested += 1
        if not self._busy:
            self._submit()

    def _submit(self) -> None:
        self._busy = True
        ratio = self.devicePixelRatioF()
        size = (max(self.width(), MIN_SIZE[0]), max(self.height(), MIN_SIZE[1]), ratio)
        try:
            self._pool.submit(self._draw, dict(self.epochs), size, self._requested)
        except RuntimeError:  # the interpreter is shutting down: nothing left to show
            self._busy = False

    def _show(self, image: QImage, number: int) -> None:
        self._busy = False
        self._drawn = number
        self.setPixmap(QPixmap.fromImage(image))
        if self._drawn != self._requested:  # events arrived while it was drawing
            self._submit()

    # --- plot thread ----------------------------------------------------------------------

    def _draw(self, epochs: dict[int, dict], size: tuple[int, int, float], number: int) -> None:
        try:
            image = self._render(epochs, size)
        except Exception as exc:  # noqa: BLE001 - a plot must never take napari down
            image = QImage()
            log.warning("the metrics plot could not be drawn: %s", exc)
        try:
            self.rendered.emit(image, number)
        except RuntimeError:  # the widget was deleted (napari closed) meanwhile
            pass

    def _render(self, epochs: dict[int, dict], size: tuple[int, int, float]) -> QImage:
        width, height, ratio = size
        order = sorted(epochs)
        for key, line in self.lines.items():
            values = [epochs[e].get(key) for e in order]
            shown = bool(order) and all(v is not None for v in values)
            line.set_data(order if shown else [], values if shown else [])
            line.set_visible(shown)
        self._waiting.set_visible(not order)
        for i, ax in enumerate(self._axes):
            visible = [line for line in ax.lines if line.get_visible()]
            keys = tuple(line.get_label() for line in visible)
            if visible:
                ax.relim(visible_only=True)
                ax.autoscale_view()
            scaled = bool(visible) or i == 1  # mIoU is 0..1 anyway; an empty loss has no scale
            ax.tick_params(bottom=bool(order), labelbottom=bool(order), left=scaled,
                           labelleft=scaled)
            if order:  # whole epochs, with half an epoch of room on either side
                ax.set_xlim(order[0] - 0.5, order[-1] + 0.5)
            if keys != self._legend_keys[i]:  # a legend is rebuilt only when its lines change
                if ax.get_legend() is not None:
                    ax.get_legend().remove()
                if visible:
                    ax.legend(handles=visible, fontsize=6)
                self._legend_keys[i] = keys
        self.iou_ax.set_ylim(0, 1)
        if self._laid_out_for != (size, bool(order)):  # tick labels come and go with data
            self.figure.set_dpi(DPI * ratio)
            self.figure.set_size_inches(width / DPI, height / DPI)
            self.figure.tight_layout(pad=0.4, w_pad=1.0)
            self._laid_out_for = (size, bool(order))
        canvas = self.figure.canvas
        canvas.draw()
        w, h = canvas.get_width_height(physical=True)
        image = QImage(bytes(canvas.buffer_rgba()), w, h, 4 * w, QImage.Format_RGBA8888)
        image.setDevicePixelRatio(ratio)
        return image.copy()  # owns its pixels
