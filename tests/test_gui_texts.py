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
from napari_raysam.core.runs.text import failure_reason, run_item_text, run_status_text


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
