"""This machine's CPU, for tests whose subject needs an instruction set the machine may lack.

The CI machines differ: some have AVX-512, some (AMD EPYC without it) only AVX2. A test that
needs kt-kernel's AMX-INT4 quantizer cannot run on the second kind; the refusal is what runs
there instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kthybrid_serve.workflow import QUANTIZER_FLAGS


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    raise RuntimeError(f"{cpuinfo} has no flags line: cannot tell this machine's instruction set")


HOST_QUANTIZES = all(flag in cpu_flags() for flag in QUANTIZER_FLAGS)
needs_quantizer = pytest.mark.skipif(
    not HOST_QUANTIZES,
    reason="this CPU has no AVX512F+AVX512BW, which kt-kernel's AMX-INT4 quantizer needs: "
    "conversion cannot run here (the in-image refusal test runs instead)",
)
