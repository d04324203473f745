"""Which precision ``auto`` picks: the pure decision fed with flag sets, and this machine."""

import logging

import pytest

from hardware_helpers import cpu_has_amx_bf16
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.sam.precision import (
    PrecisionChoice,
    choose_precision,
    cpu_flags,
    flags_from_cpuinfo,
    resolve_precision,
)

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ICE_LAKE = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 avx512f avx512_vnni\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 bf16 i8mm\n"


def test_flags_from_cpuinfo_text():
    flags = flags_from_cpuinfo(SAPPHIRE_RAPIDS)
    assert {"amx_bf16", "amx_tile", "avx512f"} <= flags and "spectre_v1" not in flags
    assert "amx_bf16" not in flags_from_cpuinfo(ICE_LAKE)
    assert "bf16" in flags_from_cpuinfo(GRAVITON)
    assert flags_from_cpuinfo("") == frozenset()


@pytest.mark.parametrize(("text", "device", "cuda_bf16", "expected"), [
    (SAPPHIRE_RAPIDS, "cpu", False, PrecisionChoice("bf16", "AMX")),
    (ICE_LAKE, "cpu", False, PrecisionChoice("fp32")),
    (GRAVITON, "cpu", False, PrecisionChoice("fp32")),  # ARM bf16 is no AMX: fp32 stays
    ("", "cpu", False, PrecisionChoice("fp32")),
    (ICE_LAKE, "cuda", True, PrecisionChoice("bf16", "CUDA")),
    (ICE_LAKE, "cuda:1", True, PrecisionChoice("bf16", "CUDA")),
    (SAPPHIRE_RAPIDS, "cuda", False, PrecisionChoice("fp32")),  # an old GPU: fp32
    (SAPPHIRE_RAPIDS, "mps", False, PrecisionChoice("fp32")),
])
def test_auto_decision(text, device, cuda_bf16, expected):
    assert choose_precision("auto", device, flags_from_cpuinfo(text), cuda_bf16) == expected


def test_explicit_precision_is_kept_and_unknown_refused():
    assert choose_precision("fp32", "cpu", {"amx_bf16"}) == PrecisionChoice("fp32")
    assert choose_precision("bf16", "cpu", set()).label == "bf16"
    assert PrecisionChoice("bf16", "AMX").label == "bf16 (AMX)"
    with pytest.raises(RaysamError, match="Unknown precision 'fp8'.*'auto', 'fp32', 'bf16'"):
        choose_precision("fp8", "cpu")
    with pytest.raises(RaysamError, match="Unknown precision"):
        resolve_precision("fp16", "cpu")


def test_this_machine_auto_is_bf16_iff_amx_bf16(caplog):
    """On the real CPU: bf16 exactly when /proc/cpuinfo lists amx_bf16, and the choice logged."""
    amx = cpu_has_amx_bf16()
    assert ("amx_bf16" in cpu_flags()) == amx
    with caplog.at_level(logging.INFO, logger="napari_raysam.core.sam.precision"):
        choice = resolve_precision("auto", "cpu")
    assert choice == (PrecisionChoice("bf16", "AMX") if amx else PrecisionChoice("fp32"))
    records = [r for r in caplog.records if r.name == "napari_raysam.core.sam.precision"]
    assert records and choice.label in records[-1].getMessage()
