"""A stand-in for sglang's OpenAI-compatible server: tokens at known times, errors on purpose.

Standard library only, so it runs on the host (import `StandIn`) and inside the kthybrid image
as a script (`python3 openai_standin.py --port 30000 --ttft 0.2 --itl 0.02`). It speaks what
the launcher's clients use: `POST /v1/chat/completions` and `POST /v1/completions` (streamed as
server-sent events, or one JSON body), `GET /v1/models`, `GET /health`, and `GET /standin/stats`
(how many requests it served, failed and dropped).

Timing: the first token is sent `ttft` seconds after the request arrived, token i (from 0)
at `ttft + i * itl` on that request's own clock, so a client's measured TTFT, inter-token
latency and tokens/s have known true values. A request gets `max_tokens` tokens (or
`max_completion_tokens`), capped by `--tokens` when that is set.

Faults: `--error-every N` answers every Nth request with HTTP 500; `--drop-every N` closes
the connection of every Nth request after half its tokens, without the final event.
`--api-key` (or `--api-key-file`) makes it answer 401 like sglang to a missing or wrong
`Authorization: Bearer` header. Every answer carries `X-Standin-Backend: <--backend>`, and
every JSON body and event a `"backend"` field, so a router test can tell who served it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BACKEND_HEADER = "X-Standin-Backend"
TEST_KEY = "kthybrid-test-key-0123456789abcdef"  # a well-formed API key for tests


def free_port() -> int:
    """A TCP port free on the loopback now (for a stand-in or a server that is not there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Behaviour:
    ttft: float = 0.05  # seconds from the request to its first token
    itl: float = 0.01  # seconds between tokens
    tokens: int | None = None  # cap on tokens per answer (None: the request's max_tokens)
    default_tokens: int = 16  # when the request sets no max_tokens
    error_every: int = 0  # every Nth request answers 500 (0: never)
    drop_every: int = 0  # every Nth request is cut after half its tokens (0: never)
    api_key: str | None = None
    backend: str = "standin"
    model: str = "standin-model"


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.served = 0
        self.failed = 0
        self.dropped = 0
        self.unauthorised = 0
        self.tokens = 0

    def next_request(self) -> int:
        with self.lock:
            self.requests += 1
            return self.requests

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {k: v for k, v in vars(self).items() if isinstance(v, int)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default 5 drops connects of a wide sweep (SYN retried in 1 s)
    behaviour: Behaviour
    counters: Counters


class Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read /standin/stats, not the log

    # -- plumbing ---------------------------------------------------------------------
    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps({**body, "backend": self.server.behaviour.backend}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header(BACKEND_HEADER, self.server.behaviour.backend)
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        key = self.server.behaviour.api_key
        if key is None or self.headers.get("Authorization", "") == f"Bearer {key}":
            return True
        self.server.counters.add("unauthorised")
        self._send_json(401, {"error": {"message": "Unauthorized", "type": "auth", "code": 401}})
        return False

    # -- endpoints --------------------------------------------------------------------
    def do_GET(self) -> None:
        behaviour = self.server.behaviour
        if self.path == "/health":
            self._send_json(200, {"status": "ok"})
        elif self.path == "/standin/stats":
            self._send_json(200, self.server.counters.snapshot())
        elif self.path == "/v1/models":
            if self._authorised():
                model = {"id": behaviour.model, "object": "model", "owned_by": "standin"}
                self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        arrived = time.monotonic()
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        if not self._authorised():
            return
        try:
            request = json.loads(raw or b"{}")
            if not isinstance(request, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as error:
            self._send_json(400, {"error": {"message": f"bad JSON: {error}"}})
            return
        number = self.server.counters.next_request()
        behaviour = self.server.behaviour
        if behaviour.error_every and number % behaviour.error_every == 0:
            self.server.counters.add("failed")
            self._send_json(500, {"error": {"message": "stand-in error on purpose"}})
            return
        count = self._token_count(request)
        drop = bool(behaviour.drop_every and number % behaviour.drop_every == 0)
        chat = self.path == "/v1/chat/completions"
        if request.get("stream"):
            self._stream(request, count, chat, drop, arrived)
        else:
            self._whole(count, chat, arrived)

    def _token_count(self, request: dict[str, Any]) -> int:
        behaviour = self.server.behaviour
        asked = request.get("max_completion_tokens") or request.get("max_tokens")
        count = int(asked) if isinstance(asked, int) and asked > 0 else behaviour.default_tokens
        return min(count, behaviour.tokens) if behaviour.tokens else count

    def _whole(self, count: int, chat: bool, arrived: float) -> None:
        behaviour = self.server.behaviour
        _sleep_until(arrived + behaviour.ttft + (count - 1) * behaviour.itl)
        text = "".join(_token(i) for i in range(count))
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
        choice.update({"message": {"role": "assistant", "content": text}} if chat
                      else {"text": text})  # fmt: skip
        self.server.counters.add("served")
        self.server.counters.add("tokens", count)
        self._send_json(200, {
            "id": "standin", "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": behaviour.model, "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": count, "total_tokens": count + 1},
        })  # fmt: skip

    def _stream(
        self, request: dict[str, Any], count: int, chat: bool, drop: bool, arrived: float
    ) -> None:
        behaviour = self.server.behaviour
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")  # as uvicorn: the connection stays
        self.send_header(BACKEND_HEADER, behaviour.backend)
        self.end_headers()
        kind = "chat.completion.chunk" if chat else "text_completion"
        created = int(time.time())
        cut = count // 2 if drop else count
        try:
            for i in range(cut):
                _sleep_until(arrived + behaviour.ttft + i * behaviour.itl)
                delta: dict[str, Any] = {"content": _token(i)}
                if chat and i == 0:
                    delta["role"] = "assistant"
                choice: dict[str, Any] = {"index": 0, "finish_reason": None}
                choice.update({"delta": delta} if chat else {"text": _token(i)})
                self._event({"id": "standin", "object": kind, "created": created,
                             "model": behaviour.model, "choices": [choice]})  # fmt: skip
            if drop:
                self.server.counters.add("dropped")
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            last: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            ending: dict[str, Any] = {"delta": {}} if chat else {"text": ""}
            last.update(ending)
            self._event({"id": "standin", "object": kind, "created": created,
                         "model": behaviour.model, "choices": [last]})  # fmt: skip
            if (request.get("stream_options") or {}).get("include_usage"):
                self._event({"id": "standin", "object": kind, "created": created,
                             "model": behaviour.model, "choices": [], "usage": {
                                 "prompt_tokens": 1, "completion_tokens": count,
                                 "total_tokens": count + 1}})  # fmt: skip
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
            self.server.counters.add("served")
            self.server.counters.add("tokens", count)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away

    def _event(self, body: dict[str, Any]) -> None:
        body["backend"] = self.server.behaviour.backend
        self._chunk(b"data: " + json.dumps(body).encode() + b"\n\n")

    def _chunk(self, data: bytes) -> None:
        """One piece of a chunked body; the empty one ends it."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _token(i: int) -> str:
    return f"t{i} "


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


class StandIn:
    """A stand-in server on a thread (for tests on the host): `with StandIn(...) as s: s.url`."""

    def __init__(self, behaviour: Behaviour, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = _Server((host, port), Handler)
        self.server.behaviour = behaviour
        self.server.counters = Counters()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        return self.server.counters.snapshot()

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--ttft", type=float, default=Behaviour.ttft)
    parser.add_argument("--itl", type=float, default=Behaviour.itl)
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--error-every", type=int, default=0)
    parser.add_argument("--drop-every", type=int, default=0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--api-key-file", default=None)
    parser.add_argument("--backend", default=Behaviour.backend)
    parser.add_argument("--model", default=Behaviour.model)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    key = args.api_key
    if args.api_key_file:
        with open(args.api_key_file, encoding="ascii") as handle:
            key = handle.read().strip()
    behaviour = Behaviour(ttft=args.ttft, itl=args.itl, tokens=args.tokens,
                          error_every=args.error_every, drop_every=args.drop_every,
                          api_key=key, backend=args.backend, model=args.model)  # fmt: skip
    server = StandIn(behaviour, args.host, args.port)
    print(f"stand-in {behaviour.backend} listening on {args.host}:{server.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
