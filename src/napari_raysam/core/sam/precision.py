"""Which precision the image encoder runs in: bf16 where the hardware computes it fast, else fp32.

bf16 pays on CPUs with AMX (``amx_bf16``: about half the time of fp32 for a vit_b embedding,
with masks that agree to IoU > 0.99) and on GPUs with bf16 support. Elsewhere bf16 autocast is
emulated and slower, so fp32 stays the default. ``torch.backends.cpu.get_cpu_capability()`` is
no help here: it names the widest vector ISA torch dispatches to ("AVX512" on AMX CPUs), so the
decision reads the CPU's flags instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from napari_raysam.core.errors import RaysamError

logger = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16")
CPUINFO = "/proc/cpuinfo"


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved precision and why it was chosen (``"AMX"``, ``"CUDA"``, ``""`` for none)."""

    precision: str  # "fp32" or "bf16"
    reason: str = ""

    @property
    def label(self) -> str:
        """What the Segment dock shows: ``'bf16 (AMX)'``, ``'fp32'``."""
        return f"{self.precision} ({self.reason})" if self.reason else self.precision


def flags_from_cpuinfo(text: str) -> frozenset[str]:
    """The CPU flags in ``/proc/cpuinfo`` text (the first processor's ``flags`` line; ARM's
    ``Features`` line alike); empty when there is none."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_flags() -> frozenset[str]:
    """This CPU's flags: ``/proc/cpuinfo`` on Linux; elsewhere the features torch detects
    (``torch.cpu.get_capabilities()``, which uses the same names for AMX)."""
    try:
        with open(CPUINFO) as handle:
            flags = flags_from_cpuinfo(handle.read())
        if flags:
            return flags
    except OSError:
        pass
    import torch

    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:
        return frozenset()
    return frozenset(name for name, value in get_capabilities().items() if value is True)


def choose_precision(requested: str, device: str, flags: Iterable[str] = (),
                     cuda_bf16: bool = False) -> PrecisionChoice:
    """Pure decision: ``requested`` (auto/fp32/bf16) on ``device`` given the CPU ``flags``
    and whether the GPU supports bf16. ``auto``: bf16 on AMX CPUs and bf16 GPUs, else fp32."""
    if requested not in PRECISIONS:
        raise RaysamError(
            f"Unknown precision {requested!r}: use one of {', '.join(map(repr, PRECISIONS))}."
        )
    if requested != "auto":
        return PrecisionChoice(requested)
    device = device.split(":")[0]  # "cuda:1" is a CUDA device
    if device == "cpu" and "amx_bf16" in set(flags):
        return PrecisionChoice("bf16", "AMX")
    if device == "cuda" and cuda_bf16:
        return PrecisionChoice("bf16", "CUDA")
    return PrecisionChoice("fp32")


def resolve_precision(requested: str, device: str) -> PrecisionChoice:
    """``choose_precision`` for this machine's hardware; what ``auto`` chose is logged."""
    if requested != "auto":
        return choose_precision(requested, device)
    kind = device.split(":")[0]
    flags = cpu_flags() if kind == "cpu" else frozenset()
    cuda_bf16 = False
    if kind == "cuda":
        import torch

        cuda_bf16 = bool(torch.cuda.is_bf16_supported())
    choice = choose_precision(requested, device, flags, cuda_bf16)
    logger.info("Image encoder precision on %s: auto chose %s", device, choice.label)
    return choice
