"""Writes the image's CycloneDX SBOM: its Python environment, its Debian packages, its nvcc.

Runs at the end of the image build (the `sbom` stage), with cyclonedx-python-lib from
docker/lock/sbom-tools.lock. Every distribution in the environment must be in the hash locks at
the locked version (or be the image's own launcher, given with --own): the SBOM lists each with
its version, the hashes the lock accepts for it, its license where the metadata gives one, and
its purl. A distribution the lock does not hold, or a locked one that is missing, is an error.

Usage: python make-sbom.py --site SITE_PACKAGES --lock LOCK... --own NAME --target NAME
           --compute-capability CC --cuda VERSION --image-version VERSION --revision REV
           --output PATH
"""

from __future__ import annotations

import argparse
import email.message
import os
import re
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import cast

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.contrib.this.builders import this_component as cyclonedx_library
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
LICENSE_CLASSIFIER = "License :: "


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_locks(paths: list[Path]) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) from uv's hash-locked requirement files."""
    locked: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            match = ENTRY.match(line)
            if match:
                current = normalise(match.group(1))
                locked[current] = (match.group(2), [])
            elif current is not None:
                locked[current][1].extend(HASH.findall(line))
    return locked


def meta_field(dist: metadata.Distribution, name: str) -> str | None:
    """One metadata field, None where absent (the metadata is an email.message.Message)."""
    value = cast(email.message.Message, dist.metadata).get(name)
    return None if value is None else str(value)


def licenses_of(dist: metadata.Distribution) -> list[LicenseExpression | DisjunctiveLicense]:
    """What the metadata says, most precise first: an SPDX expression, a short License field,
    or the license classifiers. Full license texts in the License field are not a name."""
    factory = LicenseFactory()
    expression = (meta_field(dist, "License-Expression") or "").strip()
    if expression:
        return [factory.make_from_string(expression)]
    field = (meta_field(dist, "License") or "").strip()
    if field and "\n" not in field and len(field) <= 100 and field.upper() != "UNKNOWN":
        return [factory.make_from_string(field)]
    names = [
        classifier.split(" :: ")[-1]
        for classifier in dist.metadata.get_all("Classifier") or []
        if classifier.startswith(LICENSE_CLASSIFIER) and classifier.count(" :: ") >= 2
    ]
    return [factory.make_from_string(name) for name in sorted(set(names))]


def python_components(
    site: Path, locked: dict[str, tuple[str, list[str]]], own: set[str]
) -> tuple[list[Component], list[Component]]:
    """(locked components, the image's own components)."""
    components: list[Component] = []
    owned: list[Component] = []
    seen: set[str] = set()
    problems: list[str] = []
    for dist in metadata.distributions(path=[str(site)]):
        if not dist.metadata["Name"]:
            continue  # a dist-info folder without metadata: nothing is installed there
        name = normalise(dist.metadata["Name"])
        seen.add(name)
        if name in own:
            owned.append(
                Component(
                    type=ComponentType.APPLICATION,
                    name=name,
                    version=dist.version,
                    bom_ref=f"kthybrid-own:{name}",
                    licenses=licenses_of(dist),
                    purl=PackageURL("generic", "kthybrid", name, dist.version),
                    description=meta_field(dist, "Summary"),
                )
            )
            continue
        if name not in locked:
            problems.append(f"{name} {dist.version} is installed but in no lock")
            continue
        version, hashes = locked[name]
        if version != dist.version:
            problems.append(f"{name} is installed at {dist.version}, locked at {version}")
            continue
        purl = PackageURL("pypi", None, name, version)
        components.append(
            Component(
                type=ComponentType.LIBRARY,
                name=name,
                version=version,
                bom_ref=purl.to_string(),
                purl=purl,
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=h) for h in hashes],
                licenses=licenses_of(dist),
                description=meta_field(dist, "Summary"),
            )
        )
    problems += [f"{name} is locked but not installed" for name in sorted(set(locked) - seen)]
    if problems:
        raise SystemExit("make-sbom: the environment is not the locked set: " + "; ".join(problems))
    return components, owned


