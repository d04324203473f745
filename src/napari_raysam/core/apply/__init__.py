"""Batch segmentation on the cluster, job side: every image of a folder (in storage) segmented
automatically by one model, in a Ray Data actor pool (one model per actor), a label TIFF per
image and a table written to storage.

May import: the bottom layer (``core.*`` modules), ``core.sam`` and ``core.dataset``. Never the
client side (``core.runs``, ``core.cluster``), Qt or napari. The entrypoint is
``python -m napari_raysam.apply``; ``core.runs.apply`` submits it like a training run.
"""
