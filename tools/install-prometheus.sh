#!/usr/bin/env bash
# Installs Debian's prometheus package (the Prometheus server and promtool) for the tests:
# `promtool check rules` / `promtool test rules` and a real Prometheus that scrapes a stand-in.
# The package's own service is not started (no systemd here; the tests start their own server).
# Idempotent: does nothing when both binaries answer.
set -euo pipefail

log() { printf 'install-prometheus: %s\n' "$*" >&2; }

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    log "already installed ($(prometheus --version 2>&1 | head -n 1))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    log "prometheus/promtool are missing and installing them needs root: run 'sudo apt-get install prometheus' (Debian/Ubuntu) and re-run"
    exit 1
fi

log "installing Debian's prometheus"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the package's init script from starting a server during the install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "${policy}" ]; then
    printf '#!/bin/sh\nexit 101\n' >"${policy}"
    chmod 0755 "${policy}"
    created_policy=1
fi
trap '[ "${created_policy}" -eq 0 ] || rm -f -- "${policy}"' EXIT
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
log "installed ($(prometheus --version 2>&1 | head -n 1))"
