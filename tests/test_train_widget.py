"""The Train dock end to end: real viewer, real `ray start --head` as the "remote", real jobs."""

from __future__ import annotations

import numpy as np
import psutil
import pytest

from napari_raysam.core.cluster.local_head import LocalHead
from napari_raysam.core.dataset.synthetic import make_sample

pytestmark = pytest.mark.ray
RUN_TIMEOUT = 300_000


@pytest.fixture(scope="module")
def head(ray_head):
    """A real head on 127.0.0.1 that the tests treat as a remote cluster (Jobs API over HTTP)."""
    return ray_head


def _train_dock(viewer, head, tmp_path):
    from napari_raysam._qt.train_widget import TrainWidget

    dock = TrainWidget(viewer)
    viewer.window.add_dock_widget(dock, name="Train")
    dock.profile_combo.addItem("lab")
    dock.profile_combo.setCurrentText("lab")  # a new profile: fill in its fields next
    dock.address_edit.setText(head[1].address)
    dock.storage_edit.setText(str(tmp_path / "storage"))
    return dock


def _connect(qtbot, dock):
    assert dock.connect() is not None, dock.status.text()
    qtbot.waitUntil(lambda: "CPUs" in dock.summary.text() or "error" in dock.status.text(),
                    timeout=60_000)
    assert "2 CPUs" in dock.summary.text(), dock.status.text()


def _stack_training_set(qtbot, viewer, tmp_path):
    """Annotate two planes with the Segment dock and export them with the Export dock."""
    from napari_raysam._qt.export_widget import ExportWidget
    from napari_raysam._qt.segment_widget import SegmentWidget

    samples = [make_sample((128, 128), seed=s) for s in (1, 2)]
    viewer.add_image(np.stack([s.image for s in samples]), name="cells")
    segment = SegmentWidget(viewer)
    segment.model_combo.setCurrentText("tiny")
    viewer.window.add_dock_widget(segment, name="Segment")
    for plane, sample in enumerate(samples):
        viewer.dims.set_current_step(0, plane)
        qtbot.waitUntil(lambda: not segment.busy, timeout=60_000)
        if segment._embedded_for is None or segment._embedded_for[1] != (plane,):
            segment.compute_embedding()
            qtbot.waitUntil(lambda: not segment.busy, timeout=60_000)
        assert segment._embedded_for and segment._embedded_for[1] == (plane,), segment.status.text()
        for cell in (1, 2, 3):
            rows, cols = np.nonzero(sample.labels == cell)
            segment.prompts.add_point(rows.mean(), cols.mean())
            assert segment.commit(), segment.status.text()
    export = ExportWidget(viewer)
    viewer.window.add_dock_widget(export, name="Export")
    export.dest_edit.setText(str(tmp_path / "my set"))
    assert export.export() is not None, export.status.text()
    qtbot.waitUntil(lambda: export.last_export_path is not None, timeout=60_000)
    return segment, export


def test_annotate_export_train_use_and_segment_again(qtbot, make_napari_viewer, head, tmp_path):
    viewer = make_napari_viewer()
    segment, _ = _stack_training_set(qtbot, viewer, tmp_path)
    dock = _train_dock(viewer, head, tmp_path)
    _connect(qtbot, dock)
    assert dock.use_last_export()
    dock.epochs.setValue(2)
    dock.workers_spin.setValue(2)
    dock.lr.setValue(3e-3)
    dock.scaling_combo.setCurrentText("sqrt")  # lr x sqrt(2 workers) reaches the job
    dock.auto_use.setChecked(True)  # the checkpoint becomes the Segment dock's model at once
    assert dock.start() is not None
    qtbot.waitUntil(lambda: dock.model is not None or "FAILED" in dock.status.text(),
                    timeout=RUN_TIMEOUT)
    assert dock.model is not None, dock.status.text() + dock.log_view.toPlainText()[-2000:]
    assert sorted(dock.plot.epochs) == [1, 2]  # both epochs arrived as events
    assert "box mIoU" in dock.result.text() and dock.progress_bar.value() == 2
    from napari_raysam.core.sam.models import load_model

    lineage = load_model(f"run:{dock.model.name}", device="cpu").lineage
    assert lineage["config"]["lr_scaling"] == "sqrt"
    assert [m["lr"] for m in lineage["metrics"]] == pytest.approx([3e-3 * 2 ** 0.5] * 2)
    qtbot.waitUntil(lambda: not segment.busy, timeout=60_000)
    assert segment.model.spec == f"run:{dock.model.name}" and segment.embeddings is not None
    before = int(viewer.layers["cells objects"].data.max())
    segment.prompts.add_point(60, 60)
    assert segment.commit() == [before + 1]


def _start_long_run(qtbot, viewer, head, tmp_path):
    from napari_raysam.core.dataset import SampleInput, write_dataset

    samples = [make_sample((128, 128), seed=s) for s in range(3)]
    dataset = write_dataset(tmp_path / "set", [SampleInput(s.image, s.labels, f"s{i}")
                                               for i, s in enumerate(samples)])
    dock = _train_dock(viewer, head, tmp_path)
    dock.dataset_edit.setText(str(dataset.path))
    dock.epochs.setValue(200)
    dock.lr.setValue(3e-3)
    assert dock.start() is not None
    qtbot.waitUntil(lambda: len(dock.plot.epochs) >= 1, timeout=RUN_TIMEOUT)
    return dock


