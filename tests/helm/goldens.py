"""Writes or checks tests/helm/golden/<scenario>.yaml: `helm template` of each ci/ scenario.

python tests/helm/goldens.py --write   # after an intended chart change (make generate)
python tests/helm/goldens.py --check   # exit 1 when a golden file is stale (make check-generated)
"""

from __future__ import annotations

import argparse
import sys

from helm_chart import GOLDEN_DIR, HELM, SCENARIOS, RenderError, run_helm_template, scenario_file


def stale_goldens(write: bool) -> list[str]:
    """Scenarios whose golden file differs from a fresh render (written over when `write`)."""
    stale = []
    for scenario in SCENARIOS:
        golden = GOLDEN_DIR / f"{scenario}.yaml"
        text = run_helm_template(HELM, scenario_file(scenario)).text
        if golden.exists() and golden.read_text() == text:
            continue
        stale.append(scenario)
        if write:
            golden.write_text(text)
    for orphan in sorted(p for p in GOLDEN_DIR.glob("*.yaml") if p.stem not in SCENARIOS):
        stale.append(f"{orphan.stem} (no ci/ scenario)")
        if write:
            orphan.unlink()
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the stale golden files")
    mode.add_argument("--check", action="store_true", help="exit 1 when a golden file is stale")
    args = parser.parse_args(argv)
    if not HELM.exists():
        print(f"goldens: {HELM} is missing: run tools/install-helm.sh", file=sys.stderr)
        return 2
    try:
        stale = stale_goldens(write=args.write)
    except RenderError as error:
        print(f"goldens: helm template failed: {error}", file=sys.stderr)
        return 1
    if args.write:
        print(f"{len(SCENARIOS)} golden files, {len(stale)} rewritten: {', '.join(stale) or '-'}")
        return 0
    if stale:
        print(f"goldens: stale: {', '.join(stale)}; run `make generate` and review the diff",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"{len(SCENARIOS)} golden files match a fresh render")
    return 0


if __name__ == "__main__":
    sys.exit(main())
