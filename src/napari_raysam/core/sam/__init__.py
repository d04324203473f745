"""SAM itself: models and checkpoints (micro-sam's format, the registry, the tiny architecture),
the fused encoder/decoder paths, the embedding cache, prompted and automatic segmentation, and
what training and evaluation share (prompt sampling, losses, tiles, batched decoder rounds,
evaluation on a training set's split).

May import: the bottom layer (``core.*`` modules) and ``core.dataset`` (evaluation reads a
split). Never ``core.training``, ``core.runs``, ``core.cluster``, Qt or napari.
"""
