"""kt-kernel in the image: the CPU variant it picks on this host, and one MoE forward it computes.

scripts/kt_kernel_moe_forward.py runs once in a fresh container (read-only mount, no network,
a non-root user); its docstring says what it computes and why its tolerance is what it is.
"""

from __future__ import annotations

from typing import Any

import pytest

SCRIPT = "kt_kernel_moe_forward.py"


@pytest.fixture(scope="module")
def moe_check(run_script: Any) -> dict[str, Any]:
    """The JSON object the script printed (its exit code is judged by the tests' facts)."""
    result = run_script(SCRIPT, timeout=300)
    report: dict[str, Any] = result.json()
    report["exit_code"] = result.exit_code
    return report


def test_kt_kernel_picks_the_cpu_variant_the_host_flags_call_for(
    moe_check: dict[str, Any],
) -> None:
    assert moe_check["variant_override"] == "", "KT_KERNEL_CPU_VARIANT overrides detection"
    assert moe_check["cpu_variant"] == moe_check["expected_variant_from_flags"], moe_check
    assert moe_check["cpu_variant"] in moe_check["extension_file"], moe_check


def test_kt_kernel_never_picks_amx_on_a_host_without_amx(moe_check: dict[str, Any]) -> None:
    amx_flags = sorted(flag for flag in moe_check["flags"] if flag.startswith("amx"))
    if amx_flags:
        pytest.skip(f"this host has AMX ({', '.join(amx_flags)})")
    assert moe_check["cpu_variant"] != "amx", moe_check
    assert "amx" not in moe_check["extension_file"], moe_check


def test_kt_kernel_moe_forward_matches_the_reference(moe_check: dict[str, Any]) -> None:
    assert moe_check["output_finite"], moe_check
    assert moe_check["max_abs_err"] <= moe_check["tolerance"], moe_check
    # The tolerance tells right from wrong: a wrong answer on the same data misses it tenfold.
    assert moe_check["wrong_answer_err"] > 10 * moe_check["tolerance"], moe_check
