"""Benchmark: image size, compressed size, disk a build needs, and build times, per target.

For the first --arch: with --cold, a build from scratch (the repository's images and stages
removed first; the base image stays) with the lowest free space under Docker's root sampled
while it runs; then a rebuild with nothing changed, and a rebuild after a launcher-only change
(a comment appended to the launcher's __init__.py, restored and rebuilt afterwards). For every
--arch: a build on the cached shared layers, the image's size and layers, the layers it shares
with the first target, its compressed size (every layer gzip -6, as a registry push sends
them) and the free space a build from scratch needs by the engine's own accounting (it holds a
layer twice while committing it: the largest of "all layers so far + the one being committed").
Prints figures and writes bench/results/image-<arch>.json.

Usage: python bench/image.py --arch sm120 --arch sm100 [--repository kthybrid] [--cold]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from imagetools import DiskSampler, elapsed, history, read_layers, remove_repository, write_json

from builder.build import BuildOptions, build_image, image_tags
from builder.cli import default_ca_bundle
from builder.errors import BuilderError
from builder.matrix import REPO_ROOT, load_targets, load_versions

RESULTS = Path(__file__).parent / "results"
LAUNCHER_INIT = REPO_ROOT / "docker" / "launcher" / "kthybrid_serve" / "__init__.py"


def timed_build(arch: str, repository: str) -> float:
    ca = default_ca_bundle()
    options = BuildOptions(repository=repository, ca_bundle=Path(ca) if ca else None)
    started = time.monotonic()
    build_image(load_targets()[arch], load_versions(), options, emit=lambda _line: None)
    return elapsed(started)


def commit_peak(layers: list[dict[str, Any]]) -> int:
    """What the engine holds at its fullest while building these layers in order: every layer
    so far, plus a second copy of the one it is committing."""
    total = peak = 0
    for layer in layers:
        total += layer["size"]
        peak = max(peak, total + layer["size"])
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", help="target (repeat for several)")
    parser.add_argument("--repository", default="kthybrid")
    parser.add_argument("--cold", action="store_true", help="also time a build from scratch")
    parser.add_argument("--no-compressed", action="store_true", help="skip compressed sizes")
    args = parser.parse_args()
    archs = args.arch or ["sm120"]
    targets, versions = load_targets(), load_versions()
    first = archs[0]
    results: dict[str, dict[str, Any]] = {
        arch: {"arch": arch, "machine": "2 cores, no GPU (this project's CI kind)"}
        for arch in archs
    }
    lead = results[first]
    if args.cold:
        lead["removed_before_cold_build"] = remove_repository(args.repository)
        with DiskSampler() as disk:
            lead["cold_build_seconds"] = timed_build(first, args.repository)
        lead["cold_build_peak_disk_used_bytes"] = disk.peak_used
        print(
            f"{first}: cold build {lead['cold_build_seconds']} s, disk used at its peak "
            f"{disk.peak_used / 1e9:.2f} GB"
        )
    lead["warm_rebuild_seconds"] = timed_build(first, args.repository)
    print(f"{first}: rebuild, nothing changed: {lead['warm_rebuild_seconds']} s")
    original = LAUNCHER_INIT.read_text()
    try:
        LAUNCHER_INIT.write_text(original + f"# benchmark edit {time.time()}\n")
        lead["launcher_only_rebuild_seconds"] = timed_build(first, args.repository)
    finally:
        LAUNCHER_INIT.write_text(original)
    print(
        f"{first}: rebuild after a launcher-only change: {lead['launcher_only_rebuild_seconds']} s"
    )
    timed_build(first, args.repository)  # the tagged image matches the tree again

    compressed: dict[str, int] = {}
    first_layers: list[str] = []
    for arch in archs:
        result = results[arch]
        if arch != first:
            seconds = timed_build(arch, args.repository)
            result["build_on_cached_layers_seconds"] = seconds
            print(f"{arch}: built on the cached layers in {seconds} s")
        image = image_tags(targets[arch], versions, args.repository)[-1]
        layers = history(image)
        digests = [layer["diff_id"] for layer in layers]
        if arch == first:
            first_layers = digests
        result["size_bytes"] = sum(layer["size"] for layer in layers)
        result["layers"] = [
            {"bytes": layer["size"], "created_by": layer["created_by"][:160]} for layer in layers
        ]
        result["layers_shared_with_" + first] = sum(
            1 for a, b in zip(digests, first_layers, strict=False) if a == b
        )
        result["free_space_needed_bytes"] = commit_peak(layers)
        print(
            f"{arch}: {result['size_bytes'] / 1e9:.2f} GB in {len(layers)} layers "
            f"({result['layers_shared_with_' + first]} shared with {first}); a build from "
            f"scratch holds up to {result['free_space_needed_bytes'] / 1e9:.2f} GB"
        )
        if not args.no_compressed:
            todo = set(digests) - set(compressed)
            started = time.monotonic()
            for diff_id, info in read_layers(image, compress=todo).items():
                if diff_id in todo:
                    compressed[diff_id] = info.gzip6_size
            result["compressed_bytes_gzip6"] = sum(compressed[d] for d in digests)
            print(
                f"{arch}: compressed (every layer gzip -6): "
                f"{result['compressed_bytes_gzip6'] / 1e9:.2f} GB ({elapsed(started)} s to measure)"
            )
        write_json(RESULTS / f"image-{arch}.json", result)


if __name__ == "__main__":
    try:
        main()
    except BuilderError as error:
        raise SystemExit(f"bench/image.py: error: {error}") from None
