"""The build context (what the engine gets), SOURCE_DATE_EPOCH and the source revision."""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
import urllib.parse

from builder.errors import BuildError
from builder.matrix import REPO_ROOT

CONTEXT_DIR = REPO_ROOT / "docker"
# What the Dockerfiles COPY from the context; nothing else is sent to the engine.
CONTEXT_PATHS = ("lock", "scripts", "launcher")
CONTEXT_EXCLUDE = re.compile(
    r"(^|/)(__pycache__|\.pytest_cache|\.mypy_cache|[^/]*\.egg-info|evidence|build)(/|$)"
)
# What decides the Python stack's content; its last commit's date is SOURCE_DATE_EPOCH, so a
# commit that changes only other files leaves every cached layer valid.
EPOCH_PATHS = ("docker/lock",)


def context_tar(dockerfile: str, dockerfile_text: str) -> io.BytesIO:
    """The build context: docker/'s copied paths and the Dockerfile, every entry with time 0.

    No secret is ever in it (see builder.secret_server).
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add_bytes(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))

        def add_dir(name: str) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 0
            tar.addfile(info)

        for top in CONTEXT_PATHS:
            root = CONTEXT_DIR / top
            paths = [root] if root.is_file() else sorted(root.rglob("*"))
            if root.is_dir():
                add_dir(top)
            for path in paths:
                relative = path.relative_to(CONTEXT_DIR).as_posix()
                if CONTEXT_EXCLUDE.search(relative):
                    continue
                if path.is_dir():
                    add_dir(relative)
                elif path.is_file():
                    mode = 0o755 if os.access(path, os.X_OK) else 0o644
                    add_bytes(relative, path.read_bytes(), mode)
        add_bytes(dockerfile, dockerfile_text.encode())
    buffer.seek(0)
    return buffer


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH for a build: the environment's, else the date of the last commit that
    changed what the Python stack is made of (EPOCH_PATHS)."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value:
        if not value.isdigit():
            raise BuildError(
                f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds since 1970: unset it or "
                f"give an integer"
            )
        return int(value)
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "log", "-1", "--format=%ct", "--", *EPOCH_PATHS],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out = ""
    if not out.isdigit():
        raise BuildError(
            f"cannot read the commit date of {', '.join(EPOCH_PATHS)} from git (not a git "
            f"checkout?): set SOURCE_DATE_EPOCH (seconds since 1970) for the build"
        )
    return int(out)


def check_index_url(url: str) -> None:
    """One clear line for an index URL that pip and uv would refuse halfway through a build."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise BuildError(
            f"--index-url {_redacted(url)!r} is not an http(s) URL of a package index: give one "
            f"like https://user:token@pypi.example.com/simple"
        )


def _redacted(url: str) -> str:
    """The URL with any password replaced, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def git_revision() -> str:
    try:
        revision = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "docker", "builder"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return revision + ("-dirty" if dirty else "")
