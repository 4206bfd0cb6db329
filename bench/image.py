"""Benchmark: image size (total, largest layers, compressed) and build times; writes bench/results.

Measures, for one target: a cold build (--cold: kthybrid's images and cached stages removed
first, so every layer is rebuilt and every package downloaded; the base image stays), a
rebuild with nothing changed, a rebuild after a launcher-only change (a comment appended to the
launcher's __init__.py, restored afterwards), and a second target built on the first one's
cached layers. Prints figures and writes bench/results/image-<arch>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path
from typing import Any

from builder.build import BuildOptions, build_image, connect
from builder.cli import default_ca_bundle
from builder.errors import BuilderError
from builder.matrix import REPO_ROOT, load_targets, load_versions

RESULTS = Path(__file__).parent / "results"
LAUNCHER_INIT = REPO_ROOT / "docker" / "launcher" / "kthybrid_serve" / "__init__.py"


def timed_build(arch: str, **options: Any) -> float:
    targets, versions = load_targets(), load_versions()
    started = time.monotonic()
    build_image(targets[arch], versions, BuildOptions(**options), emit=lambda _line: None)
    return round(time.monotonic() - started, 1)


def remove_cached_images() -> None:
    """Remove kthybrid's images and stages, as on a machine that never built them.

    (A --no-cache build is not the same: the classic builder does not offer the layers of a
    --no-cache build as cache to the next build, so that build would be cold too.)
    """
    client = connect()
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(("kthybrid:", "kthybrid-stage:")):
                client.images.remove(tag, force=True)
    client.images.prune(filters={"dangling": True})


def compressed_size(image: str) -> int:
    """Bytes of `docker save` gzip-compressed (level 6), as a registry push would roughly send."""

    class Counter:
        total = 0

        def write(self, data: bytes) -> int:
            self.total += len(data)
            return len(data)

        def flush(self) -> None:
            pass

    counter = Counter()
    client = connect()
    with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6) as compressed:  # type: ignore[arg-type]
        for chunk in client.images.get(image).save(chunk_size=8 << 20):
            compressed.write(chunk)
    return counter.total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="sm120")
    parser.add_argument("--second-arch", default="sm90")
    parser.add_argument("--cold", action="store_true", help="also time a build with no cache")
    parser.add_argument("--no-compressed", action="store_true", help="skip the compressed size")
    args = parser.parse_args()
    # The same CA bundle as `make image` (the CLI's default), so the cached layers match.
    ca = default_ca_bundle()
    common: dict[str, Any] = {"ca_bundle": Path(ca) if ca else None}
    result: dict[str, Any] = {
        "arch": args.arch,
        "machine": "2 cores, no GPU (this project's CI kind)",
    }

    if args.cold:
        remove_cached_images()
        result["cold_build_seconds"] = timed_build(args.arch, **common)
        print(f"cold build: {result['cold_build_seconds']} s")
    result["warm_rebuild_seconds"] = timed_build(args.arch, **common)
    print(f"rebuild, nothing changed: {result['warm_rebuild_seconds']} s")

    original = LAUNCHER_INIT.read_text()
    try:
        LAUNCHER_INIT.write_text(original + f"# benchmark edit {time.time()}\n")
        result["launcher_only_rebuild_seconds"] = timed_build(args.arch, **common)
    finally:
        LAUNCHER_INIT.write_text(original)
    print(f"rebuild after a launcher-only change: {result['launcher_only_rebuild_seconds']} s")
    # Build once more with the launcher as committed, so the tagged image matches the tree.
    timed_build(args.arch, **common)

    result["second_target_build_seconds"] = timed_build(args.second_arch, **common)
    print(
        f"second target ({args.second_arch}) on cached layers: "
        f"{result['second_target_build_seconds']} s"
    )

    client = connect()
    first = client.images.get(f"kthybrid:{args.arch}")
    second = client.images.get(f"kthybrid:{args.second_arch}")
    first_layers = first.attrs["RootFS"]["Layers"]
    second_layers = second.attrs["RootFS"]["Layers"]
    shared = sum(1 for a, b in zip(first_layers, second_layers, strict=False) if a == b)
    result["layers"] = len(first_layers)
    result["layers_shared_with_second_target"] = shared
    result["size_bytes"] = first.attrs["Size"]
    history = sorted(first.history(), key=lambda layer: -int(layer["Size"]))
    result["largest_layers"] = [
        {"bytes": int(layer["Size"]), "created_by": layer["CreatedBy"][:160]}
        for layer in history[:6]
    ]
    print(
        f"image size: {first.attrs['Size'] / 1e9:.2f} GB in {len(first_layers)} layers "
        f"({shared} shared with {args.second_arch})"
    )
    for layer in result["largest_layers"]:
        print(f"  {layer['bytes'] / 1e9:6.2f} GB  {layer['created_by'][:100]}")
    if not args.no_compressed:
        result["compressed_bytes_gzip6"] = compressed_size(f"kthybrid:{args.arch}")
        print(
            f"compressed (docker save | gzip -6): {result['compressed_bytes_gzip6'] / 1e9:.2f} GB"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"image-{args.arch}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except BuilderError as error:
        raise SystemExit(f"bench/image.py: error: {error}") from None
