"""Benchmark: two builds of one commit from empty caches; which layers come out the same.

Removes every image of the repository (and its stages), builds the target, reads every layer
of the image (`docker save`: each file's type, mode, owner, time, size and SHA-256), removes it
all again and builds once more. Prints and writes bench/results/reproducible-<arch>.json: per
layer, the step that made it, its size, and whether its digest matched; for a layer that did
not, what differs (files only in one build, and per field: mtime, content, mode, ...).

Both builds fetch packages through an index on the loopback that demands a user and password
(tests/builder/index_proxy.py), and trust a CA bundle with one made-up site certificate in it:
the password and that certificate are then looked for in the whole `docker save` stream and in
`docker history` of the image and of every stage the build left. Each build also records the
lowest free space under Docker's root while it ran (other builds on this machine count too).

Usage: python bench/reproducible.py --arch sm120 --repository kthybrid-h2
"""

from __future__ import annotations

import argparse
import base64
import secrets
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from imagetools import (
    DiskSampler,
    LayerInfo,
    NeedleScanner,
    elapsed,
    history,
    makes_no_layer,
    read_layers,
    remaining,
    remove_repository,
    write_json,
)

from builder.build import BuildOptions, BuildResult, build_image, connect, image_tags
from builder.cli import default_ca_bundle
from builder.errors import BuilderError
from builder.matrix import load_targets, load_versions
from tests.support.index_proxy import AuthenticatingIndex

RESULTS = Path(__file__).parent / "results"
FIELDS = ("type", "mode", "uid", "gid", "mtime", "size", "content", "link")


def site_bundle(directory: Path) -> tuple[Path, bytes]:
    """The host's CA bundle plus a fresh self-signed certificate; returns (bundle, one PEM line)."""
    key, cert = directory / "site.key", directory / "site.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN=kthybrid-bench-{secrets.token_hex(4)}", "-keyout", str(key),
         "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    host = default_ca_bundle()
    if host is None:
        raise SystemExit("no CA bundle on this host to build with")
    bundle = directory / "bundle.pem"
    bundle.write_text(Path(host).read_text() + "\n" + cert.read_text())
    body = "".join(cert.read_text().split("-----")[2].split())
    return bundle, body[64:128].encode()


def one_build(arch: str, repository: str, index_url: str, bundle: Path) -> dict[str, Any]:
    removed = remove_repository(repository)
    left = remaining(repository)
    if left:
        raise SystemExit(f"could not empty the cache: {left} remain")
    targets, versions = load_targets(), load_versions()
    started = time.monotonic()
    options = BuildOptions(repository=repository, index_url=index_url, ca_bundle=bundle)
    with DiskSampler() as disk:
        result: BuildResult = build_image(targets[arch], versions, options, emit=print)
    image = image_tags(targets[arch], versions, repository)[-1]
    # Empty caches: every step above the base that made a layer was run by this build, none
    # served from an image already on the engine. (Steps that make no layer, like the SHELL
    # right after FROM, may match another Dockerfile's on this engine: no content there.)
    client = connect()
    base = client.images.get(result.base_image).id
    entries = client.images.get(image).history()
    ids = [str(h["Id"]) for h in entries]
    entries = entries[: ids.index(base)] if base in ids else entries
    ancestry = [str(h["Id"]) for h in entries if not makes_no_layer(h)]
    made = {i.removeprefix("sha256:")[:12] for i in result.created}
    from_cache = [i for i in ancestry if i.removeprefix("sha256:")[:12] not in made]
    if from_cache:
        raise SystemExit(
            f"{len(from_cache)} steps of {image} came from images already on the engine: "
            f"another repository holds builds of this Dockerfile; pass it as --repository"
        )
    return {
        "removed_before": removed,
        "seconds": elapsed(started),
        "steps": result.steps,
        "steps_from_cache": result.cache_hits,
        "peak_disk_used_bytes": disk.peak_used,
        "free_before_bytes": disk.before,
        "source_date_epoch": result.source_date_epoch,
        "image": image,
        "steps_made_by_this_build": len(ancestry),
    }


