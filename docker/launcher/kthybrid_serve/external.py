"""Commands of upstream tools: kt-kernel's AMXINT4 converter and `kt chat`."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path

from kthybrid_serve.errors import MissingToolError

CONVERT_SCRIPT = "convert_cpu_weights_ds4.py"


def find_convert_script(environ: Mapping[str, str]) -> Path:
    """kt-kernel's DeepSeek-V4 converter; the kt-kernel wheel does not ship its scripts/."""
    candidates: list[Path] = []
    if environ.get("KTHYBRID_CONVERT_SCRIPT"):
        candidates.append(Path(environ["KTHYBRID_CONVERT_SCRIPT"]))
    spec = importlib.util.find_spec("kt_kernel")
    if spec is not None and spec.origin:
        package = Path(spec.origin).parent
        candidates.append(package / "scripts" / CONVERT_SCRIPT)
        candidates.append(package.parent / "scripts" / CONVERT_SCRIPT)
    candidates += [
        Path("/opt/ktransformers/kt-kernel/scripts") / CONVERT_SCRIPT,
        Path("/opt/kt-kernel/scripts") / CONVERT_SCRIPT,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MissingToolError(
        f"kt-kernel's {CONVERT_SCRIPT} was not found (looked in "
        f"{', '.join(str(c.parent) for c in candidates)}); set KTHYBRID_CONVERT_SCRIPT to its path"
    )


def convert_argv(script: Path, model: str, output: str, threads: int, pools: int) -> list[str]:
    """The tutorial's conversion command with threads and pools computed for this host."""
    return [
        sys.executable, str(script),
        "--input-path", model,
        "--input-type", "fp4",
        "--output", output,
        "--quant-method", "int4",
        "--cpuinfer-threads", str(threads),
        "--threadpool-count", str(pools),
        "--no-merge-safetensor",
    ]  # fmt: skip


def chat_argv(host: str, port: int) -> list[str]:
    """`kt chat` against the server; a wildcard listen address is reached via loopback."""
    target = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
    return ["kt", "chat", "--host", target, "--port", str(port)]
