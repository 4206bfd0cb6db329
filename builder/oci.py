"""OCI artifacts that refer to a pushed image: the SBOM, attached by digest and fetched back.

Blobs and manifests go through the `oras` SDK's registry client (its session, TLS settings and
basic auth). Registries of the OCI distribution spec 1.1 list an image's referrers at
/v2/<name>/referrers/<digest>; older ones (distribution 2.8, Debian's docker-registry) answer
404 there, and the spec's fallback applies: an image index tagged `sha256-<hex of the digest>`
lists the referrers, and the client that pushes a referrer updates it. Both are read here, and
the fallback tag is written whenever the registry did not take the subject itself.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

import oras.provider
import requests

from builder.push import Credentials, PushError, check_digest

SBOM_ARTIFACT_TYPE = "application/vnd.cyclonedx+json"
EMPTY_CONFIG = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
}
EMPTY_CONFIG_BYTES = b"{}"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = (
    OCI_MANIFEST,
    OCI_INDEX,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MAX_SBOM_BYTES = 64 << 20


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def speaks_plain_http(host: str) -> bool:
    """Whether a registry answers plain HTTP at host (only ever asked of loopback hosts)."""
    try:
        answer = requests.get(f"http://{host}/v2/", timeout=10)
    except requests.RequestException:
        return False
    return "Docker-Distribution-Api-Version" in answer.headers


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class OciRegistry:
    """One registry host, spoken to through oras's client with the same rules as the engine.

    A loopback registry may speak plain HTTP (the engine allows that too); every other one
    is HTTPS, verified against `ca_file` or the system's trust.
    """

    def __init__(
        self, host: str, credentials: Credentials | None = None, ca_file: str | None = None
    ) -> None:
        self.host = host
        verify: bool | str = ca_file or True
        plain = is_loopback(host) and speaks_plain_http(host)
        self.scheme = "http" if plain else "https"
        if not plain:
            self._check_https(host, verify)
        self.client = oras.provider.Registry(
            hostname=host, insecure=plain, tls_verify=verify, auth_backend="basic"
        )
        # Never from a config file: load_configs would read ~/.docker/config.json.
        self.client.auth.load_configs = lambda *args, **kwargs: None
        if credentials is not None:
            self.client.auth.set_basic_auth(credentials.username, credentials.password)
        else:
            self.client.auth._basic_auth = None

    @staticmethod
    def _check_https(host: str, verify: bool | str) -> None:
        """Fail at once, not after oras's retries, when the registry does not answer."""
        try:
            requests.get(f"https://{host}/v2/", timeout=10, verify=verify)
        except requests.exceptions.SSLError:
            raise PushError(
                f"TLS with {host} failed (certificate not trusted, or not TLS): pass --ca-file "
                f"with the CA that signed the registry's certificate"
            ) from None
        except requests.RequestException as error:
            raise PushError(
                f"registry {host} does not answer on https ({type(error).__name__})"
            ) from None

    def _request(
        self, method: str, path: str, headers: dict[str, str] | None = None, data: bytes = b""
    ) -> requests.Response:
        url = f"{self.scheme}://{self.host}/v2/{path}"
        try:
            response: requests.Response = self.client.do_request(
                url, method, data=data or None, headers=dict(headers or {})
            )
        except requests.exceptions.SSLError as error:
            raise PushError(
                f"TLS with {self.host} failed ({type(error).__name__}): pass --ca-file with the "
                f"CA that signed the registry's certificate"
            ) from None
        except (requests.RequestException, ValueError) as error:
            raise PushError(
                f"registry {self.host} did not answer {method} {path}: {error}"
            ) from None
        if response.status_code in (401, 403):
            raise PushError(
                f"registry {self.host} refused {method} {path} ({response.status_code}): set "
                f"KTHYBRID_REGISTRY_USER and KTHYBRID_REGISTRY_PASSWORD for it"
            )
        return response

    def manifest(self, name: str, reference: str) -> tuple[bytes, str] | None:
        """A manifest's bytes and media type, or None when the registry has none by that name."""
        response = self._request(
            "GET", f"{name}/manifests/{reference}", {"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise PushError(f"GET {name}/manifests/{reference}: HTTP {response.status_code}")
        body = response.content
        if reference.startswith("sha256:") and _sha256(body) != reference:
            raise PushError(f"{self.host}/{name}@{reference}: the manifest has another digest")
        return body, response.headers.get("Content-Type", "").split(";")[0]

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> bool:
        """Store a manifest; True when the registry says it took the manifest's subject."""
        response = self._request(
            "PUT", f"{name}/manifests/{reference}", {"Content-Type": media_type}, body
        )
        if response.status_code not in (200, 201):
            raise PushError(
                f"{self.host} refused the manifest {name}:{reference} "
                f"(HTTP {response.status_code}: {response.text.strip()[:300]})"
            )
        return "OCI-Subject" in response.headers

    def put_blob(self, name: str, data: bytes) -> str:
        digest = _sha256(data)
        if self._request("HEAD", f"{name}/blobs/{digest}").status_code == 200:
            return digest
        start = self._request("POST", f"{name}/blobs/uploads/")
        location = start.headers.get("Location", "")
        if start.status_code != 202 or not location:
            raise PushError(f"{self.host} did not start a blob upload (HTTP {start.status_code})")
        if location.startswith("/v2/"):
            location = location.removeprefix("/v2/")
        elif "/v2/" in location:
            location = location.split("/v2/", 1)[1]
        separator = "&" if "?" in location else "?"
        done = self._request(
            "PUT",
            f"{location}{separator}digest={digest}",
            {"Content-Type": "application/octet-stream"},
            data,
        )
        if done.status_code != 201:
            raise PushError(f"{self.host} refused the blob {digest} (HTTP {done.status_code})")
        return digest

    def blob(self, name: str, digest: str, limit: int) -> bytes:
        response = self._request("GET", f"{name}/blobs/{digest}")
        if response.status_code != 200:
            raise PushError(
                f"{self.host}/{name} has no blob {digest} (HTTP {response.status_code})"
            )
        if len(response.content) > limit or _sha256(response.content) != digest:
            raise PushError(f"{self.host}/{name}: blob {digest} is too large or does not match")
        return response.content

    def descriptor(self, name: str, digest: str) -> Descriptor:
        found = self.manifest(name, check_digest(digest))
        if found is None:
            raise PushError(f"{self.host}/{name} has no image {digest}: push it first")
        body, media_type = found
        return Descriptor(media_type, digest, len(body))

    def referrers(self, name: str, digest: str) -> list[dict[str, Any]]:
        """The referrers API's answer, or the fallback tag's index (empty when neither has one)."""
        api = self._request("GET", f"{name}/referrers/{digest}", {"Accept": OCI_INDEX})
        if api.status_code == 200 and api.headers.get("Content-Type", "").startswith(OCI_INDEX):
            return list(api.json().get("manifests", []))
        found = self.manifest(name, fallback_tag(digest))
        if found is None:
            return []
        index = json.loads(found[0])
        return list(index.get("manifests", []))


def fallback_tag(digest: str) -> str:
    """The OCI 1.1 referrers tag schema: sha256:<hex> is listed under the tag sha256-<hex>."""
    algorithm, _, hexdigest = check_digest(digest).partition(":")
    return f"{algorithm}-{hexdigest}"


def split_repository(repository: str) -> tuple[str, str]:
    """registry.example.com:5000/team/kthybrid -> (host, path)."""
    host, _, name = repository.partition("/")
    if not name:
        raise PushError(f"{repository!r} names no repository below the registry host")
    return host, name


def attach_sbom(
    registry: OciRegistry, name: str, image_digest: str, sbom: bytes
) -> tuple[str, bool]:
    """Push `sbom` as an artifact whose subject is the image; returns its digest, and whether
    the referrers fallback tag had to be written (the registry has no referrers API)."""
    try:
        json.loads(sbom)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PushError(f"the SBOM is not JSON ({error}): run `make sbom` again") from None
    subject = registry.descriptor(name, image_digest)
    layer = Descriptor(SBOM_ARTIFACT_TYPE, registry.put_blob(name, sbom), len(sbom))
    registry.put_blob(name, EMPTY_CONFIG_BYTES)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM_ARTIFACT_TYPE,
        "config": EMPTY_CONFIG,
        "layers": [
            {**layer.as_dict(), "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"}}
        ],
        "subject": subject.as_dict(),
    }
    body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    digest = _sha256(body)
    if registry.put_manifest(name, digest, body, OCI_MANIFEST):
        return digest, False
    referrer = Descriptor(OCI_MANIFEST, digest, len(body))
    _add_to_fallback_index(registry, name, image_digest, referrer)
    return digest, True


