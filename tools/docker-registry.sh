#!/usr/bin/env bash
# Installs Debian's docker-registry (distribution 2.8), the real OCI registry that
# tests/registry starts on the loopback. It is not started here: each test session runs its
# own on a free port with its own storage, and stops it. Idempotent.
set -euo pipefail

log() { printf 'docker-registry: %s\n' "$*" >&2; }

if command -v docker-registry >/dev/null 2>&1; then
    log "already installed ($(docker-registry --version 2>/dev/null | head -n 1))"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    log "not installed and not root: run 'sudo apt-get install docker-registry' (Debian/Ubuntu), then re-run"
    exit 1
fi
log "installing Debian's docker-registry"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Without systemd its service is not started; nothing listens until a test starts one.
apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
log "installed ($(docker-registry --version 2>/dev/null | head -n 1))"
