"""Thin Qt widgets: read the form, call core, show results.

Importing triton's compiler library into a process that already holds an OpenGL context
(napari's canvas on Mesa/llvmpipe, as under Xvfb) crashes it: two LLVM copies clash. torch
imports triton lazily (torchvision.ops -> torch._dynamo) only to probe for it, and napari's
process never compiles kernels (training runs in Ray workers), so the docks mark triton as
unavailable here unless something already loaded it.
"""

import sys

if "triton" not in sys.modules:
    sys.modules["triton"] = None
