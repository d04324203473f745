"""What the Train dock says about runs and fetched models: plain strings, no Qt.

Kept out of the widget so the dock stays a thin layer of wiring (and these are testable alone).
"""

from __future__ import annotations

import re

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


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ERROR_LINE = re.compile(r"^(error:|[\w.]*(Error|Exception)(\([\w.]*\))?:)", re.IGNORECASE)


def failure_reason(log_tail: str | None, limit: int = 300) -> str:
    """The reason a run failed: the last error line of its log tail (``error: ...`` as the job
    prints a problem the user can fix, or a traceback's ``SomeError: ...``); '' when none."""
    lines = [ANSI.sub("", line).strip() for line in (log_tail or "").splitlines()]
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            line = line[len("error:"):].strip() if line.lower().startswith("error:") else line
            return line if len(line) <= limit else line[: limit - 1] + "\u2026"
    return ""


def run_status_text(run: str, state: str, message: str = "", log_tail: str | None = None
                    ) -> str:
    """The Train dock's status line for a run's ``status`` event: for a FAILED run, the reason."""
    text = f"{run}: {state}"
    if state == "FAILED":
        reason = failure_reason(log_tail)
        return text + (f": {reason}" if reason else f" ({message or 'see the log'})")
    return text + (f" ({message})" if message else "")


def run_item_text(name: str, state: str) -> str:
    """A run in the Train dock's run list: the state first, so a narrow list still shows it."""
    return f"[{state}] {name}"
