"""Pushes a built image to a registry through the Docker SDK and records the digest it got.

Credentials go to the engine with the one push request (the SDK's `auth_config`, sent as the
X-Registry-Auth header); nothing is written to ~/.docker/config.json or anywhere else, and no
message of this module repeats them. The engine treats 127.0.0.0/8 as an insecure registry, so
a loopback registry works over plain HTTP; any other registry needs TLS the engine trusts.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils
import requests

from builder.errors import BuilderError

Emit = Callable[[str], None]

# A registry host (name or IPv4, optional port) and an optional path below it: the same
# grammar as the chart's image.repository (tests/registry/test_pins.py ties the two).
_HOST = (
    r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?"
)
_PATH = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*"
REGISTRY_PATTERN = re.compile(rf"^{_HOST}(/{_PATH})*$")
REPOSITORY_NAME_PATTERN = re.compile(rf"^{_PATH}(/{_PATH})*$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_PATTERN = re.compile(r"^sha256:[a-f0-9]{64}$")
USER_ENV = "KTHYBRID_REGISTRY_USER"
PASSWORD_ENV = "KTHYBRID_REGISTRY_PASSWORD"
PROGRESS_SECONDS = 15.0
RECORD_NAME = "push.json"


class PushError(BuilderError):
    """Pushing to, or reading from, a registry failed; the message says what to do."""


@dataclass(frozen=True)
class Credentials:
    """Basic-auth credentials for one registry; the password never shows in a repr."""

    username: str
    password: str = field(repr=False)

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


@dataclass(frozen=True)
class PushResult:
    """What a push made: the registry repository, the tag and the manifest digest."""

    source: str
    repository: str
    tag: str
    digest: str
    manifest_size: int
    seconds: float
    layers_pushed: int
    layers_present: int

    @property
    def reference(self) -> str:
        """The image by digest, as a deployment should name it."""
        return f"{self.repository}@{self.digest}"


def check_registry(registry: str) -> str:
    """`registry` without a trailing slash, or PushError naming what is wrong."""
    value = registry.strip().rstrip("/")
    if "://" in value:
        raise PushError(
            f"registry {registry!r} has a scheme: give host[:port][/path], e.g. "
            f"registry.example.com:5000/team (the engine picks https, or http on the loopback)"
        )
    if len(value) > 200 or not REGISTRY_PATTERN.match(value):
        raise PushError(
            f"registry {registry!r} is not host[:port][/path] (lower-case path parts of "
            f"letters, digits, '.', '_' and '-'): e.g. 127.0.0.1:5000 or registry.example.com/team"
        )
    return value


def check_digest(digest: str) -> str:
    if not DIGEST_PATTERN.match(digest):
        raise PushError(f"{digest!r} is not a digest: expected sha256:<64 lower-case hex>")
    return digest


def credentials_from_env(environ: dict[str, str] | None = None) -> Credentials | None:
    """Credentials from KTHYBRID_REGISTRY_USER/PASSWORD (never from the command line)."""
    env = dict(os.environ if environ is None else environ)
    user, password = env.get(USER_ENV, ""), env.get(PASSWORD_ENV, "")
    if bool(user) != bool(password):
        missing = PASSWORD_ENV if user else USER_ENV
        raise PushError(f"{missing} is not set: set both {USER_ENV} and {PASSWORD_ENV}, or none")
    if not user:
        return None
    if any(c in user for c in ":\n\r") or any(c in password for c in "\n\r"):
        raise PushError(f"{USER_ENV} holds ':' or a line break, or {PASSWORD_ENV} a line break")
    return Credentials(user, password)


def _scrub(text: str, credentials: Credentials | None) -> str:
    """The engine's message without the password, should the engine ever repeat it."""
    if credentials and credentials.password:
        text = text.replace(credentials.password, "***")
    return text.strip()[:400]


@dataclass
class _Progress:
    """Per-layer states from the engine's push stream, summed up every PROGRESS_SECONDS."""

    emit: Emit
    started: float = field(default_factory=time.monotonic)
    last_report: float = field(default_factory=time.monotonic)
    states: dict[str, str] = field(default_factory=dict)
    sent: dict[str, tuple[int, int]] = field(default_factory=dict)

    def update(self, chunk: dict[str, Any]) -> None:
        layer, status = chunk.get("id"), str(chunk.get("status", ""))
        if not layer or not status or ":" in str(layer):
            return
        before = self.states.get(layer)
        self.states[layer] = status
        detail = chunk.get("progressDetail") or {}
        if status == "Pushing" and detail.get("total"):
            self.sent[layer] = (int(detail.get("current", 0)), int(detail["total"]))
        if status in ("Pushed", "Layer already exists", "Mounted from") and before != status:
            self.emit(f"[push {self.elapsed()}] layer {layer}: {status.lower()}")
        if time.monotonic() - self.last_report >= PROGRESS_SECONDS:
            self.report()

    def report(self) -> None:
        self.last_report = time.monotonic()
        done = sum(s in ("Pushed", "Layer already exists") for s in self.states.values())
        current = sum(c for c, _ in self.sent.values())
        total = sum(t for _, t in self.sent.values())
        moving = f", {current / 1e9:.2f} of {total / 1e9:.2f} GB of the layers in flight read"
        self.emit(
            f"[push {self.elapsed()}] {done} of {len(self.states)} layers in the registry"
            + (moving if total else "")
        )

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}m{seconds % 60:02d}s"

    def count(self, status: str) -> int:
        return sum(s == status for s in self.states.values())


