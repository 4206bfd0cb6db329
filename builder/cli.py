"""Command line of the builder: parses arguments and calls the library; errors become one line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from builder.errors import BuilderError
from builder.lock import LOCK_NAMES
from builder.matrix import load_targets, load_versions, select_target


def _cmd_list(args: argparse.Namespace) -> int:
    targets = load_targets()
    if args.names:
        print(" ".join(targets))
        return 0
    versions = load_versions()
    from builder.build import image_tags

    print(
        f"{'target':<7} {'cc':<5} {'validated':<9} {'moe (offload/prefill)':<30} "
        f"{'sparse MLA':<10} image"
    )
    for target in targets.values():
        backends = f"{target.mxfp4_moe_backend}/{target.mxfp4_prefill_backend}"
        validated = "yes" if target.validated_upstream else "no"
        tag = image_tags(target, versions)[0]
        print(
            f"{target.name:<7} {target.compute_capability:<5} {validated:<9} {backends:<30} "
            f"{target.nsa_backend:<10} {tag}"
        )
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from builder.render import check_rendered, render_all, write_rendered

    files = render_all(load_targets(), load_versions())
    if args.check:
        check_rendered(files)
        print(f"{len(files)} generated files match a fresh render")
        return 0
    written = write_rendered(files)
    for item in written:
        print(f"wrote {item.relative}")
    print(f"{len(files)} generated files, {len(written)} changed")
    return 0


def _cmd_lock(args: argparse.Namespace) -> int:
    from builder.lock import write_locks
    from builder.render import render_all, write_rendered

    versions = load_versions()
    for path in write_locks(versions, index_url=args.index_url, only=args.only):
        print(f"wrote {path}")
    # The layer locks are renders of stack.lock: keep them in step with it.
    for item in write_rendered(render_all(load_targets(), versions)):
        print(f"wrote {item.relative}")
    return 0


def default_ca_bundle() -> str | None:
    """The CA bundle this host's own downloads trust, so the build trusts the same.

    It goes to build-only stages; the image keeps Debian's bundle.
    """
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(name)
        if value and os.path.isfile(value):
            return value
    system = "/etc/ssl/certs/ca-certificates.crt"
    return system if os.path.isfile(system) else None


def _cmd_build(args: argparse.Namespace) -> int:
    from builder.build import BuildOptions, build_image

    targets = load_targets()
    target = select_target(targets, args.arch)
    ca = args.ca_bundle or default_ca_bundle()
    options = BuildOptions(
        repository=args.repository,
        base_image=args.base_image,
        cuda_toolchain_image=args.cuda_toolchain_image,
        index_url=args.index_url,
        ca_bundle=Path(ca) if ca else None,
        pull=not args.no_pull,
        no_cache=args.no_cache,
        stop_after=args.stop_after,
    )
    result = build_image(target, load_versions(), options)
    print(f"built {result.image_id[:19]} as {', '.join(result.tags)}")
    print(f"base: {result.base_image} ({result.base_origin}; content {result.base_content_digest})")
    print(f"CUDA toolchain image: {result.cuda_toolchain_image or 'none: this image has no nvcc'}")
    print(f"SOURCE_DATE_EPOCH: {result.source_date_epoch}")
    return 0


def _cmd_sbom(args: argparse.Namespace) -> int:
    from builder.build import image_tags
    from builder.sbom import SBOM_PATH, extract_sbom

    target = select_target(load_targets(), args.arch)
    image = image_tags(target, load_versions(), args.repository)[-1]
    output = Path(args.output or f"build/{target.name}/sbom.cdx.json")
    summary = extract_sbom(image, output)
    print(f"wrote {output} ({SBOM_PATH} of {image}: {summary})")
    return 0


def _cmd_bases(args: argparse.Namespace) -> int:
    from builder.bases import describe_bases

    for line in describe_bases(load_versions(), pull=not args.no_pull, record=args.record):
        print(line)
    return 0


def _cmd_build_router(args: argparse.Namespace) -> int:
    from builder.router import build_router_image

    ca = args.ca_bundle or default_ca_bundle()
    tags = build_router_image(
        load_versions(),
        repository=args.repository,
        base_image=args.base_image,
        index_url=args.index_url,
        ca_bundle=Path(ca) if ca else None,
        pull=not args.no_pull,
    )
    print(f"built the router image as {', '.join(tags)}")
    return 0


def _cmd_build_aux(args: argparse.Namespace) -> int:
    from builder.aux_images import build_aux_image

    versions = load_versions()
    print(build_aux_image(args.name, versions, args.repository, not args.no_pull, args.base_image))
    return 0


def _add_build_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`build` (a target's image), `build-router` and `build-aux` (the other images)."""
    build = commands.add_parser("build", help="build one target's image with the Docker engine")
    build.add_argument("--arch", required=True, help="target name, e.g. sm120 (see `list`)")
    build.add_argument(
        "--repository", default="kthybrid", help="image repository (default kthybrid)"
    )
    build.add_argument("--base-image", help="run-time base image (default from versions.yaml)")
    build.add_argument(
        "--cuda-toolchain-image",
        help="image to copy CUDA's nvcc from (default from versions.yaml; 'none' for no nvcc)",
    )
    build.add_argument("--index-url", help="Python package index or mirror for the build")
    build.add_argument(
        "--ca-bundle",
        help="PEM bundle the build's downloads trust (default: $PIP_CERT, $SSL_CERT_FILE, "
        "$REQUESTS_CA_BUNDLE or the host's system bundle); never kept in the image",
    )
    build.add_argument("--no-pull", action="store_true", help="never pull; use local images only")
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    build.add_argument(
        "--stop-after",
        choices=("cuda-toolchain", "build-inputs", "build-tools", "launcher"),
        help="build the build-only stages up to this one and tag them, not the image",
    )
    build.set_defaults(run=_cmd_build)

    router = commands.add_parser(
        "build-router", help="build the router image (sglang-router; no CUDA) as REPOSITORY:router"
    )
    router.add_argument(
        "--repository", default="kthybrid", help="image repository (default kthybrid)"
    )
    router.add_argument("--base-image", help="run-time base image (default from versions.yaml)")
    router.add_argument("--index-url", help="Python package index or mirror for the build")
    router.add_argument("--ca-bundle", help="PEM bundle the build's downloads trust")
    router.add_argument("--no-pull", action="store_true", help="never pull; use local images only")
    router.set_defaults(run=_cmd_build_router)

    aux = commands.add_parser(
        "build-aux", help="build an auxiliary image (builder/aux_images.yaml)"
    )
    aux.add_argument("name", help="entry of builder/aux_images.yaml, e.g. prometheus")
    aux.add_argument("--repository", default="kthybrid", help="tagged <repository>-<name>:latest")
    aux.add_argument("--base-image", help="run-time base image (default from versions.yaml)")
    aux.add_argument("--no-pull", action="store_true", help="never pull; use local images only")
    aux.set_defaults(run=_cmd_build_aux)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python -m builder",
        description="Render, lock and build kthybrid images from builder/targets.yaml "
        "and builder/versions.yaml.",
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list the GPU targets and their image tags")
    listing.add_argument("--names", action="store_true", help="only the names, on one line")
    listing.set_defaults(run=_cmd_list)

    render = commands.add_parser("render", help="render Dockerfiles and targets copies")
    render.add_argument("--check", action="store_true", help="fail if committed files differ")
    render.set_defaults(run=_cmd_render)

    lock = commands.add_parser("lock", help="resolve the pinned versions into hash locks (uv)")
    lock.add_argument("--index-url", help="package index or mirror to resolve against")
    lock.add_argument(
        "--only",
        choices=LOCK_NAMES,
        help="resolve one lock and leave the others as they are",
    )
    lock.set_defaults(run=_cmd_lock)

    _add_build_commands(commands)

    sbom = commands.add_parser("sbom", help="write a built image's CycloneDX SBOM to a file")
    sbom.add_argument("--arch", required=True, help="target name, e.g. sm120")
    sbom.add_argument(
        "--repository", default="kthybrid", help="image repository (default kthybrid)"
    )
    sbom.add_argument("--output", help="file to write (default build/<arch>/sbom.cdx.json)")
    sbom.set_defaults(run=_cmd_sbom)

    bases = commands.add_parser(
        "bases", help="show the base images' registry and content digests (--record pins them)"
    )
    bases.add_argument("--no-pull", action="store_true", help="look at local images only")
    bases.add_argument(
        "--record",
        action="store_true",
        help="write the registry digests that a registry answered into builder/versions.yaml",
    )
    bases.set_defaults(run=_cmd_bases)

    from builder.registry_cli import add_registry_commands  # push, push-chart, fetch-sbom

    add_registry_commands(commands)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BuilderError as error:
        print(f"builder: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("builder: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
