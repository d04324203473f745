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
    """Before -> after val mIoU of a fetched model, the verdict, which epoch it is and why
    (from its report.json), its file."""
    from napari_raysam.core.training.report import (
        NO_VAL,
        VERDICT_LABELS,
        has_scores,
        verdict,
    )

    facts = model.metrics or {}
    before, after = facts.get("before") or {}, facts.get("after") or {}
    returned = f"\n{facts['returned']}" if facts.get("returned") else ""
    if not has_scores(after):
        return f"Model {model_label(model)}: {NO_VAL}{returned}\nCheckpoint: {model.path}"
    lines = [f"val {name} mIoU {before.get(key, float('nan')):.2f} -> "
             f"{after.get(key, float('nan')):.2f}"
             for name, key in (("point", "val_miou_point"), ("box", "val_miou_box"),
                               ("corrected", "val_miou_corrected"))]
    kind, sentence = verdict(before, after)
    text = f"Verdict: {VERDICT_LABELS[kind]}." + (f" {sentence}" if kind == "worse" else "")
    return (f"Model {model_label(model)}: " + "; ".join(lines) + f"\n{text}{returned}"
            + f"\nCheckpoint: {model.path}")


def eta_text(seconds: float | None) -> str:
    """"~45 s left", "~2 min left", "~1 h 5 min left"; '' when not known yet."""
    if seconds is None:
        return ""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"~{max(1, round(seconds))} s left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"~{minutes} min left"
    return f"~{minutes // 60} h {minutes % 60} min left"


def progress_text(event: dict) -> str:
    """The status line for a ``progress`` event: "epoch 3/30, step 40/100, ~2 min left" (a
    training run) or "12/200 images, 1.50/s, ~2 min left" (a job that applies a model: its
    ``unit``, images or planes)."""
    if "items_per_s" in event:
        text = (f"{event.get('done')}/{event.get('total')} {event.get('unit', 'images')}, "
                f"{event.get('items_per_s', 0):.2f}/s")
    else:
        text = (f"epoch {event.get('epoch')}/{event.get('epochs')}, step {event.get('step')}/"
                f"{event.get('steps')}")
    eta = eta_text(event.get("eta_s"))
    return text + (f", {eta}" if eta else "")


def epoch_text(event: dict) -> str:
    """The status line for an ``epoch`` event, with the job's ETA."""
    eta = "" if event.get("eta_s") is None or event.get("epoch") == event.get("epochs") \
        else f", {eta_text(event['eta_s'])}"
    if event.get("stopped_early"):
        eta = ", stopped early: no better val box mIoU"
    if event.get("val_miou_box") is None:
        return (f"Epoch {event['epoch']}/{event.get('epochs')}: no val split, nothing "
                f"measured{eta}")
    return (f"Epoch {event['epoch']}/{event.get('epochs')}: val box mIoU "
            f"{event['val_miou_box']:.3f}{eta}")


#: The val scores of a run, how the before -> after table names them, and what each means.
SCORES = (("point", "val_miou_point", "one click inside each object"),
          ("box", "val_miou_box", "the object's bounding box"),
          ("corrected", "val_miou_corrected", "a click, then {rounds} correction click(s) "
                                              "on the errors"))


def before_after_table(before: dict | None, after: dict | None,
                       rounds: int | str | None = None) -> str:
    """The held-out (val split) mIoU before -> after fine-tuning, one row per prompt kind, with
    the number of val objects and what each score means; used by ``napari-raysam train``,
    ``submit`` and ``demo``. ``rounds``: the correction clicks behind "corrected"."""
    from napari_raysam.core.training.report import (
        BEST_METRIC_TEXT,
        NO_VAL,
        VERDICT_LABELS,
        has_scores,
        verdict,
    )

    if not has_scores(after):
        return NO_VAL
    objects = after.get("val_objects") or before.get("val_objects")
    head = "held-out (val split) mIoU, before -> after fine-tuning"
    lines = [head + (f", on {objects} val objects:" if objects else ":")]
    for label, key, meaning in SCORES:
        b, a = before.get(key), after[key]
        delta = f"({a - b:+.3f})" if b is not None else ""
        b_text = f"{b:.3f}" if b is not None else "  -  "
        meaning = meaning.format(rounds="N" if rounds is None else rounds)
        lines.append(f"  {label:<10} {b_text} -> {a:.3f}  {delta:<9} {meaning}")
    kind, sentence = verdict(before, after)
    lines.append(f"verdict: {VERDICT_LABELS[kind]} (decided by the {BEST_METRIC_TEXT}, the score "
                 "that picks the returned epoch)")
    if kind == "worse":
        lines.append(sentence)
    return "\n".join(lines)


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
