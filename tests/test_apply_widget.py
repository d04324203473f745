"""The Apply dock, opened through napari: segment a folder on a real Ray head, watch the
progress, open the results as labels layers beside their images."""

from __future__ import annotations

import pytest
import tifffile
from qtpy.QtCore import Qt

from napari_raysam.core.cluster import ClusterProfile, ProfileStore
from napari_raysam.core.dataset.synthetic import make_samples


def _open(viewer):
    return viewer.window.add_plugin_dock_widget("napari-raysam", "Apply")[1]


def test_start_without_folders_says_what_is_missing(make_napari_viewer, qtbot):
    dock = _open(make_napari_viewer())
    qtbot.mouseClick(dock.start_button, Qt.MouseButton.LeftButton)
    assert "images folder" in dock.status.text()
    assert not dock.open_button.isEnabled()


@pytest.mark.ray
def test_segment_a_folder_and_open_the_results(make_napari_viewer, qtbot, ray_head, tmp_path):
    _, state = ray_head
    images = tmp_path / "images"
    images.mkdir()
    for i, s in enumerate(make_samples(2, shape=(192, 192))):
        tifffile.imwrite(images / f"cells{i}.tif", s.image)
    (images / "readme.txt").write_text("not an image")
    ProfileStore().save(ClusterProfile(name="lab", address=state.address,
                                       storage=str(tmp_path / "storage")))
    viewer = make_napari_viewer(show=True)
    dock = _open(viewer)
    dock.profile_combo.setCurrentText("lab")
    dock.input_edit.setText(str(images))
    dock.out_edit.setText(str(tmp_path / "out"))
    qtbot.mouseClick(dock.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(dock.open_button.isEnabled, timeout=600_000)
    assert "2 label image(s)" in dock.status.text()
    assert dock.progress_bar.value() == dock.progress_bar.maximum() == 2
    qtbot.mouseClick(dock.open_button, Qt.MouseButton.LeftButton)
    names = [layer.name for layer in viewer.layers]
    assert names == ["cells0.tif", "cells0.tif labels", "cells1.tif", "cells1.tif labels"]
    labels = viewer.layers["cells0.tif labels"]
    assert labels.data.shape == (192, 192) and labels.data.max() > 0
