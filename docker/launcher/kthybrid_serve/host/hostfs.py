"""Bounded reads of a host tree (regular files only) and the kernel's small text formats."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from kthybrid_serve.errors import HostReadError
from kthybrid_serve.units import KIB

# /proc/cpuinfo of a 512-CPU host is about 1 MB; nothing this launcher reads is larger.
MAX_FILE_BYTES = 8 * 1024**2
# Linux's NR_CPUS tops out at 8192; a cpulist naming more is not a kernel's.
MAX_CPUS = 8192


def parse_cpulist(text: str, where: str = "cpulist") -> list[int]:
    """The kernel's list format: "0-3,8,10-11" or "0-15:2" (empty means none)."""
    result: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5})(?::([0-9]{1,5}))?)?", part)
        if match is None:
            raise HostReadError(f"{where}: {part[:40]!r} is not a CPU list entry (like 0-3,8)")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        stride = int(match.group(3)) if match.group(3) else 1
        if high < low or stride < 1 or high >= MAX_CPUS:
            raise HostReadError(f"{where}: {part!r} is not a valid range of CPUs 0-{MAX_CPUS - 1}")
        result.update(range(low, high + 1, stride))
    return sorted(result)


def format_cpulist(cpus: Iterable[int]) -> str:
    ordered = sorted(set(cpus))
    ranges: list[str] = []
    start = prev = -2
    for cpu in [*ordered, -10]:
        if cpu == prev + 1:
            prev = cpu
            continue
        if start >= 0:
            ranges.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    return ",".join(ranges)


def read_regular(where: Path, limit: int, offset: int = 0, part: bool = False) -> bytes | None:
    """A regular file's bytes from `offset`; None when it does not exist.

    With `part`, up to `limit` bytes (a header); otherwise the whole file, which must not
    be larger than `limit`.
    Opens without blocking and refuses anything but a regular file, so a FIFO or a
    device where a file should be is an error, never a hang. ValueError says why.
    """
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise ValueError(f"cannot be opened ({error.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("is not a regular file")
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        if part:
            return data[:limit]
        if size > limit:
            raise ValueError(f"is larger than {limit} bytes")
        return data
    except OSError as error:
        raise ValueError(f"cannot be read ({error.strerror})") from None
    finally:
        os.close(fd)


def parse_meminfo(text: str) -> dict[str, int]:
    """`/proc/meminfo` or a node's meminfo ("Node 0 MemTotal: ... kB") in bytes."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"(?:Node [0-9]+ )?([A-Za-z_()0-9]+):\s+([0-9]{1,20})(\s*kB)?\s*$", line)
        if match:
            values[match.group(1)] = int(match.group(2)) * (KIB if match.group(3) else 1)
    return values


class HostTree:
    """Reads files below `root` exactly as the kernel lays them out, never blocking."""

    def __init__(self, root: str = "/") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise HostReadError(f"--host-root {root} is not a directory; give a host tree or /")

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> str | None:
        """The file's text, None when it does not exist; refuses FIFOs, devices, huge files."""
        where = self.path(absolute)
        try:
            raw = read_regular(where, MAX_FILE_BYTES)
        except ValueError as error:
            raise HostReadError(f"{where} {error}; give a real host tree") from None
        return None if raw is None else raw.decode("utf-8", errors="replace")

    def read_int(self, absolute: str, low: int = 0, high: int = 2**63) -> int | None:
        text = self.read(absolute)
        if text is None:
            return None
        stripped = text.strip()
        if not re.fullmatch(r"-?[0-9]{1,20}", stripped) or not low <= int(stripped) <= high:
            raise HostReadError(
                f"{self.path(absolute)} holds {stripped[:40]!r}, not a number {low}-{high}"
            )
        return int(stripped)

    def read_cpulist(self, absolute: str) -> list[int] | None:
        text = self.read(absolute)
        return None if text is None else parse_cpulist(text, str(self.path(absolute)))

    def is_dir(self, absolute: str) -> bool:
        return self.path(absolute).is_dir()

    def entries(self, absolute: str, pattern: str) -> list[tuple[str, int]]:
        """(name, number) of directory entries matching `pattern` with one numeric group."""
        directory = self.path(absolute)
        if not directory.is_dir():
            return []
        found = []
        for entry in directory.iterdir():
            match = re.fullmatch(pattern, entry.name)
            if match is not None and len(match.group(1)) <= 9:
                found.append((entry.name, int(match.group(1))))
        return sorted(found, key=lambda item: item[1])
