"""Assembles sgl_kernel's CUDA binaries for one ops variant from the installed payload wheels.

sgl-kernel-kt splits its large CUDA objects into payload parts carried by five wheels of one
release; at run time they are concatenated, checked against a SHA-256, and extracted. This runs
that real assembly without importing sgl_kernel/__init__ (which needs the driver's libcuda) and
prints one JSON object. Usage: python sgl_kernel_assemble.py sm100|sm90
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import sys
import types
from importlib import metadata
from pathlib import Path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> int:
    ops = sys.argv[1]
    spec = importlib.util.find_spec("sgl_kernel")
    if spec is None or spec.submodule_search_locations is None:
        raise SystemExit("sgl_kernel is not installed")
    # A bare package object lets us import its submodules without running its __init__.
    package = types.ModuleType("sgl_kernel")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["sgl_kernel"] = package
    from sgl_kernel import _payload_manifest, payload_runtime

    parts = {}
    for module in _payload_manifest.PAYLOAD_MODULES:
        part_spec = importlib.util.find_spec(module)
        parts[module] = part_spec is not None
    result: dict[str, object] = {"ops": ops, "payload_parts": parts, "binaries": {}}
    wanted = ["flash_ops.abi3.so"]
    if ops == "sm100":
        wanted.append("sm100/common_ops.abi3.so")
    binaries: dict[str, dict[str, object]] = {}
    for name in wanted:
        path = payload_runtime.materialize_binary(name)
        relative = _payload_manifest.BINARIES[name]
        expected = _payload_manifest.FILES[relative]
        actual = sha256(path)
        binaries[name] = {"bytes": path.stat().st_size, "sha256_ok": actual == expected}
    if ops == "sm90":
        # SM90's ops ship inside a wheel (ktransformers); check them against that wheel's RECORD.
        root = Path(package.__path__[0])
        path = root / "sm90" / "common_ops.abi3.so"
        record = {str(f): f.hash.value for f in metadata.files("ktransformers") or [] if f.hash}
        expected_b64 = record.get("sgl_kernel/sm90/common_ops.abi3.so")
        actual_b64 = (
            base64.urlsafe_b64encode(bytes.fromhex(sha256(path))).rstrip(b"=").decode()
            if path.exists()
            else None
        )
        binaries["sm90/common_ops.abi3.so"] = {
            "bytes": path.stat().st_size if path.exists() else 0,
            "sha256_ok": actual_b64 is not None and actual_b64 == expected_b64,
        }
    result["binaries"] = binaries
    result["ok"] = all(parts.values()) and all(b["sha256_ok"] for b in binaries.values())
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
