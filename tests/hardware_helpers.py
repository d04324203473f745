"""What the precision choice should be on the machine running the tests, read independently of
``core.sam.precision`` (a plain text search of /proc/cpuinfo, torch's own query elsewhere)."""

from __future__ import annotations

from pathlib import Path


def cpu_has_amx_bf16() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        return "amx_bf16" in cpuinfo.read_text()
    import torch

    return bool(torch.cpu.get_capabilities().get("amx_bf16", False))


def expected_auto_label(device: str) -> str:
    """The label ``auto`` must give on this machine for ``device``."""
    if device == "cpu":
        return "bf16 (AMX)" if cpu_has_amx_bf16() else "fp32"
    if device == "cuda":
        import torch

        return "bf16 (CUDA)" if torch.cuda.is_bf16_supported() else "fp32"
    return "fp32"