def _train_worker_pids(head_pid: int) -> set[int]:
    found = set()
    for proc in psutil.Process(head_pid).children(recursive=True):
        try:
            if "TrainWorker" in " ".join(proc.cmdline()) or "TrainWorker" in proc.name():
                found.add(proc.pid)
        except psutil.Error:
            continue
    return found


def test_cancel_mid_run_leaves_the_cluster_clean(qtbot, make_napari_viewer, head, tmp_path):
    viewer = make_napari_viewer()
    dock = _start_long_run(qtbot, viewer, head, tmp_path)
    workers = _train_worker_pids(head[1].pid)
    assert workers, "no Ray Train worker processes found while training"
    dock.cancel()
    qtbot.waitUntil(lambda: dock.index.get(dock.record.name).state == "STOPPED",
                    timeout=30_000)
    qtbot.waitUntil(lambda: "STOPPED" in dock.status.text(), timeout=10_000)
    assert dock.index.get(dock.record.name).partial
    qtbot.waitUntil(lambda: not (workers & _train_worker_pids(head[1].pid)), timeout=30_000)


def test_cancelled_run_fetches_its_last_checkpoint_as_partial(qtbot, make_napari_viewer, head,
                                                              tmp_path):
    from napari_raysam.core.model_store import list_registered_models
    from napari_raysam.core.sam.models import load_model

    viewer = make_napari_viewer()
    dock = _start_long_run(qtbot, viewer, head, tmp_path)
    name = dock.record.name
    run_dir = tmp_path / "storage" / "runs" / name
    qtbot.waitUntil(lambda: any(run_dir.glob("checkpoint_epoch_*/*.pt")), timeout=60_000)
    assert not dock.fetch_button.isEnabled()  # still running: nothing to fetch yet
    dock.cancel()
    qtbot.waitUntil(lambda: dock.fetch_button.isEnabled(), timeout=30_000)
    assert dock.index.get(name).state == "STOPPED"
    assert dock.fetch_button.text() == "Fetch last checkpoint"
    assert dock.runs_combo.currentData() == name
    dock.fetch_button.click()  # the dock's own button, through its worker
    qtbot.waitUntil(lambda: dock.model is not None or "rror" in dock.status.text(),
                    timeout=60_000)
    model = dock.model
    assert model is not None, dock.status.text()
    assert model.partial and model.epoch >= 1 and model.name == f"{name}.partial-epoch{model.epoch}"
    assert [m.name for m in list_registered_models()] == [model.name]  # registered
    assert f"(partial: last checkpoint, epoch {model.epoch})" in dock.result.text()
    assert f"partial: last checkpoint, epoch {model.epoch}" in dock.status.text()
    assert dock.use_button.isEnabled() and dock.use_button.text() == \
        f"Use in Segment (partial, epoch {model.epoch})"
    loaded = load_model(f"run:{model.name}", device="cpu")
    assert loaded.lineage["partial"] is True and loaded.lineage["run_state"] == "STOPPED"


def test_new_dock_reattaches_and_replays(qtbot, make_napari_viewer, head, tmp_path):
    from napari_raysam._qt.train_widget import TrainWidget

    viewer = make_napari_viewer()
    first = _start_long_run(qtbot, viewer, head, tmp_path)
    name = first.record.name
    viewer.window.remove_dock_widget(first)  # the dock is closed: the run goes on
    qtbot.wait(3000)
    second = TrainWidget(viewer)
    assert second.runs_combo.findData(name) >= 0
    second.reattach(name)
    qtbot.waitUntil(lambda: len(second.plot.epochs) >= 2, timeout=RUN_TIMEOUT)
    assert sorted(second.plot.epochs)[0] == 1  # the history before re-attaching was replayed
    assert second.cancel() is not None
    try:
        qtbot.waitUntil(lambda: second.index.get(name).state == "STOPPED", timeout=30_000)
    except Exception:
        raise AssertionError(second.status.text()) from None


def test_token_auth_head_right_and_wrong_token(qtbot, make_napari_viewer, tmp_path, monkeypatch):
    from napari_raysam._qt.train_widget import TrainWidget

    secure = LocalHead(state_file=tmp_path / "secure.json", num_cpus=1)
    state = secure.start(token="s3cret-token-for-tests")
    try:
        viewer = make_napari_viewer()
        dock = TrainWidget(viewer)
        monkeypatch.setenv("RAYSAM_TEST_TOKEN", "wrong-token")
        dock.profile_combo.addItem("secure")
        dock.profile_combo.setCurrentText("secure")
        dock.address_edit.setText(state.address)
        dock.storage_edit.setText(str(tmp_path / "st"))
        dock.token_env_edit.setText("RAYSAM_TEST_TOKEN")
        dock.connect()
        qtbot.waitUntil(lambda: "refused" in dock.status.text(), timeout=30_000)
        assert "wrong-token" not in dock.status.text()
        monkeypatch.setenv("RAYSAM_TEST_TOKEN", "s3cret-token-for-tests")
        dock.connect()
        qtbot.waitUntil(lambda: "CPUs" in dock.summary.text(), timeout=30_000)
    finally:
        secure.stop()
