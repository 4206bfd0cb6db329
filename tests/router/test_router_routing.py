"""Routing by the real sglang-router binary over stand-in servers: spread, prefix, failover."""

from __future__ import annotations

from collections import Counter

from conftest import Router, chat, served_by


def test_distinct_prompts_spread_over_every_backend(router: Router) -> None:
    served = Counter()
    for i in range(30):
        status, body = chat(router, f"conversation {i}: " + f"{i:04d} " * 40)
        assert status == 200, body
        served[served_by(body)] += 1
    assert set(served) == {b.name for b in router.backends}, served


def test_same_prefix_goes_to_the_backend_that_served_it_under_cache_aware(router: Router) -> None:
    prefix = "You are a careful assistant. Shared system prompt for one conversation. " * 8
    status, body = chat(router, prefix + "first turn")
    assert status == 200, body
    first = served_by(body)
    followers = {served_by(chat(router, prefix + f"turn {i}")[1]) for i in range(12)}
    assert followers == {first}


def test_a_killed_backend_is_routed_around_without_a_lost_request(
    failover_router: Router,
) -> None:
    victim, survivor = failover_router.backends
    for i in range(4):
        assert chat(failover_router, f"warm {i}")[0] == 200
    assert victim.requests("/v1/chat/completions"), "round robin never used the victim"
    victim.stop()
    results = [chat(failover_router, f"after the crash {i}") for i in range(20)]
    assert [status for status, _ in results] == [200] * 20, results
    assert {served_by(body) for _, body in results} == {survivor.name}
