"""The plugin manifest is found by npe2 from the installed package and lists our docks."""

import subprocess
import sys
from pathlib import Path

import napari_raysam


def test_installed_manifest_is_found_and_valid():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    manifest = pm.get_manifest("napari-raysam")
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert {"Segment", "Export"} <= widgets
    samples = {s.key for s in manifest.contributions.sample_data}
    assert {"cells", "hpa"} <= samples
    yaml_path = Path(napari_raysam.__file__).parent / "napari.yaml"
    assert yaml_path.read_text().startswith("name: napari-raysam")


def test_npe2_validate_cli():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-raysam"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout + result.stderr


def test_commands_resolve_to_callables():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    for command in pm.get_manifest("napari-raysam").contributions.commands:
        assert callable(command.exec) or command.python_name
        module, _, attr = command.python_name.partition(":")
        mod = __import__(module, fromlist=[attr])
        assert hasattr(mod, attr), command.python_name


def test_docks_listed_in_plugins_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.window.add_plugin_dock_widget("napari-raysam", "Segment")
    viewer.window.add_plugin_dock_widget("napari-raysam", "Export")
    titles = list(viewer.window.dock_widgets)
    assert any("Segment" in t for t in titles) and any("Export" in t for t in titles)


def test_sample_data_opens_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-raysam", "cells")
    assert {"cells", "cells ground truth"} <= {layer.name for layer in viewer.layers}


def test_wheel_carries_the_manifest(tmp_path):
    """A normal (non-editable) install gets the real napari.yaml, not the repo's symlink."""
    import zipfile

    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(root)],
        check=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("napari_raysam-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read("napari_raysam/napari.yaml").decode()
        entry_points = archive.read(
            next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        ).decode()
    assert text == (root / "napari.yaml").read_text()
    assert "napari_raysam:napari.yaml" in entry_points


#: napari's GUI open path in a fresh interpreter: plugins discovered as napari's launch does,
#: napari settings (preferred readers) from an empty file. Prints what each path opened as.
OPEN_LIKE_THE_GUI = r"""
import json, sys
import numpy as np
from napari.components import ViewerModel
from napari.plugins import _initialize_plugins, _npe2

_initialize_plugins()
out = {}
for path in sys.argv[1:]:
    readers = sorted(_npe2.get_readers(path))
    layers = ViewerModel()._open_or_raise_error([path])  # MultipleReaderError: a reader dialog
    out[path] = {"readers": readers, "layers": [
        [layer.name, list(np.shape(layer.data)), layer.metadata.get("raysam_training_set")]
        for layer in layers]}
print(json.dumps(out))
"""


def test_images_open_without_a_reader_choice_and_a_manifest_through_ours(tmp_path):
    """napari's GUI open path (File > Open, drag and drop) raises MultipleReaderError, i.e.
    shows a "choose a reader" dialog, when two readers claim a file. Ours claims only a
    training set's manifest.json, so .tif and .png files open with napari's own reader."""
    import json
    import os

    import imageio.v3 as iio
    import numpy as np
    import tifffile

    from dataset_helpers import inputs
    from napari_raysam.core.dataset import write_dataset

    image = (np.arange(64 * 48) % 251).astype(np.uint8).reshape(64, 48)
    tif, png = str(tmp_path / "cells.tif"), str(tmp_path / "cells.png")
    tifffile.imwrite(tif, image)
    iio.imwrite(png, image)
    ts = write_dataset(tmp_path / "set", inputs(2))
    manifest = str(ts.path / "manifest.json")
    env = {**os.environ, "NAPARI_CONFIG": str(tmp_path / "napari" / "settings.yaml")}
    result = subprocess.run([sys.executable, "-c", OPEN_LIKE_THE_GUI, tif, png, manifest],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    opened = json.loads(result.stdout.strip().splitlines()[-1])
    for path in (tif, png):
        assert "napari-raysam" not in opened[path]["readers"]
        assert opened[path]["layers"] == [["cells", [64, 48], None]]
    assert opened[manifest]["readers"] == ["napari-raysam"]
    assert [name for name, _, _ in opened[manifest]["layers"]] == [
        "s00000", "s00000 labels", "s00001", "s00001 labels"]
    assert {where for _, _, where in opened[manifest]["layers"]} == {str(ts.path)}
