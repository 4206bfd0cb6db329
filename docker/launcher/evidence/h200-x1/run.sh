#!/usr/bin/env bash
# Issue 23 on the one-GPU kind that was lent (no multi-GPU kind was): from the repo root of a
# checkout on the borrowed H200 machine, no image, no install:
#   PYTHONPATH_EXTRA=build/carry bash docker/launcher/evidence/h200-x1/run.sh OUTDIR
# (build/carry holds prometheus_client 0.26.0, the image's version, unpacked from its wheel).
# It records NVML's view of the GPU (memory, NUMA node, bus id), what doctor and plan say with
# and without --replicas, the fleet lines, the plan's metrics as Prometheus reads them, and an
# NCCL all-reduce on the one GPU with NVLink multicast off (NCCL_NVLS_ENABLE=0).
set -u
out=${1:?usage: run.sh OUTDIR}
mkdir -p "$out"
export PYTHONPATH=docker/launcher:.${PYTHONPATH_EXTRA:+:$PYTHONPATH_EXTRA}
export XDG_CACHE_HOME=/tmp/kthybrid-cache
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
py=${PYTHON:-python3}
"$py" - <<'PY'
from pathlib import Path
from tests.support.launcher_fixtures import ModelSpec, build_model
build_model(Path("/tmp/kthybrid-models/tiny-moe"), ModelSpec(layers=4, experts=16, shards=3, nextn=0))
build_model(Path("/tmp/kthybrid-models/DeepSeek-V4-Flash"), ModelSpec())
build_model(Path("/tmp/kthybrid-models/v4-shapes-16l"), ModelSpec(layers=16, shards=4, nextn=0))
PY
run() { name=$1; shift; "$@" >"$out/$name.out" 2>"$out/$name.err"; echo "$?" >"$out/$name.rc"; }
v4=/tmp/kthybrid-models/DeepSeek-V4-Flash
small=/tmp/kthybrid-models/v4-shapes-16l
run nvml "$py" - <<'PY'
import pynvml
pynvml.nvmlInit()
print("driver", pynvml.nvmlSystemGetDriverVersion())
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    pci = pynvml.nvmlDeviceGetPciInfo(h)
    bus = pci.busId.decode() if isinstance(pci.busId, bytes) else pci.busId
    try:
        node = pynvml.nvmlDeviceGetNumaNodeId(h)
    except pynvml.NVMLError as error:
        node = f"NVML: {error}"
    sysfs = f"/sys/bus/pci/devices/{bus.lower()[4:] if len(bus) > 12 else bus.lower()}/numa_node"
    try:
        with open(sysfs) as f:
            sys_node = f.read().strip()
    except OSError as error:
        sys_node = f"{sysfs}: {error}"
    print(i, pynvml.nvmlDeviceGetName(h), pynvml.nvmlDeviceGetMemoryInfo(h).total, bus,
          "nvml-node", node, "sysfs-node", sys_node)
PY
run lscpu lscpu
run doctor-v4flash "$py" -m kthybrid_serve doctor --model "$v4"
run plan-v4flash-json "$py" -m kthybrid_serve plan --model "$v4" --json
run plan-small "$py" -m kthybrid_serve plan --model "$small" --gpu "NVIDIA GeForce RTX 5090,32GiB,12.0"
run plan-small-replicas-1 "$py" -m kthybrid_serve plan --model "$small" --replicas 1
run plan-small-replicas-1-json "$py" -m kthybrid_serve plan --model "$small" --replicas 1 --json
run plan-small-replicas-1-fleet-env "$py" -m kthybrid_serve plan --model "$small" --replicas 1 --fleet-env
rtx="NVIDIA GeForce RTX 5090,32GiB,12.0"
run plan-small-rtx5090-replicas-1 "$py" -m kthybrid_serve plan --model "$small" --replicas 1 --gpu "$rtx"
run plan-small-replicas-2 "$py" -m kthybrid_serve plan --model "$small" --replicas 2
run plan-small-replicas-2-json "$py" -m kthybrid_serve plan --model "$small" --replicas 2 --json
run plan-metrics "$py" - "$small" "$rtx" <<'PY'
import os, sys, tempfile, time
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from kthybrid_serve.metrics import prepare_metrics
from kthybrid_serve.settings import default_settings
from kthybrid_serve.workflow import plan_and_validate
# The hybrid plan an RTX 5090 would get on this host (CPU experts, threads, budget).
settings = default_settings(model=sys.argv[1], gpu=(sys.argv[2],))
planned = plan_and_validate(settings, os.environ)
env = prepare_metrics(planned.plan, settings, planned.model.served_name,
                      {"PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp()}, time.time())
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry, path=env["PROMETHEUS_MULTIPROC_DIR"])
sys.stdout.write(generate_latest(registry).decode())
PY
run nccl-allreduce "$py" - <<'PY'
import os, torch, torch.distributed as dist
os.environ.setdefault("MASTER_ADDR", "127.0.0.1"); os.environ.setdefault("MASTER_PORT", "29511")
dist.init_process_group("nccl", rank=0, world_size=1)
x = torch.arange(1 << 20, device="cuda", dtype=torch.float32)
dist.all_reduce(x)
torch.cuda.synchronize()
print("world", dist.get_world_size(), "sum ok", bool((x == torch.arange(1 << 20, device="cuda", dtype=torch.float32)).all()))
print("nccl", torch.cuda.nccl.version(), "NCCL_NVLS_ENABLE", os.environ["NCCL_NVLS_ENABLE"])
dist.destroy_process_group()
PY
