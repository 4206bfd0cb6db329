"""Benchmark: pushing a target's full image to a registry on the loopback, cold and again.

A fresh Debian docker-registry (distribution 2.8) on a free loopback port with empty storage;
the image pushed through builder.push (the Docker SDK, as `make push` does), then pushed again
(every layer already there: the digest must not change), pulled back by digest, and its SBOM
attached and fetched back by the image digest. Prints figures and writes
bench/results/push-<arch>.json. The machine's load average is recorded with the times: on a
shared 2-core host the engine's gzip of the layers competes with everything else.

Usage: python bench/push.py --arch sm120 [--image kthybrid:sm120]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from imagetools import elapsed, write_json

from builder.build import connect, image_tags
from builder.matrix import load_targets, load_versions
from builder.oci import OciRegistry, attach_sbom, fetch_sbom, split_repository
from builder.push import push_image
from builder.sbom import SBOM_PATH, read_sbom
from tests.support.local_registry import local_registry

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm120")
    parser.add_argument("--image", help="local image (default kthybrid:<version tag>)")
    args = parser.parse_args()
    target = load_targets()[args.arch]
    image = args.image or image_tags(target, load_versions())[0]
    client = connect()
    local = client.images.get(image)
    say = print
    with (
        tempfile.TemporaryDirectory(prefix="kthybrid-bench-push-") as tmp,
        local_registry(Path(tmp) / "registry") as registry,
    ):
        load_before = os.getloadavg()
        first = push_image(client, image, registry.host, emit=say)
        load_after = os.getloadavg()
        second = push_image(client, image, registry.host, emit=say)
        started = time.monotonic()
        pulled = client.images.pull(f"{first.repository}@{first.digest}")
        pull_seconds = elapsed(started)
        client.images.remove(f"{first.repository}@{first.digest}", noprune=True)
        stored = sum(f.stat().st_size for f in (Path(tmp) / "registry").rglob("*") if f.is_file())
        host, name = split_repository(first.repository)
        oci = OciRegistry(host)
        sbom = (json.dumps(read_sbom(client, image), indent=2) + "\n").encode()
        started = time.monotonic()
        artifact, fallback = attach_sbom(oci, name, first.digest, sbom)
        fetched, _ = fetch_sbom(oci, name, first.digest)
        sbom_seconds = elapsed(started)
    result = {
        "image": image,
        "image_id": local.id,
        "image_bytes": local.attrs["Size"],
        "layers": len(local.attrs["RootFS"]["Layers"]),
        "registry": "Debian docker-registry 2.8.2 on 127.0.0.1, filesystem storage",
        "cpus": os.cpu_count(),
        "cold_push_seconds": first.seconds,
        "load_average_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "registry_bytes_stored": stored,
        "digest": first.digest,
        "second_push_seconds": second.seconds,
        "second_push_digest_same": second.digest == first.digest,
        "pull_by_digest_seconds_layers_local": pull_seconds,
        "pulled_image_id_same": pulled.id == local.id,
        "sbom": {
            "path": SBOM_PATH,
            "bytes": len(sbom),
            "artifact": artifact,
            "referrers_tag_fallback": fallback,
            "attach_and_fetch_seconds": sbom_seconds,
            "fetched_equal": fetched == sbom,
        },
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    write_json(RESULTS / f"push-{args.arch}.json", result)


if __name__ == "__main__":
    main()
