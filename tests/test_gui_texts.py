"""Qt-free rules behind the docks' texts: will an export have a val split, why a run failed,
how a run is listed."""

from __future__ import annotations

import pytest

from dataset_helpers import inputs
from napari_raysam.core.dataset import (
    execute_plan,
    plan_split_warning,
    plan_write,
    planned_splits,
    write_dataset,
)
from napari_raysam.core.runs.text import (
    epoch_text,
    eta_text,
    failure_reason,
    model_summary,
    progress_text,
    run_item_text,
    run_status_text,
)


@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_planned_splits_are_what_gets_written(tmp_path, n):
    plan = plan_write(tmp_path / "set", inputs(n))
    expected = planned_splits(plan, seed=4, val_fraction=0.3)
    ts = execute_plan(plan, seed=4, val_fraction=0.3)
    assert [r.split for r in ts.samples] == expected
    assert (plan_split_warning(plan, 4, 0.3) is None) == ts.has_val == (n >= 2)


def test_split_warning_before_writing(tmp_path):
    one = plan_write(tmp_path / "one", inputs(1))
    warning = plan_split_warning(one)
    assert "No validation split" in warning and "1 image(s)/plane(s)" in warning
    assert "at least 2" in warning and not (tmp_path / "one").exists()  # nothing written
    assert plan_split_warning(plan_write(tmp_path / "two", inputs(2))) is None


def test_split_warning_on_append_counts_the_set(tmp_path):
    dest = tmp_path / "set"
    write_dataset(dest, inputs(1))  # one image: no val yet
    plan = plan_write(dest, inputs(1, start=5), mode="append")
    assert plan_split_warning(plan) is None  # the second image goes to val
    assert planned_splits(plan) == ["val"]


def test_failure_reason_is_the_last_error_line():
    tail = ("(pid=12) \x1b[36mstarting\x1b[0m\nTraceback (most recent call last):\n"
            '  File "x.py", line 3\nValueError: bad shape\nsome later line\n'
            "error: The training set /d has no val split. Export at least 2 images.\n")
    assert failure_reason(tail) == "The training set /d has no val split. Export at least 2 images."
    assert failure_reason("Traceback\nray.exceptions.RayTaskError(OSError): disk full\nbye") == \
        "ray.exceptions.RayTaskError(OSError): disk full"
    assert failure_reason("all went fine\nError handling is on") == ""
    assert failure_reason(None) == "" and len(failure_reason("error: " + "x" * 999)) == 300


def test_run_status_text_says_failed_and_why():
    text = run_status_text("run-1", "FAILED", "the training job failed; see the log tail",
                           "starting\nerror: no val split")
    assert text == "run-1: FAILED: no val split"
    assert "see the log tail" in run_status_text("run-1", "FAILED", "see the log tail", "")
    assert run_status_text("run-1", "RUNNING") == "run-1: RUNNING"


def test_run_item_shows_the_state_first():
    assert run_item_text("run-20260417-153012-a1b2c3", "FAILED") == \
        "[FAILED] run-20260417-153012-a1b2c3"


def test_eta_and_progress_texts():
    assert eta_text(None) == "" and eta_text(0.2) == "~1 s left" and eta_text(44.6) == "~45 s left"
    assert eta_text(125) == "~2 min left" and eta_text(3900) == "~1 h 5 min left"
    progress = {"event": "progress", "epoch": 3, "epochs": 30, "step": 40, "steps": 100,
                "eta_s": 130.0}
    assert progress_text(progress) == "epoch 3/30, step 40/100, ~2 min left"
    epoch = {"event": "epoch", "epoch": 3, "epochs": 30, "val_miou_box": 0.71234, "eta_s": 95}
    assert epoch_text(epoch) == "Epoch 3/30: val box mIoU 0.712, ~2 min left"
    assert epoch_text({**epoch, "epoch": 30, "eta_s": 0}) == "Epoch 30/30: val box mIoU 0.712"
    assert "stopped early" in epoch_text({**epoch, "stopped_early": True, "eta_s": 0})
    no_val = epoch_text({"event": "epoch", "epoch": 1, "epochs": 2, "eta_s": 30})
    assert no_val == "Epoch 1/2: no val split, nothing measured, ~30 s left"


def test_dock_summary_says_verdict_and_which_epoch_was_returned():
    from types import SimpleNamespace

    from napari_raysam.core.training.report import report_facts, returned_text

    before = {"val_miou_point": 0.5, "val_miou_box": 0.6, "val_miou_corrected": 0.7}
    history = [{"epoch": e, "val_miou_box": b, "stopped_early": e == 4}
               for e, b in ((1, 0.62), (2, 0.70), (3, 0.66), (4, 0.65))]
    after = {"val_miou_point": 0.45, "val_miou_box": 0.70, "val_miou_corrected": 0.69}
    facts = report_facts({"returned": returned_text(2, history, stopped_early=True),
                          "best_epoch": 2, "unrelated": 1})
    assert set(facts) == {"returned", "best_epoch"}
    model = SimpleNamespace(name="r1", partial=False, path="/m.pt",
                            metrics={"before": before, "after": after, **facts})
    text = model_summary(model)
    # point fell, box (the deciding score) rose: one rule, "improved", as report.json says
    assert "Verdict: improved." in text and "WORSE" not in text
    assert "epoch 2 of 4" in text and "highest val box mIoU (0.700)" in text
    assert "stopped early after epoch 4" in text
    worse = SimpleNamespace(**{**vars(model), "metrics": {"before": after, "after": before}})
    assert "Verdict: WORSE." in model_summary(worse)


def test_test_set_result_text_and_verdict_follow_the_run_rule():
    from napari_raysam.core.runs.compare import SetComparison
    from napari_raysam.core.training.report import rows_verdict, verdict

    base = {"model": "tiny_cells", "objects": 9, "miou_point": 0.5, "miou_box": 0.7,
            "miou_corrected": 0.8}
    tuned = {**base, "model": "run:r1", "miou_point": 0.62, "miou_box": 0.65}
    # the evaluator's rows judged exactly as report.json judges before/after
    assert rows_verdict(base, tuned) == verdict(
        *({f"val_{k}": r[k] for k in ("miou_point", "miou_box", "miou_corrected")}
          for r in (base, tuned)))
    kind, sentence = rows_verdict(base, tuned)
    assert kind == "worse"  # point rose, box (the deciding score) fell
    text = SetComparison("/d/test set", "train", 2, base, tuned, kind, sentence).text()
    assert text.splitlines()[:4] == [
        "Test set test set, all of it (it has no val split): 2 image(s), 9 object(s); mIoU "
        "tiny_cells -> run:r1:",
        "point 0.500 -> 0.620 (+0.120)", "box 0.700 -> 0.650 (-0.050)",
        "corrected 0.800 -> 0.800 (+0.000)"]
    assert "Verdict: WORSE (decided by the box mIoU" in text and "Keep the base model" in text
    better = SetComparison("/d/t", "val", 1, tuned, base, *rows_verdict(tuned, base))
    assert "Verdict: improved" in better.text() and "Keep" not in better.text()
    assert better.headline() == "Evaluated on /d/t (val): improved."
