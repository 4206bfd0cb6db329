"""Shared by the image benchmarks: reading `docker save` streams, disk sampling, cleanup."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from builder.build import connect


class StreamReader(io.RawIOBase):
    """A file object over `docker save`'s chunks; every byte also goes to `watch`."""

    def __init__(self, chunks: Iterator[bytes], watch: Any = None) -> None:
        self.chunks = chunks
        self.buffer = b""
        self.watch = watch

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self.buffer:
            try:
                self.buffer = next(self.chunks)
            except StopIteration:
                return 0
            if self.watch is not None:
                self.watch(self.buffer)
        size = min(len(target), len(self.buffer))
        target[:size] = self.buffer[:size]
        self.buffer = self.buffer[size:]
        return size


class NeedleScanner:
    """Finds byte strings in a stream, across chunk boundaries."""

    def __init__(self, needles: list[bytes]) -> None:
        self.needles = needles
        self.keep = max((len(n) for n in needles), default=1)
        self.tail = b""
        self.found: set[bytes] = set()

    def __call__(self, chunk: bytes) -> None:
        window = self.tail + chunk
        self.found.update(n for n in self.needles if n in window)
        self.tail = window[-self.keep :]


@dataclass
class LayerInfo:
    diff_id: str
    size: int
    gzip6_size: int = 0
    # name -> (type, mode, uid, gid, mtime, size, sha256 of content)
    entries: dict[str, tuple[Any, ...]] = field(default_factory=dict)


def read_layers(
    image: str,
    *,
    listing: bool = False,
    compress: set[str] | None = None,
    watch: Any = None,
) -> dict[str, LayerInfo]:
    """Every layer of `image`, by DiffID, from one pass over `docker save`: its size, and when
    asked its entries (listing) or its gzip -6 size (for the DiffIDs in `compress`)."""
    client = connect()
    stream = StreamReader(iter(client.images.get(image).save(chunk_size=8 << 20)), watch)
    layers: dict[str, LayerInfo] = {}
    with tarfile.open(fileobj=io.BufferedReader(stream, 8 << 20), mode="r|") as outer:
        for member in outer:
            if not member.name.endswith("layer.tar") or not member.isfile():
                continue
            source = outer.extractfile(member)
            assert source is not None
            digest = hashlib.sha256()
            compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
            entries: dict[str, tuple[Any, ...]] = {}

            tee = _Tee(source, digest, compressor if compress is not None else None)
            with tarfile.open(fileobj=io.BufferedReader(tee, 8 << 20), mode="r|") as inner:
                for entry in inner:
                    content = ""
                    if listing and entry.isfile():
                        data = inner.extractfile(entry)
                        assert data is not None
                        content = hashlib.file_digest(
                            cast(io.BufferedReader, data), "sha256"
                        ).hexdigest()
                    if listing:
                        entries[entry.name] = (
                            entry.type.decode(),
                            oct(entry.mode),
                            entry.uid,
                            entry.gid,
                            int(entry.mtime),
                            entry.size,
                            content,
                            entry.linkname,
                        )
            # The rest of the layer tar (end-of-archive padding) still counts for the digest.
            while tee.read(1 << 20):
                pass
            packed = tee.packed + (len(compressor.flush()) if compress is not None else 0)
            diff_id = "sha256:" + digest.hexdigest()
            layers[diff_id] = LayerInfo(diff_id, member.size, packed, entries)
    return layers


class _Tee(io.RawIOBase):
    """Reads a layer tar, hashing it (its DiffID) and gzip-compressing it on the way."""

    def __init__(self, source: Any, digest: Any, compressor: Any) -> None:
        self.source = source
        self.digest = digest
        self.compressor = compressor
        self.packed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        data = self.source.read(len(target))
        self.digest.update(data)
        if self.compressor is not None:
            self.packed += len(self.compressor.compress(data))
        target[: len(data)] = data
        return len(data)


class DiskSampler:
    """The lowest free space under Docker's root while a block runs (sampled twice a second)."""

    def __init__(self) -> None:
        self.root = str(connect().info().get("DockerRootDir") or "/var/lib/docker")
        self.before = shutil.disk_usage(self.root).free
        self.lowest = self.before
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            self.lowest = min(self.lowest, shutil.disk_usage(self.root).free)

    def __enter__(self) -> DiskSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def peak_used(self) -> int:
        return self.before - self.lowest


def remove_repository(repository: str) -> list[str]:
    """Remove every image tagged in `repository` or `<repository>-stage`, and nothing else."""
    client = connect()
    removed = []
    for image in client.images.list():
        for tag in image.tags:
            if tag.split(":", 1)[0] in (repository, f"{repository}-stage"):
                client.images.remove(tag, force=True)
                removed.append(tag)
    return removed


def remaining(repository: str) -> list[str]:
    client = connect()
    return [
        tag
        for image in client.images.list()
        for tag in image.tags
        if tag.split(":", 1)[0] in (repository, f"{repository}-stage")
    ]


def history(image: str) -> list[dict[str, Any]]:
    """The image's layers oldest first: DiffID, size, the step that made it."""
    client = connect()
    attrs = client.images.get(image).attrs
    steps = [h for h in reversed(client.images.get(image).history())]
    diff_ids = list(attrs["RootFS"]["Layers"])
    # History entries with no layer (ENV, LABEL, ...) have size 0 and "#(nop)" without COPY/ADD.
    layered = [h for h in steps if not makes_no_layer(h)]
    if len(layered) != len(diff_ids):
        raise SystemExit(
            f"{image}: {len(layered)} history entries with layers, {len(diff_ids)} layers"
        )
    return [
        {"diff_id": d, "size": int(h["Size"]), "created_by": str(h["CreatedBy"])}
        for d, h in zip(diff_ids, layered, strict=True)
    ]


def makes_no_layer(entry: dict[str, Any]) -> bool:
    """The classic builder's metadata steps (#(nop) ENV, LABEL, ...) make no layer; RUN,
    COPY, ADD and the imported base do."""
    created_by = str(entry.get("CreatedBy", ""))
    return "#(nop)" in created_by and not any(w in created_by for w in (" COPY ", " ADD "))


def write_json(path: Any, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def elapsed(started: float) -> float:
    return round(time.monotonic() - started, 1)
