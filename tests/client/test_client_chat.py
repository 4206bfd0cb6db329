"""`chat` against the stand-in: streamed answers with and without a key, and each bad ending."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable

import pytest
from kthybrid_serve.client.chat import chat_loop
from kthybrid_serve.errors import ServerAnswerError

from tests.support.openai_standin import TEST_KEY as API_KEY
from tests.support.openai_standin import free_port


class TimedOut(io.StringIO):
    """stdout that records when each write came, to show the answer streams."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.times.append((time.monotonic(), text))
        return super().write(text)


@pytest.mark.parametrize("key", [API_KEY, None], ids=["with-key", "without-key"])
def test_chat_streams_the_answer_token_by_token(standin: Callable[..., str],
                                                key: str | None) -> None:  # fmt: skip
    url = standin(ttft=0.1, itl=0.1, tokens=5, **({"api_key": key} if key else {}))
    out = TimedOut()
    code = chat_loop(f"{url}/v1", key, io.StringIO("hello\nand again\n\n"), out, io.StringIO())
    assert code == 0
    lines = out.getvalue().splitlines()
    assert lines[1:] == ["t0 t1 t2 t3 t4 ", "t0 t1 t2 t3 t4 "], lines
    tokens = [t for t, text in out.times if text.startswith("t")]
    assert len(tokens) == 10
    # Token by token: the five pieces of one answer arrive about 0.1 s apart, not at once.
    assert tokens[4] - tokens[0] >= 0.3


def test_a_wrong_key_is_one_refusal_with_exit_code_30(standin: Callable[..., str]) -> None:
    url = standin(api_key=API_KEY)
    with pytest.raises(ServerAnswerError) as caught:
        chat_loop(f"{url}/v1", "wrong-key-0123456789", io.StringIO("hi\n"), io.StringIO(),
                  io.StringIO())  # fmt: skip
    assert caught.value.exit_code == 30
    assert "refused the API key (HTTP 401)" in caught.value.message


def test_a_dropped_connection_is_one_refusal(standin: Callable[..., str]) -> None:
    url = standin(drop_every=1, tokens=6, itl=0.01)
    with pytest.raises(ServerAnswerError) as caught:
        chat_loop(f"{url}/v1", None, io.StringIO("hi\n"), io.StringIO(), io.StringIO())
    assert "dropped in the middle of an answer" in caught.value.message


def test_no_server_is_one_refusal() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ServerAnswerError) as caught:
        chat_loop(url, None, io.StringIO("hi\n"), io.StringIO(), io.StringIO())
    assert "did not answer" in caught.value.message


def test_ctrl_c_mid_answer_ends_with_one_line_and_code_130(standin: Callable[..., str]) -> None:
    import _thread

    url = standin(ttft=0.05, itl=0.2, tokens=50)
    err = io.StringIO()
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    try:
        code = chat_loop(f"{url}/v1", None, io.StringIO("hi\n"), io.StringIO(), err)
    finally:
        timer.cancel()
    assert code == 130
    assert err.getvalue() == "kthybrid-serve: chat stopped (Ctrl-C)\n"
