"""kt-kernel in the image: the CPU variant it picks on this host, and one MoE forward it computes.

scripts/kt_kernel_moe_forward.py runs once in a fresh container (read-only mount, no network,
a non-root user); its docstring says what it computes and why its tolerance is what it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SCRIPT_DIR = Path(__file__).parent / "scripts"
SCRIPT = "kt_kernel_moe_forward.py"


def _host_flags() -> set[str]:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].lower().split())
    return set()


@pytest.fixture(scope="module")
def moe_check(run_in_image: Any) -> dict[str, Any]:
    """The JSON object the script printed (its exit code is judged by the tests' facts)."""
    result = run_in_image(
        ["python", f"/checks/{SCRIPT}"],
        volumes={str(SCRIPT_DIR): {"bind": "/checks", "mode": "ro"}},
        timeout=300,
    )
    for line in reversed(result.stdout.strip().splitlines()):
        if line.startswith("{"):
            report: dict[str, Any] = json.loads(line)
            report["exit_code"] = result.exit_code
            return report
    pytest.fail(
        f"{SCRIPT} printed no JSON (exit {result.exit_code}); "
        f"stdout={result.stdout!r} stderr={result.stderr[-4000:]!r}",
        pytrace=False,
    )


def test_kt_kernel_picks_the_cpu_variant_the_host_flags_call_for(
    moe_check: dict[str, Any],
) -> None:
    assert moe_check["variant_override"] == "", "KT_KERNEL_CPU_VARIANT overrides detection"
    assert moe_check["cpu_variant"] == moe_check["expected_variant_from_flags"], moe_check
    assert moe_check["cpu_variant"] in moe_check["extension_file"], moe_check


def test_kt_kernel_never_picks_amx_on_a_host_without_amx(moe_check: dict[str, Any]) -> None:
    amx_flags = sorted(flag for flag in _host_flags() if flag.startswith("amx"))
    if amx_flags:
        pytest.skip(f"this host has AMX ({', '.join(amx_flags)})")
    assert moe_check["cpu_variant"] != "amx", moe_check
    assert "amx" not in moe_check["extension_file"], moe_check


def test_kt_kernel_moe_forward_matches_the_reference(moe_check: dict[str, Any]) -> None:
    assert moe_check["output_finite"], moe_check
    assert moe_check["max_abs_err"] <= moe_check["tolerance"], moe_check
    # The tolerance tells right from wrong: a wrong answer on the same data misses it tenfold.
    assert moe_check["wrong_answer_err"] > 10 * moe_check["tolerance"], moe_check
