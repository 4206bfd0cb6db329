"""This machine's CPU, for tests whose subject needs an instruction set the machine may lack.

The CI machines differ: some have AVX-512, some (AMD EPYC without it) only AVX2. A test that
needs kt-kernel's AMX-INT4 quantizer cannot run on the second kind; the refusal is what runs
there instead.
"""

from __future__ import annotations

import pytest
from kthybrid_serve.host.host import read_cpuinfo
from kthybrid_serve.host.hostfs import HostTree
from kthybrid_serve.workflow import QUANTIZER_FLAGS

# Read as the launcher reads the host, so the skip and the launcher's refusal agree.
HOST_QUANTIZES = all(flag in read_cpuinfo(HostTree("/"))[0] for flag in QUANTIZER_FLAGS)
needs_quantizer = pytest.mark.skipif(
    not HOST_QUANTIZES,
    reason="this CPU has no AVX512F+AVX512BW, which kt-kernel's AMX-INT4 quantizer needs: "
    "conversion cannot run here (the in-image refusal test runs instead)",
)
