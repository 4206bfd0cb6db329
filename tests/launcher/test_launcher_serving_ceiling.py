"""bench-serve's ceiling is the plan's CPU decode ceiling, or a note saying why there is none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kthybrid_serve.cpubench.tuning import choose, store
from kthybrid_serve.host.host import read_host
from kthybrid_serve.model.experts import ExpertShape
from kthybrid_serve.plan.records import tune_dir, tune_key
from kthybrid_serve.settings import default_settings
from kthybrid_serve.workflow import serving_ceiling

RTX_5090 = "NVIDIA GeForce RTX 5090,32607MiB,12.0"
SHAPE = ExpertShape("DeepSeek-V4-Flash", 4096, 2048, 6, 256, 43)


def _run(threads: int, gbps: float) -> dict[str, Any]:
    return {"threads": threads, "pools": 4, "threads_per_pool": [threads // 4] * 4,
            "numa_nodes": [0, 1, 2, 3], "labels": ["sweep"], "gbps": gbps}  # fmt: skip


def test_the_ceiling_is_the_plans_with_a_tune_record_and_a_note_without(
    make_host: Callable[..., Path], v4_flash: Path, tmp_path: Path
) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    root = make_host(sockets=2, nodes_per_socket=2, cores_per_node=16, mem_bytes=256 * 1024**3)
    settings = default_settings(host_root=str(root), model=str(v4_flash), gpu=(RTX_5090,))
    ceiling, note = serving_ceiling(settings, environ)
    assert ceiling is None and note.startswith("not measured")

    host = read_host(str(root), [RTX_5090])
    measured = {"runs": [_run(56, 80.0)], "plan_threads": 60, "plan_gbps": 70.0,
                "bandwidth_gbps": 200.0}  # fmt: skip
    store(tune_dir(environ), tune_key(host, SHAPE, "MXFP4"), measured,
          choose(measured, host.physical_cores_by_node()))  # fmt: skip
    ceiling, note = serving_ceiling(settings, environ)
    assert ceiling is not None and ceiling > 0
    assert "GB/s measured by `kthybrid-serve tune`" in note


def test_no_model_is_a_note_not_an_error(tmp_path: Path) -> None:
    settings = default_settings(model=str(tmp_path / "absent"), gpu=(RTX_5090,))
    ceiling, note = serving_ceiling(settings, {})
    assert ceiling is None and note.startswith("no plan here")
