"""The one score that decides, the verdict, and the run outputs beside the checkpoints
(report.json with before/after, curves.png).

**One score decides, everywhere: the val box mIoU** (:data:`BEST_METRIC`). It picks the epoch
whose weights become model.pt, drives early stopping (``patience``) and the ``plateau`` LR
schedule, and decides the verdict. micro-sam's trainer works the same way with one validation
metric (``torch_em``'s ``DefaultTrainer.fit``: ``best.pt``, ``ReduceLROnPlateau`` and early
stopping all follow ``current_metric``). Why box and not point, corrected or a mean: a box prompt
is the same every epoch (no sampled click location, no ambiguous one-click mask), so its score is
the least noisy on the small val splits people export; point and corrected scores move with where
the simulated clicks land, and a mean would let that noise decide between close epochs. The other
two scores are still measured, shown and stored.
"""

from __future__ import annotations

import json
from pathlib import Path

METRIC_NAMES = ("val_miou_point", "val_miou_box", "val_miou_corrected")
#: The score that picks model.pt, stops early, lowers the LR (plateau) and decides the verdict.
BEST_METRIC = "val_miou_box"
BEST_METRIC_TEXT = "val box mIoU"
#: A verdict kind -> how the dock and the CLI say it.
VERDICT_LABELS = {"improved": "improved", "worse": "WORSE", "no change": "no change",
                  "no val split": "no val split"}
#: Report keys a registered model keeps in its metrics (the dock's result text reads them).
REPORT_FACTS = ("best_epoch", "best_metric", "returned", "verdict", "summary", "stopped_early",
                "epochs_run")
NO_VAL = ("No before/after measure: the training set has no val split, so no epoch was "
          "validated and the last epoch's model is returned. Export at least 2 images (planes) "
          "so one is held out, or evaluate on a separate test set.")


def has_scores(metrics: dict | None) -> bool:
    """True when ``metrics`` holds val scores (a run without a val split has none)."""
    return bool(metrics) and all(metrics.get(k) is not None for k in METRIC_NAMES)


def verdict(before: dict | None, after: dict | None, tolerance: float = 0.005
            ) -> tuple[str, str]:
    """The one verdict rule: ("improved" | "worse" | "no change" | "no val split", a sentence).

    Decided by :data:`BEST_METRIC` alone (the score that picked the checkpoint): up or down by
    more than ``tolerance`` is "improved" or "worse"; the sentence lists all three scores."""
    if not (has_scores(before) and has_scores(after)):
        return "no val split", NO_VAL
    delta = after[BEST_METRIC] - before[BEST_METRIC]
    detail = ", ".join(f"{k.removeprefix('val_miou_')} {before[k]:.3f} -> {after[k]:.3f}"
                       for k in METRIC_NAMES)
    if delta < -tolerance:
        return "worse", (f"Fine-tuning made the model WORSE on the held-out split ({detail}). "
                         "Keep the base model, or train with more data or a lower learning rate.")
    if delta > tolerance:
        return "improved", f"Fine-tuning improved the held-out mIoU ({detail})."
    return "no change", (f"Fine-tuning did not change the held-out {BEST_METRIC_TEXT} by more "
                         f"than {tolerance} ({detail}).")


def rows_verdict(base: dict, tuned: dict) -> tuple[str, str]:
    """:func:`verdict` of two evaluation rows (``core.sam.evaluate.evaluate_model``: base model,
    then fine-tuned) scored on the same set, so a test set is judged by the same rule."""
    def scores(row: dict) -> dict:
        return {key: row.get(key.removeprefix("val_")) for key in METRIC_NAMES}

    return verdict(scores(base), scores(tuned))


def best_epoch(history: list[dict]) -> int | None:
    """The epoch with the highest :data:`BEST_METRIC` (the earliest on a tie); None when no
    epoch was validated."""
    scored = [h for h in history if h.get(BEST_METRIC) is not None]
    if not scored:
        return None
    return int(max(scored, key=lambda h: (h[BEST_METRIC], -h["epoch"]))["epoch"])


