"""Commands of upstream tools: `kt chat`."""

from __future__ import annotations


def chat_argv(host: str, port: int) -> list[str]:
    """`kt chat` against the server; a wildcard listen address is reached via loopback."""
    target = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
    return ["kt", "chat", "--host", target, "--port", str(port)]
