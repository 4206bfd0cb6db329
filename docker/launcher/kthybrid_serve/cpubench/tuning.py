"""`kthybrid-serve tune`'s record: the best measured layout, stored for `plan` to read.

Reading the records back is kthybrid_serve.plan.records; this module chooses the run to keep
and writes it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kthybrid_serve.errors import TuneError
from kthybrid_serve.plan.records import RECORD_FORMAT, TuneKey


def choose(result: Mapping[str, Any], cores_by_node: Mapping[int, int]) -> dict[str, Any]:
    """The run tune keeps: the fastest whose pools all sit on nodes with enough allowed cores.

    Layouts that put a pool on a node this host does not have (upstream's 2 pools on a one-node
    host) are measured for comparison but never stored: the planner refuses them.
    """
    usable = [
        run
        for run in result["runs"]
        if run["gbps"] is not None
        and all(
            threads <= cores_by_node.get(node, 0)
            for node, threads in zip(run["numa_nodes"], run["threads_per_pool"], strict=True)
        )
    ]
    if not usable:
        raise TuneError("no measured layout fits this host's nodes; nothing to store")
    return max(usable, key=lambda r: (r["gbps"], -r["threads"]))


def store(
    directory: Path, key: TuneKey, result: Mapping[str, Any], chosen: Mapping[str, Any]
) -> Path:
    """Write the record atomically (a reader never sees half a file); returns its path."""
    record = {
        "format": RECORD_FORMAT,
        "key": {"fingerprint": key.fingerprint, "shape": key.shape, "method": key.method},
        "threads": chosen["threads"],
        "numa_nodes": chosen["numa_nodes"],
        "threads_per_pool": chosen["threads_per_pool"],
        "gbps": chosen["gbps"],
        "rule_threads": result["plan_threads"],
        "rule_gbps": result["plan_gbps"],
        "bandwidth_gbps": result["bandwidth_gbps"],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bench": dict(result),
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / key.filename()
        with tempfile.NamedTemporaryFile(
            "w", dir=directory, prefix=".tmp-", suffix=".json", delete=False
        ) as handle:
            json.dump(record, handle, indent=2)
            handle.write("\n")
            temporary = Path(handle.name)
        os.replace(temporary, path)
    except OSError as error:
        raise TuneError(
            f"cannot write the tune record under {directory}: {error.strerror}; mount a "
            "writable cache volume at /cache (or set XDG_CACHE_HOME)"
        ) from error
    return path
