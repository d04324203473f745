"""A live plot of loss and val mIoU per epoch (matplotlib in Qt)."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

CURVES = (("train_loss", "train loss", 0), ("val_loss", "val loss", 0),
          ("val_miou_point", "point", 1), ("val_miou_box", "box", 1),
          ("val_miou_corrected", "corrected", 1))


class MetricsPlot(FigureCanvasQTAgg):
    """Two small axes: losses and val mIoU per epoch; redraws from the epoch events."""

    def __init__(self):
        self.figure = Figure(figsize=(4, 2.6), tight_layout=True)
        super().__init__(self.figure)
        self.loss_ax, self.iou_ax = self.figure.subplots(1, 2)
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
        axes = (self.loss_ax, self.iou_ax)
        for ax, title in zip(axes, ("loss", "val mIoU"), strict=True):
            ax.clear()
            ax.set_title(title, fontsize=8)
            ax.tick_params(labelsize=7)
        epochs = sorted(self.epochs)
        for key, label, which in CURVES:
            values = [self.epochs[e].get(key) for e in epochs]
            if epochs and all(v is not None for v in values):
                axes[which].plot(epochs, values, marker="o", markersize=3, label=label)
        for ax in axes:
            if ax.lines:
                ax.legend(fontsize=6)
        self.iou_ax.set_ylim(0, 1)
        self.draw_idle()
