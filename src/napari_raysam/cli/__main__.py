"""``python -m napari_raysam.cli``: the ``napari-raysam`` command, PATH or not."""

import sys

from napari_raysam.cli import main

sys.exit(main())
