"""A live plot of loss and val mIoU per epoch (matplotlib in Qt)."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

CURVES = (("train_loss", "train loss", 0), ("val_loss", "val loss", 0),
          ("val_miou_point", "point", 1), ("val_miou_box", "box", 1),
          ("val_miou_corrected", "corrected", 1))


class MetricsPlot(FigureCanvasQTAgg):
    """Two small axes: losses and val mIoU per epoch; redraws from the epoch events.

    The layout is computed once and each event only updates the lines' data: a full re-plot
    with ``tight_layout`` cost 100-570 ms of napari's GUI thread per epoch event
    (``benchmarks/responsiveness.py``)."""

    def __init__(self):
        self.figure = Figure(figsize=(4, 2.6))
        super().__init__(self.figure)
        self.loss_ax, self.iou_ax = self.figure.subplots(1, 2)
        self._axes = (self.loss_ax, self.iou_ax)
        for ax, title in zip(self._axes, ("loss", "val mIoU"), strict=True):
            ax.set_title(title, fontsize=8)
            ax.tick_params(labelsize=7)
        self.lines = {key: self._axes[which].plot([], [], marker="o", markersize=3,
                                                  label=label)[0]
                      for key, label, which in CURVES}
        self.iou_ax.set_ylim(0, 1)
        self.figure.tight_layout()
        self.epochs: dict[int, dict] = {}
        self.setMinimumHeight(180)
        self._draw()

    def clear(self) -> None:
        self.epochs.clear()
        self._draw()

    def add(self, event: dict) -> None:
        """Add an ``epoch`` event (a replayed epoch replaces the earlier one)."""
        self.epochs[int(event["epoch"])] = event
        self._draw()

    def _draw(self) -> None:
        epochs = sorted(self.epochs)
        for key, line in self.lines.items():
            values = [self.epochs[e].get(key) for e in epochs]
            shown = bool(epochs) and all(v is not None for v in values)
            line.set_data(epochs if shown else [], values if shown else [])
            line.set_visible(shown)
        for ax in self._axes:
            visible = [line for line in ax.lines if line.get_visible()]
            if visible:
                ax.relim(visible_only=True)
                ax.autoscale_view()
                ax.legend(handles=visible, fontsize=6)
            elif ax.get_legend() is not None:
                ax.get_legend().remove()
        self.iou_ax.set_ylim(0, 1)
        self.draw_idle()
