"""The rendered output of every ci/ scenario matches tests/helm/golden/<scenario>.yaml.

Refresh after an intended change, then review the diff:
    KTHYBRID_UPDATE_GOLDEN=1 pytest tests/helm/test_helm_golden.py
"""

from __future__ import annotations

import difflib
import os

import pytest
from helm_chart import GOLDEN_DIR, SCENARIOS, Rendered

UPDATE = os.environ.get("KTHYBRID_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_render_matches_the_golden_file(
    scenario_renders: dict[str, Rendered], scenario: str
) -> None:
    golden = GOLDEN_DIR / f"{scenario}.yaml"
    actual = scenario_renders[scenario].text
    if UPDATE:  # or: python tests/helm/goldens.py --write (make generate)
        golden.write_text(actual)
    assert golden.exists(), (
        f"{golden} is missing: run KTHYBRID_UPDATE_GOLDEN=1 pytest tests/helm/test_helm_golden.py"
    )
    expected = golden.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                f"golden/{scenario}.yaml",
                "helm template",
            )
        )
        pytest.fail(
            f"{scenario} renders differently from its golden file; if intended, refresh with "
            f"KTHYBRID_UPDATE_GOLDEN=1 pytest tests/helm/test_helm_golden.py\n{diff}",
            pytrace=False,
        )


def test_every_golden_file_has_a_scenario() -> None:
    stale = sorted(p.stem for p in GOLDEN_DIR.glob("*.yaml") if p.stem not in SCENARIOS)
    assert not stale, f"golden files without a ci/ scenario: {stale}; delete them"
