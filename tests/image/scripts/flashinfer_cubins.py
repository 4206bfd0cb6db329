"""What flashinfer finds of its prebuilt kernels in this image, through its own loader.

For every file flashinfer-cubin's checksum lists name, asks flashinfer's own `get_artifact`
with downloads disabled (FLASHINFER_NO_DOWNLOAD=1: only what the image holds counts), and
reads the GPU architecture of every cubin the image still holds from its ELF header. Prints
one JSON object. Usage: python flashinfer_cubins.py
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

os.environ["FLASHINFER_NO_DOWNLOAD"] = "1"


def elf_arch(path: Path) -> int:
    """sm_XY of a cubin: the ELF header's e_flags carry it in bits 8-15 (CUDA 12 layout)."""
    with path.open("rb") as stream:
        header = stream.read(0x34)
    if header[:4] != b"\x7fELF":
        raise SystemExit(f"{path} is not an ELF file")
    flags = struct.unpack_from("<I", header, 0x30)[0]
    return int((flags >> 8) & 0xFF)


def main() -> int:
    import flashinfer_cubin
    from flashinfer.jit.cubin_loader import FLASHINFER_CUBIN_DIR, get_artifact

    root = Path(flashinfer_cubin.get_cubin_dir())
    listed: dict[str, str] = {}
    for checksums in sorted(root.rglob("checksums.txt")):
        folder = checksums.parent.relative_to(root).as_posix()
        for line in checksums.read_text().splitlines():
            if line.strip():
                sha256, name = line.split()
                listed[f"{folder}/{name}"] = sha256
    resolved, absent = [], []
    for name, sha256 in sorted(listed.items()):
        if not (root / name).is_file():
            absent.append(name)
            continue
        if get_artifact(name, sha256):  # raises instead of downloading when it is missing
            resolved.append(name)
    cubins = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.cubin"))
    report = {
        "cubin_dir": str(root),
        "flashinfer_uses_it": Path(FLASHINFER_CUBIN_DIR).resolve() == root.resolve(),
        "listed": len(listed),
        "resolved": resolved,
        "absent": absent,
        "cubin_archs": sorted({elf_arch(root / c) for c in cubins}),
        "cubins": len(cubins),
        "unlisted_cubins": sorted(set(cubins) - set(listed)),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
