"""Training sets: write (atomic), append, validate, read, split, upload, shard.

This module is the package's API. May import: the bottom layer (``core.*`` modules) only.

A training set is a folder::

    manifest.json   format marker, schema_version, created, seed, val_fraction, content_hash,
                    and one record per sample (see :class:`SampleRecord`)
    images/<id>.tif the 2D (+channels) image, in its original dtype
    labels/<id>.tif instance labels (0 = background; uint16, or uint32 when ids >= 65536)

``content_hash`` is the sha256 of the sorted per-sample hashes (each: both files' sha256 and the
split); a checkpoint's lineage records it to name the exact training data.

Atomicity. A **new** set is built in a hidden temporary sibling folder (``.<name>.raysam-tmp-*``)
and renamed into place with ``os.replace``: a killed export leaves at most that hidden folder,
never a half-written set under the real name. An **append** never touches existing files: new
samples get new ids (``s<n>`` above every id in the manifest) and files named
``<id>-<write token>.tif`` (so they cannot clash with files of another or an interrupted export),
written and fsynced next to the old ones; then a complete new manifest is written to a hidden
temporary file and ``os.replace``-d over ``manifest.json``. That single rename is the commit
point. Killed before it, the old manifest still lists exactly the old, untouched files (the set
stays valid; stray new files are ignored and reported as warnings by :func:`validate_dataset`);
after it, the new set is complete. On an error (e.g. a full disk) our new files are removed
again; if the manifest changed while we wrote (a concurrent append), nothing is committed.

Splits are by image (sample): a new set shuffles the samples (ordered by pixel hash) with
``seed`` and puts ``round(val_fraction * n)`` (at least 1, at most n - 1) into "val"; a one-image
set has no val split (``TrainingSet.has_val`` is False, ``split_warning`` says why). val_fraction
0 makes a set that is all train, 1 a test set that is all val (held out; nothing to train on).
On append, existing samples keep their split and each new one goes to "val" when a hash of the
set's seed and its pixel hash falls under val_fraction (and, for a fraction strictly between 0
and 1, at least one val and one train sample are guaranteed once the set has two images).

Exported images must be finite (NaN/inf are rejected: they poison losses) and not constant;
labels must be 2D non-negative integers with at least one object. All inputs are checked before
anything is written.
"""

from __future__ import annotations

from napari_raysam.core.dataset.folders import (
    arrays_to_inputs,
    create_from_folders,
    inputs_from_folders,
    pair_files,
)
from napari_raysam.core.dataset.format import (
    FORMAT_NAME,
    MANIFEST,
    SCHEMA_VERSION,
    DatasetError,
    SampleRecord,
    TrainingSet,
    content_hash,
    is_training_set,
    open_dataset,
)
from napari_raysam.core.dataset.inputs import (
    PreparedSample,
    SampleInput,
    plane_axes,
    planes_to_inputs,
)
from napari_raysam.core.dataset.pairs import (
    ImageLayer,
    LabelsLayer,
    PairSource,
    PairsPlan,
    default_pairs,
    fitting_pairs,
    plan_pairs,
)
from napari_raysam.core.dataset.validate import ValidationReport, validate_dataset
from napari_raysam.core.dataset.write import (
    WritePlan,
    execute_plan,
    plan_split_warning,
    plan_write,
    planned_splits,
    write_dataset,
)

__all__ = [
    "FORMAT_NAME",
    "MANIFEST",
    "SCHEMA_VERSION",
    "DatasetError",
    "ImageLayer",
    "LabelsLayer",
    "PairSource",
    "PairsPlan",
    "PreparedSample",
    "SampleInput",
    "SampleRecord",
    "TrainingSet",
    "ValidationReport",
    "WritePlan",
    "arrays_to_inputs",
    "content_hash",
    "create_from_folders",
    "default_pairs",
    "execute_plan",
    "fitting_pairs",
    "inputs_from_folders",
    "is_training_set",
    "open_dataset",
    "pair_files",
    "plan_pairs",
    "plan_split_warning",
    "plan_write",
    "planned_splits",
    "plane_axes",
    "planes_to_inputs",
    "validate_dataset",
    "write_dataset",
]
