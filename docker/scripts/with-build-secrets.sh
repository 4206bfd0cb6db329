#!/usr/bin/env bash
# Runs one build command with the build's secrets, which no layer, image history or cache key
# ever holds. The builder serves them on the build host's loopback for the length of one build
# (builder/secrets.py) and hands their address to the build in FTP_PROXY: one of the engine's
# predefined build arguments, which the classic builder gives to RUN steps but records neither
# in the image history nor in the cache key (nothing in this build speaks FTP). They are
# fetched here into a private directory, given to the command, and removed when it ends, before
# the step's layer is committed.
#   ca.pem      a CA bundle for pip and uv (PIP_CERT, SSL_CERT_FILE)
#   index-url   a Python package index (PIP_INDEX_URL, UV_INDEX_URL); it may carry credentials
# Without FTP_PROXY the command runs with the image's own CA certificates and the default index.
# Usage: with-build-secrets.sh COMMAND [ARG...]
set -euo pipefail
server="${FTP_PROXY:-}"
unset FTP_PROXY ftp_proxy
if [ -z "$server" ]; then
    exec "$@"
fi

secrets="$(mktemp -d /tmp/kthybrid-build-secrets.XXXXXX)"
trap 'rm -rf "$secrets"' EXIT
python3 - "$server" "$secrets" <<'PY'
import os
import sys
import urllib.error
import urllib.request

server, destination = sys.argv[1].rstrip("/"), sys.argv[2]
# The server is on this host's loopback: no proxy of any kind applies to it.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for name in ("ca.pem", "index-url"):
    try:
        with opener.open(f"{server}/{name}", timeout=30) as response:
            data = response.read()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            continue
        sys.exit(f"with-build-secrets: the builder's secret server answered {error.code} for {name}")
    except OSError as error:
        sys.exit(
            f"with-build-secrets: cannot reach the builder's secret server ({error}): the build "
            f"must run on the host network, as `python -m builder build` runs it"
        )
    descriptor = os.open(os.path.join(destination, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)
PY
if [ -s "$secrets/ca.pem" ]; then
    export PIP_CERT="$secrets/ca.pem" SSL_CERT_FILE="$secrets/ca.pem"
fi
if [ -s "$secrets/index-url" ]; then
    index_url="$(cat "$secrets/index-url")"
    export PIP_INDEX_URL="$index_url" UV_INDEX_URL="$index_url"
fi
"$@"
