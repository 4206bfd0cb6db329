"""Serves a build's secrets on the host's loopback for the length of one build, and no longer.

The classic builder (what the Docker SDK drives; no BuildKit here) has no secret mounts: a
COPY, ARG or ENV that carries a secret leaves it in a layer, the image history or the cache key.
So the secrets never enter the build context or its arguments. This server holds them in
memory, under a random path, on 127.0.0.1; the build (on the host network) gets the server's
address through FTP_PROXY, a predefined build argument the engine neither records in the image
history nor uses in the cache key, and docker/scripts/with-build-secrets.sh fetches them inside
the one RUN step that uses them and deletes them before the step ends. When the build is over
the server stops, and the address it handed out leads nowhere.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The build argument that carries the server's address: predefined by the engine, so the
# classic builder passes it to RUN steps without recording it; nothing in the build uses FTP.
ADDRESS_BUILD_ARG = "FTP_PROXY"


class _Handler(BaseHTTPRequestHandler):
    server: _SecretServer

    def do_GET(self) -> None:
        body = self.server.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing is logged: the request paths carry the token."""


class _SecretServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files


@contextmanager
def serve_secrets(files: dict[str, bytes]) -> Iterator[str]:
    """Serve `files` (name -> content) while the block runs; yields the base URL to hand on.

    The URL carries a random token, so another process on the host cannot guess it.
    """
    token = secrets.token_urlsafe(32)
    server = _SecretServer({f"/{token}/{name}": data for name, data in files.items()})
    thread = threading.Thread(target=server.serve_forever, name="build-secrets", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}/{token}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
