"""Every observability flag the launcher emits exists in sglang-kt 0.7.2's own parser (in
the image), with the values the launcher passes; /metrics is outside the API key check."""

from __future__ import annotations

import json
import subprocess

from kthybrid_serve.plan.command import observability_argv
from kthybrid_serve.settings import default_settings

PARSE = """
import argparse, json, sys
from sglang.srt.server_args import ServerArgs
parser = argparse.ArgumentParser()
ServerArgs.add_cli_args(parser)
args = parser.parse_args(["--model-path", "/m", *json.loads(sys.argv[1])])
print(json.dumps({k: getattr(args, k) for k in ("enable_metrics",
      "enable_metrics_for_all_schedulers", "log_requests", "log_requests_format",
      "enable_trace", "otlp_traces_endpoint")}))
"""

AUTH = """
from sglang.srt.utils.auth import AuthLevel, decide_request_auth
for path in ("/metrics", "/v1/chat/completions"):
    d = decide_request_auth(method="GET", path=path, authorization_header=None,
                            api_key="k", admin_api_key=None, auth_level=AuthLevel.NORMAL)
    print(path, d.allowed)
"""


def _in_image(image: str, code: str, *args: str) -> str:
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-e", "PYTHONWARNINGS=ignore",
         "--entrypoint", "python3", image, "-c", code, *args],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_sglangs_parser_takes_every_observability_flag_the_launcher_emits(image_name: str) -> None:
    settings = default_settings(
        log_requests="json", otlp_traces_endpoint="otel-collector:4317", metrics_all_schedulers=True
    )
    argv = observability_argv(settings, tp=2)
    assert argv == ["--enable-metrics", "--enable-metrics-for-all-schedulers", "--log-requests",
                    "--log-requests-format", "json", "--enable-trace", "--otlp-traces-endpoint",
                    "otel-collector:4317"]  # fmt: skip
    parsed = json.loads(_in_image(image_name, PARSE, json.dumps(argv)).strip().splitlines()[-1])
    assert parsed == {"enable_metrics": True, "enable_metrics_for_all_schedulers": True,
                      "log_requests": True, "log_requests_format": "json", "enable_trace": True,
                      "otlp_traces_endpoint": "otel-collector:4317"}  # fmt: skip


def test_sglang_lets_metrics_through_without_the_api_key(image_name: str) -> None:
    out = _in_image(image_name, AUTH)
    assert "/metrics True" in out
    assert "/v1/chat/completions False" in out
