"""Pure-Python core: no Qt, no napari imports here."""
