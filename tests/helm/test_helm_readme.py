"""Every value is documented with `## @param`, and the README's values table is up to date."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helm_chart import CHART_DIR

from tests.support.script_module import load_script

readme_values = load_script("readme_values", CHART_DIR / "readme_values.py")


def test_readme_values_table_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(CHART_DIR / "readme_values.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


def test_every_value_has_a_param_comment() -> None:
    sections = readme_values.parse_values((CHART_DIR / "values.yaml").read_text(), SCHEMA)
    assert sum(len(s.params) for s in sections) > 50


def test_an_optional_value_left_out_of_values_yaml_is_documented_as_unset() -> None:
    sections = readme_values.parse_values((CHART_DIR / "values.yaml").read_text(), SCHEMA)
    params = {p.path: p for s in sections for p in s.params}
    assert params["server.contextLength"].unset
    assert "| `server.contextLength` |" in readme_values.render_table(sections)
    assert "| unset |" in readme_values.render_table(sections)


def test_a_param_missing_from_values_and_schema_is_reported() -> None:
    with pytest.raises(readme_values.ValuesDocError, match=r"@param server\.contextLenght"):
        readme_values.parse_values("## @param server.contextLenght X\nserver: {}\n", SCHEMA)


def test_an_undocumented_value_is_reported() -> None:
    with pytest.raises(
        readme_values.ValuesDocError, match=r"values without a `## @param` comment: b\.c;"
    ):
        readme_values.parse_values("## @param a A\na: 1\nb:\n  c: 2\n")


def test_a_param_for_a_missing_value_is_reported() -> None:
    with pytest.raises(readme_values.ValuesDocError, match=r"@param a\.x: no such value"):
        readme_values.parse_values("## @param a.x X\na: {}\n")


def test_a_stale_table_is_detected() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    sections = readme_values.parse_values((CHART_DIR / "values.yaml").read_text(), SCHEMA)
    stale = readme.replace("| `target` |", "| `targetOld` |")
    assert readme_values.update_readme(stale, readme_values.render_table(sections)) == readme
