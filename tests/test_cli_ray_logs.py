"""Ray's own INFO/WARNING lines stay out of the command line's output unless --verbose."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_raysam.core.dataset import SampleInput, write_dataset
from napari_raysam.core.dataset.synthetic import make_samples

#: Lines Ray printed into `napari-raysam train`/`submit` output before.
RAY_LINES = ("Started a local Ray instance", "Token authentication is", "Uploading package",
             "WebSocket closed", "Connecting to existing Ray cluster")


@pytest.fixture
def own_logger():
    """The ``napari_raysam`` logger, restored afterwards: configure_logging gives it a handler
    and stops its propagation, which would hide later tests' records from caplog."""
    from napari_raysam.cli.log_setup import OWN_LOGGER

    own = logging.getLogger(OWN_LOGGER)
    saved = own.handlers[:], own.propagate, own.level
    yield own
    own.handlers[:], own.propagate = saved[0], saved[1]
    own.setLevel(saved[2])


def test_configure_logging_quiets_ray_and_the_jobs_sdk_unless_verbose(own_logger):
    from napari_raysam.cli.log_setup import RAY_LOGGERS, configure_logging

    names = (*RAY_LOGGERS, "ray._private.worker", "ray._private.runtime_env.packaging",
             "ray._private.authentication.authentication_token_setup")
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        configure_logging(False)
        for name in names:
            assert not logging.getLogger(name).isEnabledFor(logging.WARNING), name
            assert logging.getLogger(name).isEnabledFor(logging.ERROR), name
        for name in RAY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)  # Ray's own level
        configure_logging(True)  # --verbose leaves Ray's levels alone
        assert logging.getLogger("ray.dashboard.modules.job.sdk").isEnabledFor(logging.INFO)
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def test_library_diagnostics_reach_the_command_line(own_logger, capsys):
    """A warning of library code (``logging.getLogger(__name__)``) is on stderr without
    --verbose; its INFO lines only with --verbose."""
    from napari_raysam.cli.log_setup import configure_logging

    diag = logging.getLogger("napari_raysam._qt.metrics_plot")
    configure_logging(False)
    diag.warning("the metrics plot could not be drawn: no fonts")
    diag.info("an info line")
    err = capsys.readouterr().err
    assert "WARNING: the metrics plot could not be drawn: no fonts" in err
    assert "an info line" not in err
    configure_logging(True)
    diag.info("an info line")
    assert capsys.readouterr().err.count("INFO: an info line") == 1  # one handler, not two


def _train(ds: Path, storage: Path, *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "napari_raysam.cli", "train", str(ds), "--model", "tiny",
         "--epochs", "1", "--steps-per-epoch", "2", "--correction-rounds", "1",
         "--storage", str(storage), *extra],
        env=env, capture_output=True, text=True, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


@pytest.mark.ray
def test_train_keeps_ray_lines_out_unless_verbose(tmp_path):
    samples = make_samples(4, (96, 96), style="round", seed=1)
    ds = write_dataset(tmp_path / "ds", [SampleInput(s.image, s.labels, f"r{i}")
                                         for i, s in enumerate(samples)],
                       val_fraction=0.5, seed=1).path
    quiet = _train(ds, tmp_path / "runs")
    assert "before -> after" in quiet and "registered as run:" in quiet, quiet
    leaked = [line for line in quiet.splitlines() if any(s in line for s in RAY_LINES)
              or "\tINFO " in line or "\tWARNING " in line]
    assert not leaked, quiet
    loud = _train(ds, tmp_path / "runs", "--verbose")
    assert "Started a local Ray instance" in loud, loud
