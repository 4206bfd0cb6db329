"""A package index on the loopback that demands a user and password, in front of the real one.

Company mirrors often sit behind credentials (`https://user:token@mirror/simple`); this stands
in for one: every request must carry HTTP basic auth for the given user and password, and is
then forwarded to the index this host uses (PIP_INDEX_URL, else PyPI). Package files stay where
the index's pages point (files.pythonhosted.org for PyPI). Used by the build-secrets test and
bench/reproducible.py.
"""

from __future__ import annotations

import base64
import os
import ssl
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

UPSTREAM = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


class _Handler(BaseHTTPRequestHandler):
    server: _ProxyServer

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.server.expected:
            with self.server.lock:
                self.server.refused += 1
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="kthybrid test index"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with self.server.lock:
            self.server.authorized += 1
        if not self.path.startswith("/simple"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        request = urllib.request.Request(
            self.server.upstream + self.path.removeprefix("/simple"),
            headers={"Accept": self.headers.get("Accept", "text/html")},
        )
        try:
            with urllib.request.urlopen(request, timeout=60, context=self.server.tls) as answer:
                status, body = answer.status, answer.read()
                content_type = answer.headers.get("Content-Type", "text/html")
        except urllib.error.HTTPError as error:
            status, body, content_type = error.code, b"", "text/plain"
        except OSError as error:  # the real index did not answer: say so, as a proxy does
            status, body, content_type = 502, str(error).encode(), "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test counts requests instead."""


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is not worth a traceback."""

    def __init__(self, user: str, password: str, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.expected = f"Basic {token}"
        self.upstream = upstream
        bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
        self.tls = ssl.create_default_context(cafile=bundle)
        self.lock = threading.Lock()
        self.authorized = 0
        self.refused = 0


class AuthenticatingIndex:
    """`with AuthenticatingIndex(user, password) as index:` serves at index.url."""

    def __init__(self, user: str, password: str, upstream: str = UPSTREAM) -> None:
        self.server = _ProxyServer(user, password, upstream)
        self.user = user
        self.password = password
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """The index URL with the credentials in it, as a user would pass it."""
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.port}/simple"

    @property
    def authorized(self) -> int:
        return self.server.authorized

    @property
    def refused(self) -> int:
        return self.server.refused

    def __enter__(self) -> AuthenticatingIndex:
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