def should_stop(history: list[dict], patience: int | None) -> bool:
    """Early stopping: True when the last ``patience`` epochs brought no better
    :data:`BEST_METRIC` than an earlier one (never without ``patience`` or val scores)."""
    best = best_epoch(history)
    if not patience or best is None:
        return False
    return int(history[-1]["epoch"]) - best >= patience


def returned_text(best: int | None, history: list[dict], stopped_early: bool = False) -> str:
    """Which epoch model.pt holds and why, in one sentence."""
    last = history[-1]["epoch"] if history else best
    if best is None or not any(h.get(BEST_METRIC) is not None for h in history):
        return f"model.pt is the last epoch ({last}): without a val split no score picks one."
    score = next(h[BEST_METRIC] for h in history if h["epoch"] == best)
    text = (f"model.pt is epoch {best} of {last}: the highest {BEST_METRIC_TEXT} ({score:.3f}), "
            "the score that picks the checkpoint.")
    if stopped_early:
        text += (f" Training stopped early after epoch {last}: no better {BEST_METRIC_TEXT} "
                 f"for {last - best} epochs.")
    return text


def write_report(run_dir: str | Path, before: dict, after: dict, best: int | None,
                 history: list[dict], extra: dict) -> Path:
    """report.json: before/after on the val split, the returned epoch and why, the verdict."""
    kind, sentence = verdict(before, after)
    stopped = bool(history and history[-1].get("stopped_early"))
    report = {
        "verdict": kind, "summary": sentence, "best_epoch": best,
        "best_metric": BEST_METRIC if has_scores(after) else None,
        "returned": returned_text(best, history, stopped),
        "stopped_early": stopped, "epochs_run": history[-1]["epoch"] if history else 0,
        "before": {k: before.get(k) for k in (*METRIC_NAMES, "val_loss", "val_objects")},
        "after": {k: after.get(k) for k in (*METRIC_NAMES, "val_loss", "val_objects")},
        "delta": {k: after[k] - before[k] for k in METRIC_NAMES} if kind != "no val split"
        else {},
        "history": history, **extra,
    }
    path = Path(run_dir) / "report.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    return path


def report_facts(report: dict | None) -> dict:
    """The returned epoch, the score that chose it and the verdict of a report.json, as kept
    in a registered model's metrics."""
    return {k: (report or {}).get(k) for k in REPORT_FACTS if k in (report or {})}


def write_curves(run_dir: str | Path, before: dict, history: list[dict],
                 best: int | None = None) -> Path:
    """curves.png: train/val loss and val mIoU per epoch (epoch 0 = before training), the
    returned epoch marked on both and named with the score that picked it."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [0] + [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot([h["epoch"] for h in history], [h["train_loss"] for h in history], "o-",
             label="train loss")
    validated = has_scores(before)
    if validated:
        ax1.plot(epochs, [before.get("val_loss")] + [h.get("val_loss") for h in history], "s-",
                 label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_title("loss")
    for key in METRIC_NAMES if validated else ():
        ax2.plot(epochs, [before.get(key)] + [h.get(key) for h in history], "o-",
                 label=key.removeprefix("val_miou_") + (" (decides)" if key == BEST_METRIC
                                                        else ""),
                 linewidth=2.5 if key == BEST_METRIC else 1.2)
    if best is not None:
        why = f"best {BEST_METRIC_TEXT}" if validated else "last epoch, no val split"
        for ax in (ax1, ax2):
            ax.axvline(best, color="0.3", linestyle="--", linewidth=1,
                       label=f"returned: epoch {best} ({why})" if ax is ax2 else None)
    ax1.legend()
    ax2.set_xlabel("epoch (0 = before training)")
    ax2.set_title(f"val mIoU ({BEST_METRIC_TEXT} picks the checkpoint)" if validated
                  else "val mIoU: no val split, nothing measured")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path = Path(run_dir) / "curves.png"
    fig.savefig(path)
    return path
