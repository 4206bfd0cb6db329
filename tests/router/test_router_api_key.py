"""The API key: required from clients at the router, sent to the servers, never on argv."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from router_fixtures import KEY, Router, chat, post

# Routes that reach a server or change the router (sglang-router 0.3.2 answers 401 without key).
GUARDED = ("/v1/chat/completions", "/v1/completions", "/generate")


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdef"], ids=["none", "wrong"])
@pytest.mark.parametrize("path", GUARDED)
def test_the_router_answers_401_without_the_key(router: Router, path: str, key: str | None) -> None:
    before = [b.stats() for b in router.backends]
    status, _ = post(
        f"{router.url}{path}",
        {"model": "standin-model", "prompt": "x", "text": "x", "messages": []},
        key,
    )
    assert status == 401
    assert [b.stats() for b in router.backends] == before, "a refused request reached a server"


def test_the_router_sends_the_key_to_every_backend(router: Router) -> None:
    """The stand-ins answer 401 and count it when the key is missing or wrong."""
    with ThreadPoolExecutor(9) as pool:
        results = list(pool.map(lambda i: chat(router, f"key check {i} " * 20), range(9)))
    assert [status for status, _ in results] == [200] * 9
    for backend in router.backends:
        stats = backend.stats()
        assert stats["served"] > 0, f"{backend.name} served nothing"
        assert stats["unauthorised"] == 0, f"{backend.name} got a request without the key"


def test_the_key_is_in_no_argument_environment_or_log_of_the_router(router: Router) -> None:
    chat(router, "one request so that the log has a request in it")
    inspected = json.loads(router.inspect())[0]
    config = json.dumps([inspected["Config"]["Cmd"], inspected["Config"]["Env"], inspected["Args"]])
    assert KEY not in config
    assert KEY not in router.logs()
    top = subprocess.run(
        ["docker", "top", router.container, "-eo", "pid,args"], capture_output=True, text=True
    )
    assert "kthybrid_router" in top.stdout and KEY not in top.stdout


@pytest.mark.parametrize("path", ["/v1/models", "/liveness", "/readiness", "/health"])
def test_sglang_router_answers_these_routes_without_the_key(router: Router, path: str) -> None:
    """Seen with 0.3.2: the router itself answers these without a key (its health, and the
    model list from its worker registry; no request reaches a server). The servers guard
    /v1/models with the key; behind the router only the model's name is exposed."""
    before = [b.stats() for b in router.backends]
    with urllib.request.urlopen(f"{router.url}{path}", timeout=10) as response:
        assert response.status == 200
    assert [b.stats()["requests"] for b in router.backends] == [s["requests"] for s in before]
