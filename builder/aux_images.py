"""Auxiliary images (Prometheus now, a router later): Debian packages on the run-time base.

Each entry of builder/aux_images.yaml names its apt packages, user, entrypoint and command;
`render_aux_files` renders docker/<name>/Dockerfile from docker/templates/aux.Dockerfile.j2
(checked by `python -m builder render --check`), and `build_aux_image` builds and tags it as
<repository>-<name>:<Debian version of its first package>.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from builder.context import context_tar
from builder.engine import connect, resolve_base, short_error
from builder.errors import BuilderError
from builder.matrix import Versions
from builder.render import RenderedFile, check_rendered

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "aux_images.yaml"
TEMPLATE = "aux.Dockerfile.j2"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
USER = re.compile(r"^[0-9]{1,10}:[0-9]{1,10}$")
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
ABSOLUTE = re.compile(r"^/[A-Za-z0-9._/-]*$")


@dataclass(frozen=True)
class AuxImage:
    name: str
    description: str
    apt: tuple[str, ...]
    user: str
    workdir: str
    writable: tuple[str, ...]
    expose: tuple[int, ...]
    entrypoint: tuple[str, ...]
    command: tuple[str, ...]
    check: tuple[str, ...]


def _words(entry: dict[str, Any], key: str, name: str) -> tuple[str, ...]:
    value = entry.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BuilderError(f"{DATA.name}: {name}.{key} must be a list of non-empty strings")
    return tuple(value)


def _image(name: str, entry: object) -> AuxImage:
    if not NAME.match(name) or not isinstance(entry, dict):
        raise BuilderError(f"{DATA.name}: {name!r} is not a lower-case name with a mapping")
    apt = _words(entry, "apt", name)
    writable = _words(entry, "writable", name)
    if not apt or not all(PACKAGE.match(p) for p in apt):
        raise BuilderError(f"{DATA.name}: {name}.apt must name Debian packages")
    user, workdir = str(entry.get("user", "")), str(entry.get("workdir", ""))
    if not USER.match(user):
        raise BuilderError(f"{DATA.name}: {name}.user must be UID:GID (numbers), not {user!r}")
    if not all(ABSOLUTE.match(p) for p in (workdir, *writable)):
        raise BuilderError(f"{DATA.name}: {name}.workdir and .writable must be absolute paths")
    expose = entry.get("expose", [])
    if not isinstance(expose, list) or not all(
        isinstance(p, int) and 0 < p < 65536 for p in expose
    ):
        raise BuilderError(f"{DATA.name}: {name}.expose must be a list of ports")
    return AuxImage(name, str(entry.get("description", name)), apt, user, workdir, writable,
                    tuple(expose), _words(entry, "entrypoint", name),
                    _words(entry, "command", name), _words(entry, "check", name))  # fmt: skip


def load_aux_images(path: Path = DATA) -> dict[str, AuxImage]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise BuilderError(f"{path.name} must map image names to entries")
    return {str(name): _image(str(name), entry) for name, entry in data.items()}


def dockerfile_path(name: str, root: Path = REPO_ROOT) -> Path:
    return root / "docker" / name / "Dockerfile"


def render_aux_dockerfile(image: AuxImage, versions: Versions) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(REPO_ROOT / "docker" / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["tojson"] = json.dumps
    text = env.get_template(TEMPLATE).render(
        name=image.name, image=image, base_image=versions.base_image_ref
    )
    return text


def render_aux_files(versions: Versions, root: Path = REPO_ROOT) -> list[RenderedFile]:
    """docker/<name>/Dockerfile for every auxiliary image (the render hook)."""
    return [
        RenderedFile(
            dockerfile_path(image.name, root), render_aux_dockerfile(image, versions), root
        )
        for image in load_aux_images().values()
    ]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def build_aux_image(
    name: str, versions: Versions, repository: str, pull: bool, base_image: str | None = None
) -> str:
    """Build docker/<name>/Dockerfile on the host network; returns the tag."""
    images = load_aux_images()
    if name not in images:
        raise BuilderError(f"no auxiliary image {name!r}: use one of {', '.join(sorted(images))}")
    image = images[name]
    rendered = render_aux_dockerfile(image, versions)
    check_rendered([RenderedFile(dockerfile_path(name), rendered)])
    client = connect()
    base = base_image or versions.base_image_ref
    resolve_base(client, base, pull, _say)
    tag = f"{repository}-{name}:latest"
    context = context_tar(f"{name}/Dockerfile", rendered)
    try:
        built, _ = client.images.build(
            fileobj=context, custom_context=True, dockerfile=f"{name}/Dockerfile", tag=tag,
            buildargs={"BASE_IMAGE": base}, network_mode="host", rm=True, pull=False,
            labels={"io.kthybrid.aux": name},
        )  # fmt: skip
    except Exception as error:  # docker.errors.BuildError, APIError
        raise BuilderError(f"building {tag} failed: {short_error(error)}") from error
    _say(f"built {tag} ({built.short_id})")
    return tag
