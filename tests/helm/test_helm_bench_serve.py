"""helmTest.benchServe: a `helm test` pod that runs `kthybrid-serve bench-serve` on the Service.

The last test renders the pod with helm and runs its container (args, env, mounts, user,
read-only root) with Docker against the stand-in OpenAI server, with the key.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helm_chart import NAMESPACE, RELEASE, Rendered, container, env_of
from kthybrid_serve.settings import OPTIONS_BY_DEST

from tests.support import openai_standin

POD = f"{RELEASE}-test-bench-serve"
ON = ("helmTest.benchServe.enabled=true",)
VALUES = {  # chart value -> (launcher option, a value to set, the variable's text)
    "promptTokens": ("bench_prompt_tokens", 16, "16"),
    "outputTokens": ("bench_output_tokens", 8, "8"),
    "durationSeconds": ("bench_duration", 2, "2"),
    "warmup": ("bench_warmup", 0, "0"),
}
KEY = "kthybrid-test-key-0123456789abcdef"


def _pod(rendered: Rendered) -> dict[str, Any] | None:
    pods = [d for d in rendered.of_kind("Pod") if d["metadata"]["name"] == POD]
    return pods[0] if pods else None


def _env(rendered: Rendered) -> dict[str, Any]:
    pod = _pod(rendered)
    assert pod is not None
    return env_of(container(pod["spec"], "bench-serve"))


def test_the_bench_serve_test_is_off_by_default(default_render: Rendered) -> None:
    assert _pod(default_render) is None


def test_it_reaches_the_service_with_the_key_file(render: Callable[..., Rendered]) -> None:
    rendered = render(set_values=ON)
    env = _env(rendered)
    assert env["KTHYBRID_HOST"] == f"{RELEASE}.{NAMESPACE}.svc"
    assert env["KTHYBRID_PORT"] == "30000"
    assert env["KTHYBRID_API_KEY_FILE"] == "/run/secrets/kthybrid/api-key"
    pod = _pod(rendered)
    assert pod is not None
    assert container(pod["spec"], "bench-serve")["args"] == ["bench-serve"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    # The NetworkPolicy admits the chart's helm-test pods to the server port.
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "helm-test"


def test_without_a_key_no_key_file_is_set(render: Callable[..., Rendered]) -> None:
    assert "KTHYBRID_API_KEY_FILE" not in _env(render(set_values=(*ON, "apiKey.enabled=false")))


@pytest.mark.parametrize("key", sorted(VALUES))
def test_a_value_reaches_its_variable_and_null_leaves_it_out(
    render: Callable[..., Rendered], key: str
) -> None:
    dest, value, text = VALUES[key]
    variable = OPTIONS_BY_DEST[dest].env
    assert _env(render(set_values=(*ON, f"helmTest.benchServe.{key}={value}")))[variable] == text
    assert variable not in _env(render(set_values=ON))


def test_concurrency_reaches_its_variable_as_a_list(render: Callable[..., Rendered]) -> None:
    env = _env(render(set_values=(*ON, "helmTest.benchServe.concurrency={1,2,8}")))
    assert env["KTHYBRID_BENCH_CONCURRENCY"] == "1,2,8"
    assert OPTIONS_BY_DEST["bench_concurrency"].spec.parse("1,2,8") == (1, 2, 8)


def test_a_value_out_of_range_is_refused_by_the_schema(render: Callable[..., Rendered]) -> None:
    from helm_chart import RenderError

    with pytest.raises(RenderError):
        render(set_values=(*ON, "helmTest.benchServe.durationSeconds=0"))


# -- the rendered pod, run with Docker against the stand-in ---------------------------------


@pytest.fixture(scope="module")
def bench_image(request: pytest.FixtureRequest) -> str:
    name = str(request.config.getoption("--image") or "kthybrid:sm120")
    if subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode:
        pytest.fail(f"image {name} not found: build it (make image) or pass --image", pytrace=False)
    return name


@pytest.fixture(scope="module")
def network() -> Iterator[str]:
    name = f"kthybrid-helm-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "network", "create", "--internal", name], check=True,
                   capture_output=True)  # fmt: skip
    yield name
    subprocess.run(["docker", "network", "rm", name], capture_output=True, check=False)


def _docker(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip


def _wait_listening(name: str) -> None:
    for _ in range(150):
        if "listening" in _docker("logs", name).stdout:
            return
        time.sleep(0.2)
    raise AssertionError(f"the stand-in {name} did not start: {_docker('logs', name).stderr}")


def test_the_rendered_pod_runs_bench_serve_against_the_service_with_the_key(
    render: Callable[..., Rendered], bench_image: str, network: str, tmp_path: Path
) -> None:
    values = [f"helmTest.benchServe.{k}={v}" for k, (_, v, _) in VALUES.items()]
    pod = _pod(render(set_values=(*ON, *values, "helmTest.benchServe.concurrency={1,2}")))
    assert pod is not None
    spec = container(pod["spec"], "bench-serve")
    env = env_of(spec)
    key_dir = tmp_path / "key"
    key_dir.mkdir()
    (key_dir / "api-key").write_text(KEY)
    key_dir.chmod(0o755)
    (key_dir / "api-key").chmod(0o644)
    support = Path(openai_standin.__file__).parent
    standin = f"kthybrid-helm-standin-{uuid.uuid4().hex[:8]}"
    started = _docker("run", "-d", "--name", standin, "--network", network,
                      "--network-alias", env["KTHYBRID_HOST"], "-v", f"{support}:/standin:ro",
                      "--entrypoint", "python3", bench_image, "/standin/openai_standin.py",
                      "--port", env["KTHYBRID_PORT"], "--api-key", KEY,
                      "--ttft", "0.05", "--itl", "0.01")  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        _wait_listening(standin)
        argv = ["run", "--rm", "--network", network, "--read-only", "--user", "10000:10000",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"]  # fmt: skip
        for mount in spec["volumeMounts"]:
            if mount["name"] == "api-key":
                argv += ["-v", f"{key_dir}:{mount['mountPath']}:ro"]
            elif mount["name"] != "models":
                argv += ["--tmpfs", f"{mount['mountPath']}:uid=10000,gid=10000,exec"]
        for name, value in env.items():
            argv += ["-e", f"{name}={value}"]
        result = _docker(*argv, bench_image, *spec["args"])
    finally:
        _docker("rm", "-f", standin)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "conc  req  err  out tok/s" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line[:4].strip() in {"1", "2"}]
    assert [row[0] for row in rows] == ["1", "2"] and all(row[2] == "0" for row in rows), rows
