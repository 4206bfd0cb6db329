"""bench-serve against a stand-in server whose TTFT, inter-token latency and length are known.

The stand-in sends each request's first token `TTFT` seconds after it arrived and the rest
`ITL` apart, so at concurrency c a closed loop yields c * TOKENS / (TTFT + (TOKENS-1) * ITL)
output tokens/s. Measured figures must be within 10% of those at every concurrency.
"""

from __future__ import annotations

import io
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kthybrid_serve.client.benchserve import SweepRequest, run_sweep, served_model
from kthybrid_serve.client.benchserve_progress import SweepProgress
from kthybrid_serve.client.benchserve_run import bench_serve
from kthybrid_serve.client.benchserve_stats import LevelResult, render_table
from kthybrid_serve.errors import ServerAnswerError

from tests.support.openai_standin import TEST_KEY as API_KEY

TTFT, ITL, TOKENS, DURATION = 0.5, 0.04, 16, 8.0
LEVELS = (1, 2, 4, 8)
CYCLE = TTFT + (TOKENS - 1) * ITL


def _request(url: str, key: str | None = None, **changes: Any) -> SweepRequest:
    fields: dict[str, Any] = {
        "base_url": f"{url}/v1", "api_key": key, "concurrency": LEVELS, "prompt_tokens": 32,
        "output_tokens": TOKENS, "duration_s": DURATION, "warmup": 1, "request_timeout_s": 30.0,
    }  # fmt: skip
    return SweepRequest(**{**fields, **changes})


def _quiet(event: str, details: dict[str, Any]) -> None:
    pass


@pytest.fixture(scope="module")
def sweep(standin: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    url = standin(ttft=TTFT, itl=ITL, api_key=API_KEY)
    cache = tmp_path_factory.mktemp("cache")
    progress = SweepProgress(len(LEVELS), DURATION, io.StringIO())
    result = bench_serve(_request(url, API_KEY), 9.5, None, {"XDG_CACHE_HOME": str(cache)},
                         progress)  # fmt: skip
    print("\n" + render_table(result))
    return result


def _close(measured: float | None, known: float) -> bool:
    return measured is not None and abs(measured - known) <= 0.10 * known


@pytest.mark.parametrize("index", range(len(LEVELS)))
def test_output_tokens_per_second_is_within_10_percent_of_the_known_rate(
    sweep: dict[str, Any], index: int
) -> None:
    level = sweep["levels"][index]
    known = level["concurrency"] * TOKENS / CYCLE
    assert _close(level["output_tokens_per_s"], known), (level, known)


@pytest.mark.parametrize("index", range(len(LEVELS)))
def test_ttft_and_itl_medians_are_within_10_percent_of_the_known_delays(
    sweep: dict[str, Any], index: int
) -> None:
    level = sweep["levels"][index]
    assert _close(level["ttft_ms_p50"], TTFT * 1000), level
    assert _close(level["itl_ms_p50"], ITL * 1000), level
    assert level["errors"] == 0 and level["requests"] >= level["concurrency"], level


def test_every_level_has_p50_p95_p99_and_the_ceiling(sweep: dict[str, Any]) -> None:
    assert [level["concurrency"] for level in sweep["levels"]] == list(LEVELS)
    for level in sweep["levels"]:
        for name in ("ttft_ms", "itl_ms"):
            p50, p95, p99 = (level[f"{name}_p{p}"] for p in (50, 95, 99))
            assert p50 <= p95 <= p99, level
    assert sweep["cpu_decode_ceiling_tokens_per_s"] == 9.5


def test_json_and_png_are_written_under_the_cache_bench_dir(sweep: dict[str, Any]) -> None:
    from PIL import Image

    json_path, png_path = Path(sweep["json_path"]), Path(sweep["png_path"])
    assert json_path.parent.name == "bench" and png_path.parent == json_path.parent
    assert json.loads(json_path.read_text())["levels"] == sweep["levels"]
    with Image.open(png_path) as image:
        assert image.format == "PNG" and image.size == (960, 760)
    assert not [p for p in json_path.parent.iterdir() if p.name.startswith(".")]


def _stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/standin/stats", timeout=5) as answer:
        stats: dict[str, int] = json.loads(answer.read())
    return stats


def test_errors_and_dropped_streams_are_counted_not_raised(standin: Callable[..., str]) -> None:
    url = standin(ttft=0.05, itl=0.01, error_every=4, drop_every=5)
    sweep = run_sweep(_request(url, concurrency=(2,), duration_s=2.0, warmup=0), _quiet)
    level: LevelResult = sweep.levels[0]
    stats = _stats(url)
    assert stats["failed"] > 0 and stats["dropped"] > 0
    assert level.errors == stats["failed"] + stats["dropped"]
    assert level.requests == stats["served"]
    kinds = " | ".join(level.error_kinds)
    assert "HTTP 500" in kinds and "dropped" in kinds, kinds


def test_a_wrong_key_is_one_refusal_with_exit_code_30(standin: Callable[..., str]) -> None:
    url = standin(api_key=API_KEY)
    with pytest.raises(ServerAnswerError) as caught:
        import asyncio

        asyncio.run(served_model(_request(url, "wrong-key-0123456789")))
    assert caught.value.exit_code == 30
    assert "refused the API key (HTTP 401)" in caught.value.message


def test_no_server_is_one_refusal_with_exit_code_30() -> None:
    from tests.support.openai_standin import free_port

    with pytest.raises(ServerAnswerError) as caught:
        run_sweep(_request(f"http://127.0.0.1:{free_port()}"), _quiet)
    assert caught.value.exit_code == 30 and "did not answer" in caught.value.message