def debian_components(status: Path, os_release: Path) -> list[Component]:
    """Every installed Debian package, from dpkg's status database."""
    release = dict(
        line.split("=", 1) for line in os_release.read_text().splitlines() if "=" in line
    )
    name = release.get("ID", "debian").strip('"')
    distro = f"{name}-{release.get('VERSION_ID', '').strip(chr(34))}"
    components = []
    for paragraph in status.read_text(encoding="utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields.get("Status") != "install ok installed":
            continue
        qualifiers = {"arch": fields["Architecture"], "distro": distro}
        purl = PackageURL("deb", "debian", fields["Package"], fields["Version"], qualifiers)
        properties = []
        if "Source" in fields:
            properties.append(Property(name="kthybrid:deb-source", value=fields["Source"]))
        components.append(
            Component(
                type=ComponentType.LIBRARY,
                name=fields["Package"],
                version=fields["Version"],
                bom_ref=purl.to_string(),
                purl=purl,
                properties=properties,
            )
        )
    return components


def nvcc_component(cuda: Path) -> Component | None:
    version_file = cuda / "NVCC-VERSION"
    if not version_file.is_file():
        return None
    match = re.search(r"V(\d+\.\d+\.\d+)", version_file.read_text())
    if not match:
        raise SystemExit(f"make-sbom: {version_file} names no nvcc version")
    purl = PackageURL("generic", "nvidia", "cuda-nvcc", match.group(1))
    return Component(
        type=ComponentType.APPLICATION,
        name="cuda-nvcc",
        version=match.group(1),
        bom_ref=purl.to_string(),
        purl=purl,
        description="nvcc, NVVM, headers and static runtime copied from the CUDA toolchain image",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--lock", type=Path, action="append", required=True)
    parser.add_argument("--own", action="append", default=[])
    parser.add_argument("--target", required=True)
    parser.add_argument("--compute-capability", required=True)
    parser.add_argument("--cuda", required=True)
    parser.add_argument("--image-version", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--dpkg-status", type=Path, default=Path("/var/lib/dpkg/status"))
    parser.add_argument("--os-release", type=Path, default=Path("/etc/os-release"))
    parser.add_argument("--cuda-home", type=Path, default=Path("/usr/local/cuda"))
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        raise SystemExit("make-sbom: SOURCE_DATE_EPOCH is not set (the builder passes it)")
    python, own = python_components(
        args.site, read_locks(args.lock), {normalise(n) for n in args.own}
    )
    components = python + debian_components(args.dpkg_status, args.os_release)
    nvcc = nvcc_component(args.cuda_home)
    if nvcc is not None:
        components.append(nvcc)
    image = Component(
        type=ComponentType.CONTAINER,
        name="kthybrid",
        version=args.image_version,
        bom_ref="kthybrid-image",
        components=own,
        properties=[
            Property(name="kthybrid:target", value=args.target),
            Property(name="kthybrid:compute-capability", value=args.compute_capability),
            Property(name="kthybrid:cuda", value=args.cuda),
            Property(name="kthybrid:source-revision", value=args.revision),
            Property(
                name="kthybrid:nvcc",
                value="present"
                if nvcc is not None
                else "absent: built without a CUDA toolchain image",
            ),
        ],
    )
    bom = Bom(
        # The same image content gives the same document: no random serial, no build time.
        serial_number=uuid.uuid5(
            uuid.NAMESPACE_URL, f"kthybrid:{args.image_version}:{args.revision}"
        ),
        metadata=BomMetaData(component=image, timestamp=datetime.fromtimestamp(int(epoch), tz=UTC)),
        components=components,
    )
    bom.metadata.tools.components.add(cyclonedx_library())
    bom.register_dependency(image, components)
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n", encoding="utf-8")
    debian = len(components) - len(python) - (nvcc is not None)
    print(
        f"make-sbom: {len(python)} Python packages, {debian} Debian packages"
        f"{', nvcc' if nvcc else ''} -> {args.output}"
    )


if __name__ == "__main__":
    main()
