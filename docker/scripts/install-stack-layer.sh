#!/usr/bin/env bash
# Installs one layer of the image's Python stack into /opt/venv from its hash lock
# (docker/lock/layers/LAYER.lock, rendered from stack.lock and builder/versions.yaml), with uv
# from the build-tools lock in a throwaway environment. In the same step, so that removed files
# never reach a layer: --replace removes the files a distribution installed under a module and
# installs replacements.lock (module_replacements), --prune removes files the target's GPUs
# cannot load (prune rules, builder/targets.yaml). Both rewrite the distribution's RECORD.
# Usage: install-stack-layer.sh LAYER [--replace DISTRIBUTION MODULE]... [--prune DISTRIBUTION PATH]...
set -euo pipefail
here="$(dirname "$(readlink -f "$0")")"
locks=/usr/share/kthybrid/lock
venv=/opt/venv
layer="${1:?usage: install-stack-layer.sh LAYER [--replace DISTRIBUTION MODULE]... [--prune DISTRIBUTION PATH]...}"
shift
replacements=()
prunes=()
while [ $# -gt 0 ]; do
    case "$1" in
        --replace) replacements+=("$2" "$3"); shift 3 ;;
        --prune) prunes+=("$2" "$3"); shift 3 ;;
        *) echo "install-stack-layer: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ -f "$locks/layers/$layer.lock" ] || { echo "install-stack-layer: no lock for layer $layer" >&2; exit 2; }

tools="$(mktemp -d /tmp/kthybrid-build-tools.XXXXXX)"
trap 'rm -rf "$tools"' EXIT
bash "$here/install-tools.sh" "$tools" "$locks/build-tools.lock"
# No pip in the image's environment: everything in it comes from the locks.
[ -x "$venv/bin/python" ] || python3 -m venv --without-pip "$venv"
uv_install=("$tools/bin/uv" pip install --python "$venv/bin/python" --no-config --no-cache
    --no-deps --require-hashes --quiet)
export PYTHONDONTWRITEBYTECODE=1

"${uv_install[@]}" -r "$locks/layers/$layer.lock"
for ((i = 0; i < ${#replacements[@]}; i += 2)); do
    "$venv/bin/python" "$here/prune-distribution.py" --module "${replacements[i]}" "${replacements[i + 1]}"
done
if [ ${#replacements[@]} -gt 0 ]; then
    "${uv_install[@]}" -r "$locks/replacements.lock"
fi
for ((i = 0; i < ${#prunes[@]}; i += 2)); do
    "$venv/bin/python" "$here/prune-distribution.py" "${prunes[i]}" "${prunes[i + 1]}"
done