def _add_to_fallback_index(
    registry: OciRegistry, name: str, image_digest: str, referrer: Descriptor
) -> None:
    tag = fallback_tag(image_digest)
    found = registry.manifest(name, tag)
    index: dict[str, Any] = (
        json.loads(found[0])
        if found
        else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    )
    entries = [m for m in index.get("manifests", []) if m.get("digest") != referrer.digest]
    entries.append({**referrer.as_dict(), "artifactType": SBOM_ARTIFACT_TYPE})
    index["manifests"] = sorted(entries, key=lambda m: str(m["digest"]))
    body = json.dumps(index, separators=(",", ":"), sort_keys=True).encode()
    registry.put_manifest(name, tag, body, OCI_INDEX)


def fetch_sbom(registry: OciRegistry, name: str, image_digest: str) -> tuple[bytes, str]:
    """The SBOM attached to the image, and the digest of the artifact that carried it."""
    check_digest(image_digest)
    sboms = [
        m for m in registry.referrers(name, image_digest)
        if m.get("artifactType") == SBOM_ARTIFACT_TYPE
    ]  # fmt: skip
    if not sboms:
        raise PushError(
            f"{registry.host}/{name}@{image_digest} has no SBOM attached: run `make push-sbom`"
        )
    if len({str(m.get("digest")) for m in sboms}) > 1:
        raise PushError(
            f"{registry.host}/{name}@{image_digest} has {len(sboms)} SBOMs attached: one image "
            f"has one SBOM; remove the stale ones from the tag {fallback_tag(image_digest)}"
        )
    artifact = str(sboms[0]["digest"])
    found = registry.manifest(name, check_digest(artifact))
    if found is None:
        raise PushError(f"{registry.host}/{name}: the SBOM artifact {artifact} is gone")
    manifest = json.loads(found[0])
    if (manifest.get("subject") or {}).get("digest") != image_digest:
        raise PushError(f"{registry.host}/{name}@{artifact} does not refer to {image_digest}")
    layers = [x for x in manifest.get("layers", []) if x.get("mediaType") == SBOM_ARTIFACT_TYPE]
    if len(layers) != 1:
        raise PushError(f"{registry.host}/{name}@{artifact} holds no single CycloneDX layer")
    return registry.blob(name, check_digest(str(layers[0]["digest"])), MAX_SBOM_BYTES), artifact
