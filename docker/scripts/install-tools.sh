#!/usr/bin/env bash
# Creates a virtual environment at DEST holding exactly the packages of one hash lock (the
# build tools: uv, setuptools, wheel; or the SBOM tools). Usage: install-tools.sh DEST LOCK
set -euo pipefail
destination="$1"
lock="$2"
python3 -m venv "$destination"
"$destination/bin/pip" install --quiet --no-cache-dir --no-deps --require-hashes -r "$lock"
