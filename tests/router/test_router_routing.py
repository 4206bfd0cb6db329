"""Routing by the real sglang-router binary over stand-in servers: spread, prefix, failover."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from router_fixtures import Router, chat, served_by


def conversation(i: int) -> str:
    return f"Conversation {i}. The system prompt of conversation {i}: " + f"rule {i} " * 60


def served_concurrently(router: Router, prompts: dict[int, str]) -> dict[int, str]:
    """Which backend served each prompt, all sent at once."""
    with ThreadPoolExecutor(len(prompts)) as pool:
        answers = {i: pool.submit(chat, router, text) for i, text in prompts.items()}
    results = {i: future.result() for i, future in answers.items()}
    assert {status for status, _ in results.values()} == {200}, results
    return {i: served_by(body) for i, (_, body) in results.items()}


def test_concurrent_conversations_spread_over_every_backend(router: Router) -> None:
    served = served_concurrently(router, {i: f"spread {i}: " + conversation(i) for i in range(12)})
    assert set(served.values()) == {b.name for b in router.backends}, Counter(served.values())


def test_a_conversation_stays_on_the_backend_that_cached_its_prefix(router: Router) -> None:
    """cache_aware: the follow-ups of each conversation go where its first turn went, whether
    they come one by one or all at once (round_robin, for contrast, rotates them)."""
    turns = range(100, 106)
    first = served_concurrently(router, {i: conversation(i) for i in turns})
    assert len(set(first.values())) > 1, f"the first turns did not spread: {first}"
    one_by_one = {i: served_by(chat(router, conversation(i) + " follow-up")[1]) for i in turns}
    together = served_concurrently(router, {i: conversation(i) + " more" for i in turns})
    assert one_by_one == first
    assert together == first


def test_a_killed_backend_is_routed_around_without_a_lost_request(
    failover_router: Router,
) -> None:
    victim, survivor = failover_router.backends
    for i in range(4):
        assert chat(failover_router, f"warm {i}")[0] == 200
    assert victim.stats()["served"] > 0, "round robin never used the victim"
    victim.kill()
    results = [chat(failover_router, f"after the crash {i}") for i in range(20)]
    assert [status for status, _ in results] == [200] * 20, results
    assert {served_by(body) for _, body in results} == {survivor.name}
