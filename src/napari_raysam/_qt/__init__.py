"""Thin Qt widgets (the docks): read the form, call core, show results. May import anything in
``core``; core never imports this package.

Importing triton's compiler library into a process that already holds an OpenGL context
rendered by Mesa's LLVM-based drivers (llvmpipe, as under Xvfb; they load the system's
``libLLVM``) crashes it: two LLVM copies clash. torch imports triton lazily (torchvision.ops ->
torch._dynamo) only to probe for it, and napari's process never compiles kernels (training
runs in Ray workers), so in that one case the docks mark triton as unavailable, with a log line.
Elsewhere (another GL driver, Windows, macOS, or triton already loaded) nothing is changed.
"""

import logging
import sys


def _mesa_llvm_loaded() -> bool:
    """Whether a GL driver has loaded the system's libLLVM into this process (Linux only)."""
    try:
        with open("/proc/self/maps") as fh:
            return "/libLLVM" in fh.read()
    except OSError:
        return False


def guard_triton() -> None:
    """Mark triton unavailable where it would crash (see the module doc); called on import
    and again when a dock opens (by then napari's canvas exists)."""
    if "triton" not in sys.modules and _mesa_llvm_loaded():
        sys.modules["triton"] = None
        logging.getLogger(__name__).info(
            "napari-raysam marked triton unavailable in this process: Mesa's LLVM-based GL "
            "driver is loaded and a second LLVM (triton's) would crash it")


guard_triton()
