"""What the Segment dock's embedding was computed for, and what it says when that changes
(Qt-free)."""

from __future__ import annotations

from typing import NamedTuple


class EmbeddedFor(NamedTuple):
    """What the dock's current embedding was computed for."""

    layer: object  # the image layer: napari may hand out a new proxy of it on every access
    plane_index: tuple[int, ...]
    fingerprint: str


def image_changed_text(old: str, new: str | None) -> str:
    """Status after the Image choice moved away from the image the embedding belongs to."""
    if new is None:
        return f"Dropped the embedding of '{old}': no image layer is chosen."
    return (f"Image is now '{new}': dropped the embedding (and prompts) of '{old}'. "
            f"Compute the embedding of '{new}' to segment it.")
