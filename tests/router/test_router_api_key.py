"""The API key: required from clients at the router, sent to the servers, never on argv."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import KEY, Router, chat, post

# Routes that reach a server or change the router (sglang-router 0.3.2 answers 401 without key).
GUARDED = ("/v1/chat/completions", "/v1/completions", "/generate")


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdef"], ids=["none", "wrong"])
@pytest.mark.parametrize("path", GUARDED)
def test_the_router_answers_401_without_the_key(router: Router, path: str, key: str | None) -> None:
    before = sum(len(b.requests(path)) for b in router.backends)
    status, _ = post(
        f"{router.url}{path}",
        {"model": "standin-model", "prompt": "x", "text": "x", "messages": []},
        key,
    )
    assert status == 401
    assert sum(len(b.requests(path)) for b in router.backends) == before


def test_the_router_sends_the_key_to_every_backend_it_calls(router: Router) -> None:
    for i in range(6):
        assert chat(router, f"key check {i} " * 20)[0] == 200
    for backend in router.backends:
        keyed = [s for s in backend.requests() if not s.path.startswith("/health")]
        assert keyed, f"{backend.name} got no request"
        assert {s.authorization for s in keyed} == {f"Bearer {KEY}"}, backend.name


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
