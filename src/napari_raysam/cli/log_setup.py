"""Log output of the command line: Ray's own INFO/WARNING lines only with ``--verbose``.

Ray logs through the ``ray`` logger tree ("Started a local Ray instance", the token-auth
WARNING, "Uploading package gcs://...", "WebSocket closed ... close code 1006"). Those lines are
about Ray, not about the user's run, so the command line keeps them out unless ``--verbose``.
This is set here, in the command-line entry points only: the plugin runs inside napari's
process and must not change its logging.
"""

from __future__ import annotations

import logging
import sys

#: Ray's root logger (every ``ray.*`` logger without its own level reports through its level
#: and handler), and the Jobs SDK modules that set their own level INFO when imported.
RAY_LOGGERS = ("ray", "ray.dashboard.modules.job.sdk", "ray.dashboard.modules.dashboard_sdk")
#: Our own library diagnostics (``logging.getLogger(__name__)`` under ``napari_raysam``).
OWN_LOGGER = "napari_raysam"


def add_verbose_argument(parser) -> None:
    """``--verbose`` for a command that talks to Ray."""
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own log lines and the job's full log (default: off)")


class StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (a replaced or captured stream
    included), never to a stream that was closed since the handler was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(verbose: bool) -> None:
    """Ray's loggers at ERROR (``verbose``: left at Ray's INFO); ours at WARNING (INFO).

    Our records still propagate (the root logger has no handler in the command line), so a
    caller's own logging setup sees them too."""
    own = logging.getLogger(OWN_LOGGER)
    if not any(isinstance(h, StderrHandler) for h in own.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        own.addHandler(handler)
    own.setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:
        return
    # Ray configures the "ray" logger when it is imported, and the Jobs SDK modules set their
    # levels when they are imported: import them first so these levels are the last word.
    import ray  # noqa: F401
    import ray.job_submission  # noqa: F401

    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
