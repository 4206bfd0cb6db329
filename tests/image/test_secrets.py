"""No build secret, CA bundle handed to the build, or package-index setting reaches the image."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import docker.models.images

SECRET_WORDS = re.compile(
    r"build-secrets|ca\.pem|PIP_CERT|SSL_CERT_FILE|PIP_INDEX_URL|UV_INDEX_URL|FTP_PROXY|TOKEN", re.I
)


def test_no_secret_in_the_image_history(image: docker.models.images.Image) -> None:
    for layer in image.history():
        # The build's own helper names a secret-handling script, not a secret: leave it out.
        created_by = layer.get("CreatedBy", "").replace("with-build-secrets.sh", "")
        assert not SECRET_WORDS.search(created_by), layer["CreatedBy"]


def test_no_build_leftovers_in_tmp(host: Any) -> None:
    assert host.run("find /tmp -mindepth 1 -maxdepth 1").stdout.strip() == ""


def test_no_secret_in_the_image_environment(image_env: dict[str, str]) -> None:
    for name in image_env:
        assert not SECRET_WORDS.search(name), name


def test_no_pip_or_uv_configuration_in_the_file_system(host: Any) -> None:
    for path in (
        "/etc/pip.conf",
        "/etc/xdg/pip/pip.conf",
        "/root/.pip/pip.conf",
        "/root/.config/pip",
        "/home/kthybrid/.config/pip",
        "/home/kthybrid/.pip",
        "/etc/uv",
        "/root/.config/uv",
        "/tmp/build-secrets",
        "/opt/build-tools",
        "/opt/sbom-tools",
        "/tmp/sbom",
        "/wheels",
        "/src",
        "/out",
    ):
        assert not host.file(path).exists, path


def _pem_bodies(text: str) -> set[str]:
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    return {"".join(block.split()) for block in blocks}


def test_no_certificate_handed_to_the_build_is_in_the_image(host: Any) -> None:
    # The build trusts $PIP_CERT (this host's bundle). Certificates in it that Debian's
    # ca-certificates does not ship are this site's own: none may appear in the image.
    # Without $PIP_CERT the build got no bundle; the host's own still shows any site CA.
    bundle = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    assert Path(bundle).is_file(), f"no CA bundle at {bundle} to compare the image with"
    debian = host.run("cat /usr/share/ca-certificates/mozilla/*.crt").stdout
    site_only = _pem_bodies(Path(bundle).read_text()) - _pem_bodies(debian)
    candidates = host.run(
        "find / -xdev -type f \\( -name '*.pem' -o -name '*.crt' -o -name '*.cer' \\) "
        "-not -path '/proc/*' 2>/dev/null; find /etc /tmp /root /home -xdev -type f 2>/dev/null"
    ).stdout.split()
    for certificate in site_only:
        # Each certificate's first 64 base64 characters, as they appear on one PEM line.
        needle = certificate[:64]
        found = host.run("grep -lsF %s %s", needle, " ".join(sorted(set(candidates))))
        assert found.stdout.strip() == "", f"site certificate found in {found.stdout.split()}"
