"""The Export dock with a real viewer: pairs, preview, export, append, stacks, channels, errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_raysam._qt.export_widget import ExportWidget
from napari_raysam.core.dataset import open_dataset
from napari_raysam.core.dataset.pairs import pair_inputs
from napari_raysam.core.dataset.synthetic import make_sample


def sparse(labels: np.ndarray, keep: int = 3) -> np.ndarray:
    """Keep only the first ``keep`` object ids (sparse annotation)."""
    ids = [i for i in np.unique(labels) if i][:keep]
    return np.where(np.isin(labels, ids), labels, 0).astype(np.uint16)


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def run_export(qtbot, widget):
    worker = widget.export()
    assert worker is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)
    return worker


def preview(qtbot, widget):
    """Preview in its worker; the plan (None on an error)."""
    if widget.preview() is not None:
        assert not widget.preview_button.isEnabled()  # the form waits for the worker
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)
    assert widget.preview_button.isEnabled()
    return widget.plan


def export_fails(qtbot, widget) -> bool:
    """Export, and whether it stopped at an error before writing anything."""
    if widget.export() is not None:
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)
    return widget.last_export_path is None and is_error(widget)


def is_error(widget) -> bool:
    return "e05050" in widget.status.styleSheet()


def test_pairs_offered_for_matching_shapes_only(dock):
    viewer, widget = dock
    cells = make_sample(shape=(128, 128), seed=1)
    hpa = make_sample(shape=(128, 128), channels=4, style="hpa", seed=2)
    viewer.add_image(cells.image, name="cells")
    viewer.add_labels(sparse(cells.labels), name="cells labels")
    viewer.add_labels(np.zeros((64, 64), np.uint16), name="small")
    viewer.add_image(hpa.image, name="hpa", metadata={"raysam_channel_axis": 0})
    viewer.add_image(np.zeros((128, 128, 3), np.uint8), name="rgb", rgb=True)
    items = {widget.pair_list.item(r).text() for r in range(widget.pair_list.count())}
    assert items == {"cells \u2194 cells labels", "hpa \u2194 cells labels",
                     "rgb \u2194 cells labels"}
    # labels named after an image go with that image only; unnamed ones with any image
    assert widget.selected_pairs() == [("cells", "cells labels")]
    widget.set_pair_checked("rgb", "cells labels", True)
    assert ("rgb", "cells labels") in widget.selected_pairs()
    viewer.add_labels(np.zeros((128, 128), np.uint16), name="Labels")  # fits hpa and rgb
    assert set(widget.selected_pairs()) == {("cells", "cells labels"), ("rgb", "cells labels")}
    widget.set_pair_checked("rgb", "cells labels", False)
    assert ("rgb", "cells labels") not in widget.selected_pairs()
    del viewer.layers["cells labels"]
    assert all("cells labels" not in pair for pair in widget.selected_pairs())
    with pytest.raises(KeyError):
        widget.set_pair_checked("cells", "small", True)


def test_preview_export_and_append(dock, qtbot, tmp_path):
    viewer, widget = dock
    dest = tmp_path / "set"
    first = make_sample(shape=(128, 128), seed=3)
    viewer.add_image(first.image, name="a")
    viewer.add_labels(sparse(first.labels, 3), name="a labels")
    widget.dest_edit.setText(str(dest))

    plan = preview(qtbot, widget)
    assert plan is not None and plan.n_samples == 1 and plan.n_objects == 3
    assert "1 sample(s), 3 object(s)" in widget.plan_label.text()
    assert not dest.exists()  # preview writes nothing

    run_export(qtbot, widget)
    ts = open_dataset(dest)
    assert len(ts) == 1 and ts.n_objects == 3 and ts.samples[0].source == "a"
    assert widget.last_export_path == str(dest)
    status = widget.status.text()
    assert not is_error(widget) and str(dest) in status and ts.content_hash[:12] in status
    assert "no validation split" in status  # one image: the split warning is shown

    second = make_sample(shape=(128, 128), seed=4)
    viewer.add_image(second.image, name="b")
    viewer.add_labels(sparse(second.labels, 2), name="b labels")
    assert set(widget.selected_pairs()) == {("a", "a labels"), ("b", "b labels")}
    plan = preview(qtbot, widget)  # mode is still "new": the folder now holds a set
    assert plan is None and is_error(widget) and "append" in widget.status.text()
    widget.mode_combo.setCurrentIndex(1)
    plan = preview(qtbot, widget)  # "a" is already in the set: reported as a duplicate, skipped
    assert plan.n_samples == 1 and plan.n_objects == 2 and len(plan.duplicates) == 1
    assert "duplicate" in widget.plan_label.text()
    run_export(qtbot, widget)
    ts = open_dataset(dest)
    assert len(ts) == 2 and ts.n_objects == 5 and ts.has_val
    assert {r.source for r in ts.samples} == {"a", "b"}
    assert "1 train / 1 val" in widget.status.text()


def test_stack_all_planes_or_current_plane(dock, qtbot, tmp_path):
    viewer, widget = dock
    samples = [make_sample(shape=(128, 128), seed=s) for s in (5, 6, 7)]
    stack = np.stack([s.image for s in samples])
    labels = np.stack([sparse(s.labels, 2) for s in samples])
    labels[1] = 0  # plane 1 is not annotated
    viewer.add_image(stack, name="stack")
    viewer.add_labels(labels, name="stack labels")

    widget.dest_edit.setText(str(tmp_path / "all"))
    plan = preview(qtbot, widget)
    assert plan.n_samples == 2 and plan.n_objects == 4
    assert "plane(s) 1 have no objects" in widget.plan_label.text()
    run_export(qtbot, widget)
    ts = open_dataset(tmp_path / "all")
    assert sorted(r.plane for r in ts.samples) == [0, 2] and ts.has_val

    widget.planes_combo.setCurrentIndex(1)  # only the current plane
    widget.dest_edit.setText(str(tmp_path / "current"))
    viewer.dims.set_current_step(0, 1)
    assert preview(qtbot, widget) is None and is_error(widget)  # plane 1 has no objects
    assert "Nothing to export" in widget.status.text()
    viewer.dims.set_current_step(0, 2)
    plan = preview(qtbot, widget)
    assert plan.n_samples == 1 and plan.samples[0].input.plane == 2
    run_export(qtbot, widget)
    ts = open_dataset(tmp_path / "current")
    assert [r.plane for r in ts.samples] == [2] and not ts.has_val


def test_stack_with_channels_current_plane(dock, qtbot, tmp_path):
    viewer, widget = dock
    samples = [make_sample(shape=(128, 128), channels=2, seed=s) for s in (10, 11)]
    stack = np.stack([s.image for s in samples])  # (Z, C, H, W)
    viewer.add_image(stack, name="zc", metadata={"raysam_channel_axis": 1})
    viewer.add_labels(np.stack([sparse(s.labels, 2) for s in samples]), name="zc labels")
    widget.planes_combo.setCurrentIndex(1)
    viewer.dims.set_current_step(0, 1)
    widget.dest_edit.setText(str(tmp_path / "zc"))
    with qtbot.waitSignal(widget.exported, timeout=30000) as blocker:
        assert widget.export() is not None
    assert blocker.args == [str(tmp_path / "zc")]
    record = open_dataset(tmp_path / "zc").samples[0]
    assert record.plane == 1 and record.shape == [2, 128, 128] and record.channel_axis == 0
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)


def test_hpa_channel_axis_from_metadata(dock, qtbot, tmp_path):
    viewer, widget = dock
    hpa = make_sample(shape=(128, 128), channels=4, style="hpa", seed=8)
    viewer.add_image(hpa.image, name="hpa", metadata={
        "raysam_channel_axis": 0, "channel_names": list(hpa.channel_names)})
    viewer.add_labels(sparse(hpa.labels, 2), name="hpa labels")
    assert widget.selected_pairs() == [("hpa", "hpa labels")]
    widget.dest_edit.setText(str(tmp_path / "hpa"))
    run_export(qtbot, widget)
    record = open_dataset(tmp_path / "hpa").samples[0]
    assert record.shape == [4, 128, 128] and record.channel_axis == 0
    assert record.channel_names == list(hpa.channel_names) and record.n_objects == 2


def test_bad_input_is_shown_and_nothing_written(dock, qtbot, tmp_path):
    viewer, widget = dock
    sample = make_sample(shape=(128, 128), seed=9)
    viewer.add_image(sample.image, name="img")
    viewer.add_labels(np.zeros((128, 128), np.uint16), name="empty")

    assert preview(qtbot, widget) is None and is_error(widget)  # no destination yet
    dest = tmp_path / "out"
    widget.dest_edit.setText(str(dest))
    assert export_fails(qtbot, widget)
    assert "no objects" in widget.status.text() and not dest.exists()
    assert widget.plan_label.text() == ""

    viewer.layers["empty"].data = sparse(sample.labels, 1)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    widget.dest_edit.setText(str(junk))
    assert export_fails(qtbot, widget)
    assert "not empty" in widget.status.text()
    assert [p.name for p in junk.iterdir()] == ["notes.txt"]

    widget.set_pair_checked("img", "empty", False)
    widget.dest_edit.setText(str(dest))
    assert preview(qtbot, widget) is None and "check at least one" in widget.status.text()
    # napari keeps running and the dock still works
    widget.set_pair_checked("img", "empty", True)
    assert preview(qtbot, widget) is not None and not is_error(widget)
    viewer.add_points(np.zeros((1, 2)))
    assert len(viewer.layers) == 3 and widget.worker is None


def test_segment_dock_objects_preferred_over_ground_truth(make_napari_viewer):
    from napari_raysam._qt.export_widget import ExportWidget

    viewer = make_napari_viewer()
    sample = make_sample(shape=(64, 64), seed=1)
    viewer.add_image(sample.image, name="cells")
    viewer.add_labels(sample.labels, name="cells ground truth")
    viewer.add_labels(np.zeros_like(sample.labels), name="cells objects")
    widget = ExportWidget(viewer)
    assert list(widget.selected_pairs()) == [("cells", "cells objects")]


def is_warning(widget) -> bool:
    return "e0a030" in widget.status.styleSheet()


def test_preview_warns_about_a_missing_val_split_before_writing(dock, qtbot, tmp_path):
    viewer, widget = dock
    sample = make_sample(shape=(128, 128), seed=3)
    viewer.add_image(sample.image, name="a")
    viewer.add_labels(sparse(sample.labels, 3), name="a labels")
    widget.dest_edit.setText(str(tmp_path / "one"))
    assert preview(qtbot, widget) is not None
    assert not (tmp_path / "one").exists()  # warned before anything is written
    assert is_warning(widget) and not is_error(widget)
    assert "No validation split" in widget.status.text()
    assert "No validation split" in widget.plan_label.text()  # stays in view while writing

    stack = [make_sample(shape=(128, 128), seed=s) for s in (5, 6)]
    viewer.layers.clear()
    viewer.add_image(np.stack([s.image for s in stack]), name="stack")
    viewer.add_labels(np.stack([sparse(s.labels, 2) for s in stack]), name="stack labels")
    widget.dest_edit.setText(str(tmp_path / "two"))
    assert preview(qtbot, widget) is not None and not is_warning(widget)
    assert widget.status.text() == "Ready to export." and "validation" not in \
        widget.plan_label.text()
    widget.planes_combo.setCurrentIndex(1)  # only the current plane: one plane, no val split
    assert preview(qtbot, widget) is not None and is_warning(widget)


def test_preview_text_does_not_outlive_the_export(dock, qtbot, tmp_path):
    viewer, widget = dock
    samples = [make_sample(shape=(128, 128), seed=s) for s in (1, 2)]
    for i, sample in enumerate(samples):
        viewer.add_image(sample.image, name=f"im{i}")
        viewer.add_labels(sparse(sample.labels, 2), name=f"im{i} labels")
    widget.dest_edit.setText(str(tmp_path / "set"))
    assert preview(qtbot, widget) is not None
    assert widget.plan_label.text().startswith("Will create")
    run_export(qtbot, widget)
    assert (tmp_path / "set").is_dir() and "Exported to" in widget.status.text()
    assert "Will create" not in widget.plan_label.text()
    assert widget.plan_label.text() == "Preview shows what will be written."


def test_builtin_sample_exports_every_plane(dock, tmp_path):
    """File > Open Sample > napari-raysam > cells: one stack, its ground truth paired, 4 planes."""
    viewer, widget = dock
    viewer.open_sample("napari-raysam", "cells")
    assert [la.name for la in viewer.layers] == ["cells", "cells ground truth"]
    widget.refresh_pairs()
    assert widget.selected_pairs() == [("cells", "cells ground truth")]
    inputs, notes = pair_inputs(widget.sources())
    assert [inp.plane for inp in inputs] == [0, 1, 2, 3] and not notes