def scan_images(repository: str, needles: list[bytes], image: str) -> dict[str, list[str]]:
    """Needles found per image the build left: the image (saved while its layers are read)
    and every stage, in `docker save` and `docker history`."""
    client = connect()
    found: dict[str, list[str]] = {}
    stages = [t for i in client.images.list(name=f"{repository}-stage") for t in i.tags]
    for name in stages:
        scanner = NeedleScanner(needles)
        for chunk in client.images.get(name).save(chunk_size=8 << 20):
            scanner(chunk)
        found[name] = sorted(n.decode() for n in scanner.found)
    for name in [image, *stages]:
        text = subprocess.run(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", name],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        scanner = NeedleScanner(needles)
        scanner(text)
        found[f"{name} (history)"] = sorted(n.decode() for n in scanner.found)
    return found


def compare(a: LayerInfo, b: LayerInfo) -> dict[str, Any]:
    only_a = sorted(set(a.entries) - set(b.entries))
    only_b = sorted(set(b.entries) - set(a.entries))
    fields: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    for name in sorted(set(a.entries) & set(b.entries)):
        left, right = a.entries[name], b.entries[name]
        differing = [f for f, x, y in zip(FIELDS, left, right, strict=True) if x != y]
        fields.update(differing)
        if differing and len(examples) < 12:
            examples.append(
                {
                    "path": name,
                    **{f: [left[FIELDS.index(f)], right[FIELDS.index(f)]] for f in differing},
                }
            )
    return {
        "entries": [len(a.entries), len(b.entries)],
        "only_in_first": only_a[:12],
        "only_in_second": only_b[:12],
        "differing_entries_by_field": dict(fields),
        "examples": examples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm120")
    parser.add_argument(
        "--repository",
        required=True,
        help="the repository this engine's builds of this Dockerfile used: all its images go",
    )
    args = parser.parse_args()
    if args.repository == "kthybrid":
        raise SystemExit("use a repository of the benchmark's own: it removes all of its images")
    password = secrets.token_hex(16)
    user = "kthybrid-bench"
    with tempfile.TemporaryDirectory(prefix="kthybrid-repro-") as tmp:
        bundle, certificate_line = site_bundle(Path(tmp))
        needles = [
            password.encode(),
            base64.b64encode(f"{user}:{password}".encode()),
            certificate_line,
        ]
        runs: list[dict[str, Any]] = []
        layers: list[dict[str, LayerInfo]] = []
        steps: list[list[dict[str, Any]]] = []
        with AuthenticatingIndex(user, password) as index:
            for attempt in (1, 2):
                print(f"== build {attempt} of 2, from empty caches", flush=True)
                run = one_build(args.arch, args.repository, index.url, bundle)
                steps.append(history(run["image"]))
                scanner = NeedleScanner(needles)
                started = time.monotonic()
                layers.append(read_layers(run["image"], listing=True, watch=scanner))
                run["read_layers_seconds"] = elapsed(started)
                found = scan_images(args.repository, needles, run["image"])
                found[f"{run['image']} (save)"] = sorted(n.decode() for n in scanner.found)
                run["secrets_found"] = {k: v for k, v in found.items() if v}
                run["images_scanned"] = sorted(found)
                run["index_requests_with_credentials"] = index.authorized
                runs.append(run)
                print(f"build {attempt}: {run['seconds']} s; secrets found: {run['secrets_found']}")
    report_layers = []
    for index_, (first, second) in enumerate(zip(steps[0], steps[1], strict=True)):
        same = first["diff_id"] == second["diff_id"]
        entry: dict[str, Any] = {
            "layer": index_,
            "created_by": first["created_by"][:200],
            "size_bytes": first["size"],
            "same": same,
            "digests": [first["diff_id"], second["diff_id"]],
        }
        if not same:
            entry["difference"] = compare(layers[0][first["diff_id"]], layers[1][second["diff_id"]])
        report_layers.append(entry)
        mark = "same " if same else "DIFF "
        print(f"{mark} {first['size'] / 1e9:7.3f} GB  {first['created_by'][:110]}")
    matching = sum(1 for layer in report_layers if layer["same"])
    matching_bytes = sum(layer["size_bytes"] for layer in report_layers if layer["same"])
    total_bytes = sum(layer["size_bytes"] for layer in report_layers)
    result = {
        "arch": args.arch,
        "machine": "2 cores, no GPU, shared with other builds (this project's CI kind)",
        "builds": runs,
        "layers": report_layers,
        "layers_matching": [matching, len(report_layers)],
        "bytes_in_matching_layers": [matching_bytes, total_bytes],
    }
    print(
        f"{matching} of {len(report_layers)} layers match "
        f"({matching_bytes / 1e9:.2f} of {total_bytes / 1e9:.2f} GB)"
    )
    write_json(RESULTS / f"reproducible-{args.arch}.json", result)


if __name__ == "__main__":
    try:
        main()
    except BuilderError as error:
        raise SystemExit(f"bench/reproducible.py: error: {error}") from None
