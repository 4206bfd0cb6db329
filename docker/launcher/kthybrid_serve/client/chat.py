"""A terminal chat against the server's OpenAI-compatible API, with the API key from its file.

Used when an API key is set: upstream's `kt chat` sends no key.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

from kthybrid_serve.apikey import read_api_key
from kthybrid_serve.external import reachable_host

TIMEOUT_S = 600


def _ask(url: str, key: str, messages: list[dict[str, str]]) -> str:
    body = json.dumps({"model": "default", "messages": messages, "stream": False}).encode()
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        answer = json.loads(response.read())
    return str(answer["choices"][0]["message"]["content"])


def chat_loop(host: str, port: int, key_file: str) -> int:
    key = read_api_key(key_file)
    url = f"http://{reachable_host(host)}:{port}/v1/chat/completions"
    messages: list[dict[str, str]] = []
    print(f"chatting with {url} (empty line or Ctrl-D ends)", flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        messages.append({"role": "user", "content": line.strip()})
        try:
            reply = _ask(url, key, messages)
        except (urllib.error.URLError, OSError, KeyError, ValueError) as error:
            print(f"kthybrid-serve: error: the server at {url} did not answer: {error}",
                  file=sys.stderr)  # fmt: skip
            return 1
        messages.append({"role": "assistant", "content": reply})
        print(reply, flush=True)
    return 0
