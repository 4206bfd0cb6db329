"""Start sglang's server with the API key from KTHYBRID_API_KEY_FILE, never from argv.

`kthybrid-serve serve` execs `python -m kthybrid_serve.sglang_entry <sglang flags>` when
a key is set: /proc/<pid>/cmdline and `ps` show the flags but not the key, and the
variable names only the file.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from kthybrid_serve.apikey import read_api_key

    key = read_api_key(os.environ["KTHYBRID_API_KEY_FILE"])
    # Importing launch_server runs its start-up preparations (stale-lock sweep, arch list).
    from sglang.launch_server import run_server
    from sglang.srt.server_args import prepare_server_args
    from sglang.srt.utils import kill_process_tree

    server_args = prepare_server_args(sys.argv[1:])
    server_args.api_key = key
    try:
        run_server(server_args)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)


if __name__ == "__main__":
    main()
