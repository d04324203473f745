"""Run outputs beside the checkpoints: report.json (before/after) and curves.png."""

from __future__ import annotations

import json
from pathlib import Path

METRIC_NAMES = ("val_miou_point", "val_miou_box", "val_miou_corrected")
NO_VAL = ("No before/after measure: the training set has no val split, so no epoch was "
          "validated and the last epoch's model is returned. Export at least 2 images (planes) "
          "so one is held out, or evaluate on a separate test set.")


def has_scores(metrics: dict | None) -> bool:
    """True when ``metrics`` holds val scores (a run without a val split has none)."""
    return bool(metrics) and all(metrics.get(k) is not None for k in METRIC_NAMES)


def verdict(before: dict, after: dict, tolerance: float = 0.005) -> tuple[str, str]:
    """("improved" | "worse" | "unchanged" | "no val split", a plain sentence)."""
    if not (has_scores(before) and has_scores(after)):
        return "no val split", NO_VAL
    deltas = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in METRIC_NAMES}
    mean = sum(deltas.values()) / len(deltas)
    detail = ", ".join(f"{k.removeprefix('val_miou_')} {before.get(k, 0):.3f} -> "
                       f"{after.get(k, 0):.3f}" for k in METRIC_NAMES)
    if mean < -tolerance:
        return "worse", (f"Fine-tuning made the model WORSE on the held-out split ({detail}). "
                         "Keep the base model, or train with more data or a lower learning rate.")
    if mean > tolerance:
        return "improved", f"Fine-tuning improved the held-out mIoU ({detail})."
    return "unchanged", f"Fine-tuning did not change the held-out mIoU noticeably ({detail})."


def write_report(run_dir: str | Path, before: dict, after: dict, best_epoch: int | None,
                 history: list[dict], extra: dict) -> Path:
    """report.json: before/after evaluation on the val split, the verdict, and run facts."""
    kind, sentence = verdict(before, after)
    report = {
        "verdict": kind, "summary": sentence, "best_epoch": best_epoch,
        "before": {k: before.get(k) for k in (*METRIC_NAMES, "val_loss", "val_objects")},
        "after": {k: after.get(k) for k in (*METRIC_NAMES, "val_loss", "val_objects")},
        "delta": {k: after[k] - before[k] for k in METRIC_NAMES} if kind != "no val split"
        else {},
        "history": history, **extra,
    }
    path = Path(run_dir) / "report.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    return path


def write_curves(run_dir: str | Path, before: dict, history: list[dict]) -> Path:
    """curves.png: train/val loss and val mIoU per epoch (epoch 0 = before training)."""
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
    ax1.legend()
    for key in METRIC_NAMES if validated else ():
        ax2.plot(epochs, [before.get(key)] + [h.get(key) for h in history], "o-",
                 label=key.removeprefix("val_miou_"))
    ax2.set_xlabel("epoch (0 = before training)")
    ax2.set_title("val mIoU" if validated else "val mIoU: no val split, nothing measured")
    ax2.set_ylim(0, 1)
    if validated:
        ax2.legend()
    fig.tight_layout()
    path = Path(run_dir) / "curves.png"
    fig.savefig(path)
    return path
