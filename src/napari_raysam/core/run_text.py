"""What the Train dock says about runs and fetched models: plain strings, no Qt.

Kept out of the widget so the dock stays a thin layer of wiring (and these are testable alone).
"""

from __future__ import annotations

#: A run's end state -> (the Fetch button's label, fetch its last checkpoint as a partial model).
FETCH_ACTIONS = {
    "SUCCEEDED": ("Fetch", False),
    "FAILED": ("Fetch last checkpoint", True),
    "STOPPED": ("Fetch last checkpoint", True),
}


def fetch_action(state: str | None) -> tuple[str, bool] | None:
    """The Fetch button for a run in ``state``; None while it has not ended."""
    return FETCH_ACTIONS.get(str(state))


def model_label(model) -> str:
    """``run:NAME``, and for a partial model which checkpoint it is."""
    label = f"run:{model.name}"
    if getattr(model, "partial", False):
        label += f" (partial: last checkpoint, epoch {model.epoch})"
    return label


def use_label(model) -> str:
    """The "Use in Segment" button for a fetched model."""
    return "Use in Segment" + (f" (partial, epoch {model.epoch})"
                               if getattr(model, "partial", False) else "")


def model_summary(model) -> str:
    """Before -> after val mIoU of a fetched model, a warning if it got worse, its file."""
    before, after = model.metrics.get("before") or {}, model.metrics.get("after") or {}
    lines = [f"val {name} mIoU {before.get(key, float('nan')):.2f} -> "
             f"{after.get(key, float('nan')):.2f}"
             for name, key in (("point", "val_miou_point"), ("box", "val_miou_box"),
                               ("corrected", "val_miou_corrected"))]
    verdict = ""
    if after.get("val_miou_box", 0) < before.get("val_miou_box", 0):
        verdict = "\nFine-tuning made the model WORSE on the held-out images; keep the base."
    return (f"Model {model_label(model)}: " + "; ".join(lines) + verdict
            + f"\nCheckpoint: {model.path}")


def epoch_text(event: dict) -> str:
    """The status line for an ``epoch`` event."""
    return (f"Epoch {event['epoch']}/{event.get('epochs')}: val box mIoU "
            f"{event.get('val_miou_box', 0):.3f}")