def _consume(
    chunks: Iterator[dict[str, Any]], progress: _Progress, credentials: Credentials | None
) -> tuple[str, int]:
    """Reads the push stream to its end; returns the manifest digest and size the engine got."""
    digest, size = "", 0
    for chunk in chunks:
        if "error" in chunk or "errorDetail" in chunk:
            message = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message", "")
            hint = ""
            if "no basic auth credentials" in message or "unauthorized" in message:
                hint = f": set {USER_ENV} and {PASSWORD_ENV} for this registry"
            elif "server gave HTTP response to HTTPS client" in message:
                hint = ": add it to the engine's insecure-registries, or serve it with TLS"
            raise PushError(f"the registry refused the push: {_scrub(message, credentials)}{hint}")
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "Digest" in aux:
            digest, size = str(aux["Digest"]), int(aux.get("Size", 0))
            continue
        progress.update(chunk)
    if not digest:
        raise PushError("the engine ended the push without a digest: see its log (dockerd)")
    return check_digest(digest), size


def push_image(
    client: docker.DockerClient,
    source: str,
    registry: str,
    tag: str | None = None,
    credentials: Credentials | None = None,
    emit: Emit | None = None,
) -> PushResult:
    """Push the local image `source` as <registry>/<its repository name>:<tag>.

    The registry-qualified tag is added for the push and removed after it; the local image
    keeps exactly the names it had.
    """
    say: Emit = emit or (lambda text: print(text, file=sys.stderr, flush=True))
    registry = check_registry(registry)
    try:
        image = client.images.get(source)
    except docker.errors.ImageNotFound:
        raise PushError(f"image {source} is not built: run `make image`") from None
    source_repository, source_tag = docker.utils.parse_repository_tag(source)
    name = source_repository.rsplit("/", 1)[-1]
    tag = tag or source_tag or ""
    if not REPOSITORY_NAME_PATTERN.match(name) or not TAG_PATTERN.match(tag):
        raise PushError(f"cannot name {source!r} in a registry: give it as repository:tag")
    repository = f"{registry}/{name}"
    added = f"{repository}:{tag}" not in (image.tags or [])
    if added:
        image.tag(repository, tag)
    say(f"pushing {source} ({image.short_id}) to {repository}:{tag}")
    progress = _Progress(say)
    try:
        chunks = client.api.push(
            repository,
            tag=tag,
            stream=True,
            decode=True,
            auth_config=credentials.auth_config() if credentials else None,
        )
        digest, size = _consume(chunks, progress, credentials)
    except docker.errors.APIError as error:
        explanation = _scrub(str(error.explanation or error), credentials)
        raise PushError(f"the engine refused the push: {explanation}") from None
    except requests.RequestException as error:
        raise PushError(
            f"the engine stopped answering during the push ({type(error).__name__}): see its "
            f"log (dockerd), then push again (layers already sent are not sent twice)"
        ) from None
    finally:
        if added:
            client.images.remove(f"{repository}:{tag}", noprune=True)
    result = PushResult(
        source=source,
        repository=repository,
        tag=tag,
        digest=digest,
        manifest_size=size,
        seconds=round(time.monotonic() - progress.started, 1),
        layers_pushed=progress.count("Pushed"),
        layers_present=progress.count("Layer already exists"),
    )
    say(
        f"pushed in {result.seconds:.0f} s ({result.layers_pushed} layers sent, "
        f"{result.layers_present} already there): {result.reference}"
    )
    return result


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    return path


def values_pin(result: PushResult, target: str) -> str:
    """A chart values file that deploys exactly the pushed image."""
    image = {"repository": result.repository, "tag": result.tag, "digest": result.digest}
    return (
        f"# Written by `python -m builder push`: the image {result.source} as pushed.\n"
        f"# helm install ... --values this-file\n"
        f"target: {json.dumps(target)}\n"
        "image:\n" + "".join(f"  {key}: {json.dumps(value)}\n" for key, value in image.items())
    )


def env_pin(result: PushResult, target: str) -> str:
    """Lines for compose/.env that make compose run the pushed image by digest."""
    return (
        f"# Written by `python -m builder push`: the image {result.source} as pushed.\n"
        f"ARCH={target}\n"
        f"KTHYBRID_IMAGE_REPO={result.repository}\n"
        f"KTHYBRID_IMAGE_DIGEST=@{result.digest}\n"
    )


def record_push(result: PushResult, target: str, out_dir: Path) -> list[Path]:
    """build/<arch>/push.json, values-digest.yaml (chart) and digest.env (compose)."""
    record = {
        "target": target,
        "source": result.source,
        "repository": result.repository,
        "tag": result.tag,
        "digest": result.digest,
        "reference": result.reference,
        "manifest_size": result.manifest_size,
        "push_seconds": result.seconds,
        "layers_pushed": result.layers_pushed,
        "layers_present": result.layers_present,
    }
    return [
        _write(out_dir / RECORD_NAME, json.dumps(record, indent=2) + "\n"),
        _write(out_dir / "values-digest.yaml", values_pin(result, target)),
        _write(out_dir / "digest.env", env_pin(result, target)),
    ]


def read_record(out_dir: Path) -> dict[str, Any]:
    """The last push's record, for the SBOM and chart steps that follow it."""
    path = out_dir / RECORD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PushError(f"{path} not found: push the image first (`make push`)") from None
    except json.JSONDecodeError as error:
        raise PushError(f"{path} is not JSON ({error}): push the image again") from None
    if not isinstance(data, dict) or not DIGEST_PATTERN.match(str(data.get("digest", ""))):
        raise PushError(f"{path} holds no image digest: push the image again")
    return data
