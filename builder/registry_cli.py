"""The registry commands of `python -m builder`: push, push-chart and fetch-sbom.

Credentials come from KTHYBRID_REGISTRY_USER and KTHYBRID_REGISTRY_PASSWORD only: a command
line is visible to every user of the host (ps) and lands in shell history and make's echo.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from builder.matrix import load_targets, load_versions, select_target
from builder.push import PushError, check_registry, credentials_from_env, record_push

_CREDENTIALS = "credentials: KTHYBRID_REGISTRY_USER and KTHYBRID_REGISTRY_PASSWORD (never flags)"


def image_sbom_file(image: str, sbom_file: Path) -> bytes:
    """The SBOM file `make sbom` wrote, once it is shown to be the image's own."""
    from builder.build import connect
    from builder.sbom import read_sbom

    try:
        data = sbom_file.read_bytes()
        document: Any = json.loads(data)
    except FileNotFoundError:
        raise PushError(f"{sbom_file} not found: run `make sbom` first") from None
    except json.JSONDecodeError as error:
        raise PushError(f"{sbom_file} is not JSON ({error}): run `make sbom` again") from None
    if document != read_sbom(connect(), image):
        raise PushError(f"{sbom_file} is not the SBOM in {image} (stale?): run `make sbom` again")
    return data


def _cmd_push(args: argparse.Namespace) -> int:
    from builder.build import connect, image_tags
    from builder.oci import OciRegistry, attach_sbom, split_repository
    from builder.push import push_image

    target = select_target(load_targets(), args.arch)
    registry = check_registry(args.registry)
    credentials = credentials_from_env()
    source = args.image or image_tags(target, load_versions(), args.repository)[0]
    out_dir = Path(args.out_dir or f"build/{target.name}")
    sbom = None if args.no_sbom else image_sbom_file(source, out_dir / "sbom.cdx.json")
    result = push_image(connect(), source, registry, args.tag, credentials)
    for path in record_push(result, target.name, out_dir):
        print(f"wrote {path}")
    print(f"digest: {result.digest}")
    print(f"image: {result.repository}:{result.tag}@{result.digest}")
    if sbom is not None:
        host, name = split_repository(result.repository)
        oci = OciRegistry(host, credentials, args.ca_file)
        artifact, fallback = attach_sbom(oci, name, result.digest, sbom)
        how = "referrers tag " + ("sha256-<hex>" if fallback else "API")
        print(f"sbom: {result.repository}@{artifact} refers to {result.digest} ({how})")
    return 0


def _cmd_push_chart(args: argparse.Namespace) -> int:
    from builder.chart_push import push_chart

    pushed = push_chart(args.registry, Path(args.out_dir), credentials_from_env(), args.ca_file)
    print(f"packaged {pushed.package}")
    print(f"chart: {pushed.reference} ({pushed.digest})")
    print(f"install: helm install kthybrid {pushed.reference} --values <your values>")
    return 0


def _cmd_fetch_sbom(args: argparse.Namespace) -> int:
    from builder.oci import OciRegistry, fetch_sbom, split_repository

    repository, at, digest = args.image.partition("@")
    if not at:
        raise PushError(f"{args.image!r} names no digest: give <registry>/<repository>@sha256:...")
    host, name = split_repository(check_registry(repository))
    data, artifact = fetch_sbom(
        OciRegistry(host, credentials_from_env(), args.ca_file), name, digest
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_bytes(data)
    partial.replace(output)
    print(f"wrote {output} ({len(data)} bytes, from {repository}@{artifact})")
    return 0


def add_registry_commands(commands: Any) -> None:
    """Adds the registry subcommands to `python -m builder`'s parser."""
    push = commands.add_parser(
        "push",
        help="push a built image to a registry, record its digest, attach its SBOM",
        description=f"Push through the Docker engine; {_CREDENTIALS}.",
    )
    push.add_argument("--arch", required=True, help="target name, e.g. sm120")
    push.add_argument("--registry", required=True, help="host[:port][/path], e.g. 127.0.0.1:5000")
    push.add_argument(
        "--repository", default="kthybrid", help="local repository (default kthybrid)"
    )
    push.add_argument("--image", help="local image to push (default <repository>:<version tag>)")
    push.add_argument("--tag", help="tag in the registry (default the local tag)")
    push.add_argument("--out-dir", help="where the digest and pins go (default build/<arch>)")
    push.add_argument("--ca-file", help="CA bundle that signed the registry's TLS certificate")
    push.add_argument("--no-sbom", action="store_true", help="do not attach the SBOM")
    push.set_defaults(run=_cmd_push)

    chart = commands.add_parser(
        "push-chart",
        help="package the chart and push it to oci://<registry>/charts",
        description=f"helm package, then helm push; {_CREDENTIALS}.",
    )
    chart.add_argument("--registry", required=True, help="host[:port][/path]")
    chart.add_argument("--out-dir", default="build/chart", help="where the .tgz goes")
    chart.add_argument("--ca-file", help="CA bundle that signed the registry's TLS certificate")
    chart.set_defaults(run=_cmd_push_chart)

    fetch = commands.add_parser(
        "fetch-sbom", help="fetch the SBOM attached to an image in a registry, by its digest"
    )
    fetch.add_argument("--image", required=True, help="<registry>/<repository>@sha256:<hex>")
    fetch.add_argument("--output", required=True, help="file to write")
    fetch.add_argument("--ca-file", help="CA bundle that signed the registry's TLS certificate")
    fetch.set_defaults(run=_cmd_fetch_sbom)
