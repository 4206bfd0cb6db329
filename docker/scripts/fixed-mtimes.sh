#!/usr/bin/env bash
# Makes a RUN step's layer the same bytes on every build: the classic builder records each
# file's modification time in the layer, so everything the step creates or changes gets
# SOURCE_DATE_EPOCH (the commit date the builder passes) instead of the time of the build.
#   fixed-mtimes.sh start    first command of the RUN step: marks the step's start
#   fixed-mtimes.sh apply    last command: sets the time of everything changed since `start`
# Changes are found by their ctime, which no tool can set, so files that came from an archive
# with old times are found too. The mark lives in /dev/shm, a tmpfs outside the layer.
# A step must not delete files of a lower layer: the engine records such a deletion as a
# whiteout stamped with the time of the build, which no command inside the step can change.
set -euo pipefail
mark=/dev/shm/kthybrid-step-start

case "${1:-}" in
    start)
        touch "$mark"
        # Anything changed after this sleep has a ctime past the mark's, even though the
        # kernel's file-time clock advances in ticks of a few milliseconds.
        sleep 0.1
        ;;
    apply)
        : "${SOURCE_DATE_EPOCH:?fixed-mtimes: SOURCE_DATE_EPOCH is not set (the builder passes it as a build argument)}"
        [ -e "$mark" ] || { echo "fixed-mtimes: apply without start in this RUN step" >&2; exit 2; }
        find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /etc/hosts \
            -o -path /etc/hostname -o -path /etc/resolv.conf \) -prune \
            -o -cnewer "$mark" -print0 \
            | xargs -0r touch --no-dereference --date="@${SOURCE_DATE_EPOCH}"
        rm -f "$mark"
        ;;
    *)
        echo "usage: fixed-mtimes.sh start|apply" >&2
        exit 2
        ;;
esac
