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
