"""triton is blocked only where it would crash napari: a process whose GL driver (Mesa's
llvmpipe, as under Xvfb) has loaded the system's libLLVM; a plain process keeps it."""

from __future__ import annotations

import subprocess
import sys

PROBE = ("import sys; {setup}import napari_raysam._qt; "
         "print(repr(sys.modules.get('triton', 'absent')))")


def _run(setup: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_a_process_without_a_gl_canvas_keeps_triton():
    assert _run("") != "None"


def test_a_process_with_napari_on_mesa_llvmpipe_blocks_triton():
    setup = ("import napari; v = napari.Viewer(show=False); "
             "maps = open('/proc/self/maps').read(); ")
    got = _run(setup + "assert '/libLLVM' in maps, 'no Mesa LLVM driver here'; ")
    assert got == "None"


def test_a_dock_opened_after_an_early_import_still_blocks_triton():
    """_qt imported before any canvas (as a test module or a script may): the dock guards
    again when it opens, before it imports torch."""
    setup = ("import napari_raysam._qt._common as c; assert 'triton' not in sys.modules; "
             "import napari; v = napari.Viewer(show=False); "
             "c.preload(('json',)); ")
    assert _run(setup) == "None"
