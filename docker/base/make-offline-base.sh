#!/usr/bin/env bash
# Makes the run-time base image locally, for machines that reach no container registry:
# debootstrap builds a Debian root file system from the Debian mirror that the host's apt
# already uses, and `docker import` tags it with the name the Dockerfiles' FROM expects,
# so the same Dockerfile builds online (pulling) and offline (using this image).
#
# Usage: make-offline-base.sh [IMAGE] [SUITE]    (defaults: debian:bookworm-slim bookworm)
# Env:   DEBIAN_MIRROR overrides the mirror; FORCE=1 rebuilds an image that already exists.
set -euo pipefail

image="${1:-debian:bookworm-slim}"
suite="${2:-bookworm}"

log() { printf 'offline-base: %s\n' "$*" >&2; }

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
    origin="$(docker image inspect --format '{{index .Config.Labels "io.kthybrid.base.origin"}}' "$image")"
    digest="$(docker image inspect --format '{{index .RootFS.Layers 0}}' "$image")"
    log "$image already present (${origin:-pulled from a registry}; first layer $digest); FORCE=1 rebuilds it"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        log "debootstrap is missing: install it (apt-get install debootstrap) and re-run"
        exit 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

mirror_from_apt() {
    # First URI of a deb822 .sources file or a one-line sources.list entry for Debian itself.
    local uri
    uri="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -n 1 || true)"
    if [ -z "$uri" ]; then
        uri="$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v -- '-security' | head -n 1 || true)"
    fi
    printf '%s' "${uri:-http://deb.debian.org/debian}"
}
mirror="${DEBIAN_MIRROR:-$(mirror_from_apt)}"

rootfs="$(mktemp -d /tmp/kthybrid-rootfs.XXXXXX)"
cleanup() { rm -rf "$rootfs"; }
trap cleanup EXIT

log "debootstrap $suite (minbase) from $mirror into $rootfs"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/tmp/kthybrid-debootstrap.log 2>&1 || {
    log "debootstrap failed; last lines of /tmp/kthybrid-debootstrap.log:"
    tail -n 15 /tmp/kthybrid-debootstrap.log >&2
    exit 1
}

# Same trimming as Debian's slim images: no apt lists, caches, docs or man pages.
cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
SOURCES
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log

log "importing as $image"
tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL io.kthybrid.base.origin=\"debootstrap $suite minbase from $mirror on $(date -u +%Y-%m-%d)\"" \
    - "$image" >/dev/null
# The content digest names the root file system itself (the sha256 of its tar, the image's one
# layer): an import gets a new image ID each time, a registry digest needs a registry.
log "done: $image ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
log "content digest: $(docker image inspect --format '{{index .RootFS.Layers 0}}' "$image")"
