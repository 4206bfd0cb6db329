"""Where clients reach the server."""

from __future__ import annotations


def reachable_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on `host` (wildcards: loopback)."""
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
