"""Start sglang's router with the API key from KTHYBRID_API_KEY_FILE, never from argv.

`python -m kthybrid_router [sglang-router options]` takes sglang_router's own command-line
options (worker URLs, policy, Kubernetes service discovery, metrics, retries, ...) except
those that carry a secret, reads the key from the file KTHYBRID_API_KEY_FILE names, and builds
the router through sglang_router's Python API. /proc/<pid>/cmdline, `ps`, the pod spec and the
compose file name only the file. sglang-router 0.3.2 sends this key to every server as
`Authorization: Bearer` and answers 401 to clients without it on the inference and admin
routes (tests/router shows both with the real binary).

Exit codes: 0 the router stopped, 2 a bad option or key file (one line on stderr).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from typing import Any

KEY_FILE_VARIABLE = "KTHYBRID_API_KEY_FILE"
MAX_KEY_BYTES = 4096
# The servers' rule (kthybrid_serve.apikey): one line of 16 to 4096 printable ASCII characters.
KEY_PATTERN = r"[\x21-\x7e]{16,4096}"
# Options of sglang_router whose value is a secret: refused here, because argv is public.
SECRET_OPTIONS = (
    "--api-key",
    "--control-plane-api-keys",
    "--oracle-password",
    "--postgres-db-url",
    "--redis-url",
)
EXIT_USAGE = 2


class RouterEntryError(Exception):
    """Bad input to the router entry; the message says what was wrong and what to do."""


def secret_options_in(argv: list[str]) -> list[str]:
    """The secret-carrying options that argv names (as `--opt value` or `--opt=value`)."""
    found = []
    for argument in argv:
        name = argument.split("=", 1)[0]
        if name in SECRET_OPTIONS or name.replace("--router-", "--", 1) in SECRET_OPTIONS:
            found.append(name)
    return found


def read_key(path: str) -> str:
    """The key in `path`: a regular file of at most 4096 bytes holding one line of 16 or more
    printable ASCII characters (the servers' rule, kthybrid_serve.apikey)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise RouterEntryError(
            f"{KEY_FILE_VARIABLE} {path} does not exist: mount the key file there"
        ) from None
    except OSError as error:
        raise RouterEntryError(f"{KEY_FILE_VARIABLE} {path}: {error.strerror}") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise RouterEntryError(f"{KEY_FILE_VARIABLE} {path} is not a regular file")
        if info.st_size > MAX_KEY_BYTES:
            raise RouterEntryError(
                f"{KEY_FILE_VARIABLE} {path} is larger than {MAX_KEY_BYTES} bytes: it must hold "
                f"one key of 16 to {MAX_KEY_BYTES} printable characters"
            )
        raw = os.read(descriptor, MAX_KEY_BYTES + 1)
    finally:
        os.close(descriptor)
    try:
        key = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise RouterEntryError(f"{KEY_FILE_VARIABLE} {path} is not ASCII text") from None
    if not re.fullmatch(KEY_PATTERN, key):
        raise RouterEntryError(
            f"{KEY_FILE_VARIABLE} {path} must hold one key of 16 to {MAX_KEY_BYTES} printable "
            f"characters without spaces (e.g. `openssl rand -hex 32`)"
        )
    return key


def key_from_environment(environ: dict[str, str]) -> str:
    path = environ.get(KEY_FILE_VARIABLE, "")
    if not path:
        raise RouterEntryError(
            f"{KEY_FILE_VARIABLE} is not set: the router requires the servers' API key from "
            f"clients and sends it to the servers; mount the key file and name it there"
        )
    return read_key(path)


def router_args(argv: list[str], key: str) -> Any:
    """sglang_router's RouterArgs from its own parser, with the key set after parsing."""
    import argparse

    from sglang_router.router_args import RouterArgs

    parser = argparse.ArgumentParser(
        prog="kthybrid_router",
        description="sglang-router with the API key from $" + KEY_FILE_VARIABLE,
    )
    RouterArgs.add_cli_args(parser, use_router_prefix=False)
    args = RouterArgs.from_cli_args(parser.parse_args(argv), use_router_prefix=False)
    args.api_key = key
    return args


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    try:
        refused = secret_options_in(arguments)
        if refused:
            raise RouterEntryError(
                f"{', '.join(refused)} would put a secret on the command line: the key comes "
                f"from the file {KEY_FILE_VARIABLE} names; remove the option"
            )
        key = key_from_environment(dict(os.environ))
        args = router_args(arguments, key)
        from sglang_router.router import Router

        args._validate_router_args()
        router = Router.from_args(args)
    except (RouterEntryError, ValueError) as error:
        print(f"kthybrid_router: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    router.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
