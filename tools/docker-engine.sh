#!/usr/bin/env bash
# Installs (Debian's docker.io) and starts a real Docker engine when none answers.
# Idempotent: does nothing when `docker info` already answers.
set -euo pipefail

log() { printf 'docker-engine: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
    log "engine already running ($(docker info --format '{{.ServerVersion}}'))"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        log "no Docker engine here and not root: install Docker (https://docs.docker.com/engine/install/) and start it, then re-run"
        exit 1
    fi
    log "installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # With recommends, as seen working on these machines (apparmor, cgroupfs-mount, xz-utils...).
    apt-get install -y -qq docker.io ca-certificates >/dev/null
fi

if [ "$(id -u)" -ne 0 ]; then
    log "dockerd is installed but not running, and starting it needs root: run 'sudo dockerd' or start the docker service"
    exit 1
fi

log "starting dockerd (log: /var/log/dockerd.log)"
# No systemd on these machines: run the daemon in the background, detached from this shell.
nohup dockerd >/var/log/dockerd.log 2>&1 &
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        log "engine ready ($(docker info --format '{{.ServerVersion}}'), storage driver $(docker info --format '{{.Driver}}'))"
        exit 0
    fi
    sleep 1
done
log "dockerd did not answer within 60 s; last lines of /var/log/dockerd.log:"
tail -n 20 /var/log/dockerd.log >&2
exit 1
