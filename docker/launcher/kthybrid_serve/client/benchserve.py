"""`kthybrid-serve bench-serve`: a concurrency sweep against a running server, streamed.

Why not `sglang.bench_serving` (sglang-kt 0.7.2 ships it in the image): it does not import
there (its dataset package imports `datasets` 5.2, which needs a `huggingface_hub` newer than
the 0.36 that transformers pins); its `random` data set downloads ShareGPT from the Hub and
it loads the model's tokenizer, so a client would need the network or the model volume; and
it stops after a number of prompts, with no time bound. This module measures the same way
(streamed requests; TTFT to the first content chunk; inter-token latency between content
chunks; output tokens from the server's `usage`) with the `openai` client of the lock.

Each level of the sweep: `concurrency` workers, each in a closed loop (the next request
when its answer ends). First `warmup` requests per worker, not counted; then requests are
started until `duration` seconds have passed and the ones in flight run to their end, up
to a hard limit of twice the duration plus the request timeout. Prompts are token ids
(`/v1/completions` takes them), so their length is exact without a tokenizer; `ignore_eos`
makes every answer `output_tokens` long.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kthybrid_serve.client.benchserve_stats import LevelResult, RequestResult, summarise
from kthybrid_serve.errors import ServerAnswerError

# Token ids for prompts: below every vocabulary this launcher serves (DeepSeek's is 129280),
# above the special and byte tokens at the start of most vocabularies.
PROMPT_IDS = range(1000, 30000)


@dataclass(frozen=True)
class SweepRequest:
    base_url: str  # e.g. http://127.0.0.1:30000/v1
    api_key: str | None
    concurrency: tuple[int, ...]
    prompt_tokens: int
    output_tokens: int
    duration_s: float
    warmup: int  # requests per worker before measuring
    request_timeout_s: float = 120.0  # the longest silence between two chunks
    seed: int = 1


@dataclass
class Sweep:
    model: str
    levels: list[LevelResult] = field(default_factory=list)


Say = Callable[[str, dict[str, Any]], None]  # (event, details): progress reports


def _openai() -> Any:
    try:
        import openai
    except ImportError as error:  # the image has it; a bare host install may not
        raise ServerAnswerError(
            f"the openai package is missing ({error}); run bench-serve from the kthybrid image"
        ) from None
    return openai


def _client(request: SweepRequest) -> Any:
    openai = _openai()
    import httpx

    timeout = httpx.Timeout(request.request_timeout_s, connect=10.0)
    return openai.AsyncOpenAI(
        base_url=request.base_url,
        api_key=request.api_key or "none",  # the client insists on one; sglang ignores it then
        timeout=timeout,
        max_retries=0,
    )


def _error_text(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    name = type(error).__name__
    message = str(error).splitlines()[0][:200] if str(error) else name
    if status:
        return f"HTTP {status}: {message}"
    if name == "RemoteProtocolError":  # httpx: the body ended before its end
        return f"the connection dropped mid-stream ({message})"
    return f"{name}: {message}"


async def served_model(request: SweepRequest) -> str:
    """The model name the server reports; one clear refusal if it cannot be reached."""
    openai = _openai()
    client = _client(request)
    try:
        models = await client.models.list()
    except openai.AuthenticationError:
        raise ServerAnswerError(
            f"the server at {request.base_url} refused the API key (HTTP 401); "
            "check KTHYBRID_API_KEY_FILE"
        ) from None
    except openai.APIError as error:
        raise ServerAnswerError(
            f"the server at {request.base_url} did not answer: {_error_text(error)}"
        ) from None
    finally:
        await client.close()
    names = [m.id for m in models.data]
    if not names:
        raise ServerAnswerError(f"the server at {request.base_url} lists no model")
    return str(names[0])


async def one_request(
    client: Any, model: str, prompt: list[int], output_tokens: int
) -> RequestResult:
    """One streamed completion, timed; every failure is a result with its error, not a raise."""
    start = time.perf_counter()
    times: list[float] = []
    usage_tokens: int | None = None
    finished = False
    error: str | None = None
    try:
        stream = await client.completions.create(
            model=model, prompt=prompt, max_tokens=output_tokens, stream=True,
            temperature=0.0, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        async for chunk in stream:
            if chunk.usage is not None:
                usage_tokens = int(chunk.usage.completion_tokens)
            for choice in chunk.choices:
                if choice.text:
                    times.append(time.perf_counter())
                if choice.finish_reason is not None:
                    finished = True
        if not finished:
            error = "the stream ended before its last event (connection dropped)"
    except Exception as caught:
        error = _error_text(caught)
    tokens = usage_tokens if usage_tokens is not None else len(times)
    return RequestResult(start=start, end=time.perf_counter(), chunk_times=tuple(times),
                         output_tokens=tokens if error is None else 0, error=error)  # fmt: skip


class _Level:
    """One concurrency level: warm-up, then closed-loop workers until the deadline."""

    def __init__(self, request: SweepRequest, model: str, concurrency: int, say: Say) -> None:
        self.request = request
        self.model = model
        self.concurrency = concurrency
        self.say = say
        self.results: list[RequestResult] = []
        self.random = random.Random(request.seed * 1_000_003 + concurrency)

    def prompt(self) -> list[int]:
        return [self.random.choice(PROMPT_IDS) for _ in range(self.request.prompt_tokens)]

    async def _ask(self, client: Any) -> RequestResult:
        return await one_request(client, self.model, self.prompt(), self.request.output_tokens)

    async def warm(self, client: Any) -> None:
        for _ in range(self.request.warmup):
            result = await self._ask(client)
            self.say("warmup", {"concurrency": self.concurrency, "error": result.error})

    async def work(self, client: Any, deadline: float) -> None:
        while time.perf_counter() < deadline:
            result = await self._ask(client)
            self.results.append(result)
            self.say("request", {"concurrency": self.concurrency, "error": result.error})

    async def run(self) -> LevelResult:
        request = self.request
        client = _client(request)
        try:
            await asyncio.gather(*(self.warm(client) for _ in range(self.concurrency)))
            self.say("measure", {"concurrency": self.concurrency,
                                 "duration_s": request.duration_s})  # fmt: skip
            started = time.perf_counter()
            deadline = started + request.duration_s
            tasks = [asyncio.create_task(self.work(client, deadline))
                     for _ in range(self.concurrency)]  # fmt: skip
            limit = 2 * request.duration_s + request.request_timeout_s
            _, pending = await asyncio.wait(tasks, timeout=limit)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            await client.close()
        return summarise(self.concurrency, self.results, (started, deadline), cut=len(pending))


async def _sweep(request: SweepRequest, say: Say) -> Sweep:
    model = await served_model(request)
    sweep = Sweep(model)
    for index, concurrency in enumerate(request.concurrency):
        say("level", {"index": index, "count": len(request.concurrency),
                      "concurrency": concurrency})  # fmt: skip
        level = await _Level(request, model, concurrency, say).run()
        sweep.levels.append(level)
        say("level_done", {"concurrency": concurrency, "level": level})
    return sweep


def run_sweep(request: SweepRequest, say: Say) -> Sweep:
    """Measure each concurrency in turn; raises ServerAnswerError if the server cannot be used."""
    return asyncio.run(_sweep(request, say))
