"""napari-raysam: SAM segmentation in napari with fine-tuning on a Ray cluster."""

__version__ = "0.1.0"
