"""Training sets from folders of image/label TIFFs, and the napari reader for a set."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from dataset_helpers import cells, inputs
from napari_raysam.core.dataset import (
    DatasetError,
    SampleInput,
    create_from_folders,
    pair_files,
    write_dataset,
)
from napari_raysam.napari_entry import get_training_set_reader

# --- import from folders ---------------------------------------------------------------------


def _save(folder, name, array):
    folder.mkdir(exist_ok=True)
    tifffile.imwrite(folder / name, array)


def test_create_from_folders(tmp_path):
    imgs, labs = tmp_path / "images", tmp_path / "labels"
    for i in range(3):
        img, lab = cells(i)
        _save(imgs, f"img{i}.tif", img)
        _save(labs, f"img{i}.tif" if i else f"img{i}_masks.tif", lab.astype(np.uint16))
    a, la = cells(5)
    _save(imgs, "stack.tif", np.stack([a, a + 1]))
    _save(labs, "stack_seg.tif", np.stack([la, la * 0]))
    hpa, hpa_lab = cells(6, channels=4)
    _save(imgs, "hpa.tif", hpa)
    _save(labs, "hpa.tif", hpa_lab)
    ts = create_from_folders(imgs, labs, tmp_path / "set", seed=1)
    by_source = {os.path.basename(r.source): r for r in ts.samples}
    assert len(ts) == 5 and by_source["stack.tif"].plane == 0
    assert by_source["hpa.tif"].channel_axis == 0
    assert len(create_from_folders(imgs, labs, tmp_path / "some", pattern="img*")) == 3


def test_pairing_cellpose_same_folder_and_unpaired(tmp_path):
    both = tmp_path / "both"
    for i in range(2):
        img, lab = cells(i)
        _save(both, f"c{i}.tif", img)
        _save(both, f"c{i}_cp_masks.tif", lab.astype(np.uint16))
    assert [(a.name, b.name) for a, b in pair_files(both, both)] == [
        ("c0.tif", "c0_cp_masks.tif"), ("c1.tif", "c1_cp_masks.tif")]
    _save(both, "lonely.tif", cells(3)[0])
    _save(both, "ghost_masks.tif", cells(3)[1].astype(np.uint16))
    with pytest.raises(DatasetError) as info:
        pair_files(both, both)
    assert "lonely.tif" in str(info.value) and "ghost_masks.tif" in str(info.value)
    with pytest.raises(DatasetError, match="No TIFF images"):
        pair_files(both, both, pattern="*.png")


# --- napari reader -----------------------------------------------------------------------------


def test_training_set_reader(tmp_path):
    hpa, hpa_lab = cells(2, channels=4)
    dest = tmp_path / "set"
    write_dataset(dest, [*inputs(2), SampleInput(np.moveaxis(hpa, 0, -1), hpa_lab, "hpa",
                                                  channel_axis=2, channel_names=list("abcd"))])
    reader = get_training_set_reader(str(dest))
    assert callable(reader)
    layers = reader(str(dest))
    assert [(kw["name"], kind) for _, kw, kind in layers][:2] == [
        ("s00000", "image"), ("s00000 labels", "labels")]
    data, kw, _ = layers[4]
    assert data.shape == (4, 40, 48) and kw["rgb"] is False
    assert kw["metadata"]["raysam_channel_axis"] == 0
    assert kw["metadata"]["channel_names"] == list("abcd")
    assert layers[5][0].shape == (40, 48)
    assert get_training_set_reader([str(dest)]) is not None
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "manifest.json").write_text('{"something": "else"}')
    assert get_training_set_reader(str(tmp_path / "plain")) is None
    assert get_training_set_reader(str(tmp_path)) is None
    assert get_training_set_reader(str(tmp_path / "plain" / "manifest.json")) is None
    by_manifest = get_training_set_reader(str(dest / "manifest.json"))
    assert [kw["name"] for _, kw, _ in by_manifest(str(dest / "manifest.json"))] == \
        [kw["name"] for _, kw, _ in layers]
