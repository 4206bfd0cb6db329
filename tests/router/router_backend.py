"""A stand-in kthybrid server for router tests: the endpoints sglang-router 0.3.2 calls.

sglang-kt 0.7.2's server (sglang/srt/entrypoints/http_server.py and utils/auth.py) answers
/health and /metrics without a key and every other path only with `Authorization: Bearer KEY`
(401 otherwise); the router registers a worker by reading /server_info and /model_info, asks
/get_load for load, and forwards /generate and /v1/* requests. This stand-in answers those the
same way and records every request (path, Authorization header, body), so a test can tell
which backend served what and with which credentials. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "standin-model"
OPEN_PREFIXES = ("/health", "/metrics")
COMPLETIONS = ("/generate", "/v1/chat/completions", "/v1/completions")


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    body: bytes


@dataclass
class Backend:
    name: str
    key: str
    server: _Server
    # Seconds each completion takes, as a busy hybrid server's do.
    delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, item: Seen) -> None:
        with self.lock:
            self.seen.append(item)

    def requests(self, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if path is None or s.path == path]

    def stop(self) -> None:
        """Gone as a crashed server is: open connections are cut, the port refuses new ones."""
        self.server.shutdown()
        self.server.server_close()
        with self.server.connections_lock:
            for connection in self.server.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _answer(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        backend = self.server.backend
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        authorization = self.headers.get("Authorization")
        backend.record(Seen(self.command, path, authorization, body))
        if not path.startswith(OPEN_PREFIXES) and authorization != f"Bearer {backend.key}":
            self._answer(401, {"error": {"message": "Unauthorized"}})
            return
        if backend.delay and path in COMPLETIONS:
            time.sleep(backend.delay)
        self._answer(200, _payload(path, body, backend.name))

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads Backend.seen."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    backend: Backend

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections: list[socket.socket] = []
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.append(request)
        super().process_request(request, client_address)


def _payload(path: str, body: bytes, name: str) -> Any:
    if path.startswith("/health"):
        return {}
    if path == "/metrics":
        return {}
    if path in ("/server_info", "/get_server_info"):
        return {"model_path": MODEL, "tokenizer_path": MODEL, "version": "standin"}
    if path in ("/model_info", "/get_model_info"):
        return {"model_path": MODEL, "tokenizer_path": MODEL, "is_generation": True}
    if path == "/get_load":
        return [{"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}]
    if path == "/v1/models":
        return {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
    if path == "/generate":
        return {"text": name, "meta_info": {"backend": name, "finish_reason": {"type": "stop"}}}
    request = json.loads(body or b"{}")
    return {
        "id": f"cmpl-{name}",
        "object": "chat.completion",
        "model": request.get("model", MODEL),
        "backend": name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": name},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def start_backend(name: str, key: str, delay: float = 0.0) -> Backend:
    """A stand-in on a free loopback port, serving in a daemon thread."""
    server = _Server()
    backend = Backend(name, key, server, delay)
    server.backend = backend
    threading.Thread(target=server.serve_forever, name=f"backend-{name}", daemon=True).start()
    return backend
