"""`kthybrid-serve chat`: a terminal chat that streams the answer, with the `openai` client.

The API key comes from its file (never a flag or a variable); without one, no key is sent.
The model name is the one the server lists, asked once at the start, which also checks the
URL and the key before the first question. Every way the exchange can end badly is one line
on stderr and an exit code: the server cannot be reached, refuses the key, or drops the
connection (30, ServerAnswerError); Ctrl-C (130, as shells report SIGINT).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from kthybrid_serve.errors import ServerAnswerError

TIMEOUT_S = 600.0  # the longest silence between two chunks of an answer
INTERRUPTED = 130


def _openai() -> Any:
    try:
        import openai
    except ImportError as error:
        raise ServerAnswerError(
            f"the openai package is missing ({error}); run chat from the kthybrid image"
        ) from None
    return openai


def refusal(openai: Any, error: BaseException, url: str) -> ServerAnswerError:
    """The one-line refusal for a failed exchange with the server at `url`."""
    if isinstance(error, openai.AuthenticationError):
        return ServerAnswerError(
            f"the server at {url} refused the API key (HTTP 401); check KTHYBRID_API_KEY_FILE"
        )
    status = getattr(error, "status_code", None)
    if status is not None:
        return ServerAnswerError(f"the server at {url} answered HTTP {status}: {error}")
    if type(error).__name__ == "RemoteProtocolError" or isinstance(error, DroppedError):
        return ServerAnswerError(f"the connection to {url} dropped in the middle of an answer")
    return ServerAnswerError(f"the server at {url} did not answer: {error}")


class DroppedError(Exception):
    """The stream ended without its last event."""


class Chat:
    def __init__(self, base_url: str, key: str | None, out: TextIO) -> None:
        import httpx

        self.openai = _openai()
        self.url = base_url
        self.out = out
        self.client = self.openai.OpenAI(
            base_url=base_url, api_key=key or "none", max_retries=0,
            timeout=httpx.Timeout(TIMEOUT_S, connect=10.0),
        )  # fmt: skip
        self.messages: list[dict[str, str]] = []
        self.model = ""

    def connect(self) -> None:
        models = self.client.models.list()
        names = [m.id for m in models.data]
        if not names:
            raise ServerAnswerError(f"the server at {self.url} lists no model")
        self.model = str(names[0])

    def ask(self, question: str) -> str:
        """Send the question with the history; print the answer as it streams; return it."""
        self.messages.append({"role": "user", "content": question})
        stream = self.client.chat.completions.create(
            model=self.model, messages=self.messages, stream=True
        )
        parts: list[str] = []
        finished = False
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    parts.append(choice.delta.content)
                    self.out.write(choice.delta.content)
                    self.out.flush()
                finished = finished or choice.finish_reason is not None
        self.out.write("\n")
        self.out.flush()
        if not finished:
            raise DroppedError()
        answer = "".join(parts)
        self.messages.append({"role": "assistant", "content": answer})
        return answer


def chat_loop(base_url: str, key: str | None, stdin: TextIO = sys.stdin,
              out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:  # fmt: skip
    """Questions from stdin, one a line, until an empty line or end of input."""
    chat = Chat(base_url, key, out)
    try:
        try:
            chat.connect()
            out.write(f"chatting with {chat.model} at {base_url} "
                      "(empty line or Ctrl-D ends, Ctrl-C stops)\n")  # fmt: skip
            out.flush()
            for line in stdin:
                if not line.strip():
                    break
                chat.ask(line.strip())
        except (chat.openai.APIError, DroppedError) as error:
            raise refusal(chat.openai, error, base_url) from None
        except Exception as error:  # httpx transport errors not wrapped by the client
            if type(error).__module__.split(".")[0] in {"httpx", "httpcore"}:
                raise refusal(chat.openai, error, base_url) from None
            raise
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
        err.write("kthybrid-serve: chat stopped (Ctrl-C)\n")
        return INTERRUPTED
    finally:
        chat.client.close()
    return 0
