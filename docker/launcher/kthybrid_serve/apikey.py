"""The API key, read from a file so that it is in no command line and no environment."""

from __future__ import annotations

import re
from pathlib import Path

from kthybrid_serve.errors import UsageError
from kthybrid_serve.host.hostfs import read_regular

MAX_KEY_BYTES = 4096


class RedactedKey(str):
    """The key as sglang keeps it: equal to the key, but its repr never shows it.

    sglang logs `server_args=ServerArgs(...)` at start; with this type the log says
    api_key=<redacted>.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<redacted>'"


def read_api_key(path: str) -> RedactedKey:
    """One line of printable ASCII (16 to 4096 characters); a clear refusal otherwise."""
    where = Path(path)
    try:
        raw = read_regular(where, MAX_KEY_BYTES)
    except ValueError as error:
        raise UsageError(f"KTHYBRID_API_KEY_FILE {path}: {error}") from None
    if raw is None:
        raise UsageError(
            f"KTHYBRID_API_KEY_FILE {path} does not exist; mount the key file there or unset it"
        )
    try:
        key = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise UsageError(f"KTHYBRID_API_KEY_FILE {path} is not ASCII text") from None
    if not re.fullmatch(r"[\x21-\x7e]{16,4096}", key):
        raise UsageError(
            f"KTHYBRID_API_KEY_FILE {path} must hold one key of 16 or more printable "
            "characters without spaces (e.g. `openssl rand -hex 32`)"
        )
    return RedactedKey(key)
