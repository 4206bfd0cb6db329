"""Checks that refuse, before anything heavy loads, what cannot work on this host."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kthybrid_serve.errors import (
    ArchMismatchError,
    CgroupMemoryError,
    DriverTooOldError,
    HostMemoryError,
    HugepagesError,
    LauncherError,
    MissingToolError,
    NoGpuError,
    ShmTooSmallError,
)
from kthybrid_serve.host.host import HostFacts
from kthybrid_serve.plan.hugepages import (
    HUGETLB_PAGE,
    HUGETLB_POOL_FACTOR,
    THP_ENABLED,
    hugetlb_pool_needed,
    pool_pages,
    thp_mode,
)
from kthybrid_serve.plan.plan import Plan
from kthybrid_serve.plan.targets import TargetData, driver_at_least
from kthybrid_serve.settings import Settings
from kthybrid_serve.units import GIB, gib

MIN_SHM_BYTES = 1 * GIB  # torch/NCCL shared memory; Docker's 64 MiB default breaks them
# Where the memory limit is set, per deployment: named in the advice of a refusal.
MEMORY_LIMIT_SETTINGS = "docker --memory, compose's mem_limit, Helm hostMemory.limitGi"


@dataclass(frozen=True)
class Check:
    """One check's outcome: ok, warn, skip, or fail with the error to raise."""

    name: str
    status: str
    message: str
    error: LauncherError | None = None


def ok(name: str, message: str) -> Check:
    return Check(name, "ok", message)


def fail(name: str, error: LauncherError) -> Check:
    return Check(name, "fail", error.message, error)


def check_gpu_present(host: HostFacts) -> Check:
    if not host.gpus:
        return fail(
            "gpu",
            NoGpuError(
                "no NVIDIA GPU found; start the container with GPUs (--gpus all / the NVIDIA "
                "runtime) or plan for another machine with --gpu 'NAME,MEMORY,CC'"
            ),
        )
    names = ", ".join(
        f"{g.index}: {g.name} ({gib(g.memory_bytes)}, cc {g.cc_text})" for g in host.gpus
    )
    return ok("gpu", f"{len(host.gpus)} GPU(s) via {host.gpu_source}: {names}")


def check_arch(host: HostFacts, data: TargetData, environ: Mapping[str, str]) -> Check:
    image_target = environ.get("KTHYBRID_TARGET")
    if not image_target:
        return Check("arch", "skip", "KTHYBRID_TARGET unset (a checkout, not an image): skipped")
    own = data.named(image_target)
    if own is None:
        names = ", ".join(t.name for t in data.targets)
        return fail(
            "arch",
            ArchMismatchError(
                f"KTHYBRID_TARGET={image_target!r} is not a known target ({names}); "
                "use an image built by `make image`"
            ),
        )
    for gpu in host.gpus:
        if gpu.cc_text in own.compute_capabilities:
            continue
        right = data.for_cc(gpu.cc_text)
        if right is None:
            supported = ", ".join(
                f"{t.name} ({'/'.join(t.compute_capabilities)})" for t in data.targets
            )
            hint = f"no kthybrid image supports it (supported: {supported})"
        else:
            hint = f"use the image kthybrid:{right.name}"
        return fail(
            "arch",
            ArchMismatchError(
                f"GPU {gpu.index} ({gpu.name}) has compute capability {gpu.cc_text} but this image "
                f"is kthybrid:{image_target} (built for {'/'.join(own.compute_capabilities)}); "
                f"{hint}"
            ),
        )
    return ok("arch", f"every GPU matches kthybrid:{image_target}")


def check_driver(host: HostFacts, data: TargetData) -> Check:
    known = [g for g in host.gpus if g.cuda_driver_version is not None or g.driver_version]
    if not known:
        return Check("driver", "skip", "driver version unknown (GPUs given with --gpu)")
    gpu = known[0]
    target = data.for_cc(gpu.cc_text)
    minimum = target.min_driver if target else min(t.min_driver for t in data.targets)
    if gpu.cuda_driver_version is not None:
        good = gpu.cuda_driver_version >= data.min_cuda_driver
        shown = f"{gpu.cuda_driver_version // 1000}.{gpu.cuda_driver_version % 1000 // 10}"
    else:
        good = driver_at_least(gpu.driver_version or "0", minimum)
        shown = gpu.driver_version or "unknown"
    if not good:
        return fail(
            "driver",
            DriverTooOldError(
                f"NVIDIA driver {gpu.driver_version} supports CUDA {shown}, older than the CUDA "
                f"{data.cuda} this image needs; upgrade the host driver to {minimum} or newer"
            ),
        )
    return ok("driver", f"driver {gpu.driver_version}, CUDA {shown} (needs {data.cuda})")


def memory_picture(host: HostFacts) -> str:
    """Every number the RAM decision rests on, for messages."""
    parts = [f"{gib(host.mem_total_bytes)} total"]
    reserved = host.hugepages_total_bytes()
    if reserved:
        parts.append(f"{gib(reserved)} reserved as hugepages")
    if host.cgroup.mems is not None and set(host.memory_nodes()) != {n.node for n in host.nodes}:
        nodes = ",".join(map(str, host.memory_nodes()))
        parts.append(f"memory nodes limited to {nodes} by cgroup cpuset.mems")
    limit = host.cgroup.memory_limit
    if limit is not None:
        parts.append(f"cgroup limit {gib(limit)}")
    parts.append(f"{gib(host.memory_available_bytes())} available")
    return ", ".join(parts)


def check_host_memory(host: HostFacts, plan: Plan) -> Check:
    if plan.gpu_only:
        return ok("host-memory", "GPU-only plan: no CPU experts in host memory")
    need = plan.host_memory_needed
    have = host.memory_available_bytes()
    if need > have:
        return fail(
            "host-memory",
            HostMemoryError(
                f"the CPU experts need {gib(need)} of RAM ({gib(plan.cpu_expert_bytes)} of weights "
                f"+ overhead) but the host has {memory_picture(host)}; use a host with more RAM, "
                "free the hugepages nothing uses, or move experts to GPUs (more GPUs / TP)"
            ),
        )
    return ok("host-memory", f"need {gib(need)}; {memory_picture(host)}")


def check_cgroup_memory(host: HostFacts, plan: Plan) -> Check:
    limit = host.cgroup.memory_limit
    if limit is None:
        return ok("cgroup-memory", f"no cgroup memory limit (cgroup v{host.cgroup_version or '?'})")
    if not plan.gpu_only and plan.host_memory_needed > limit:
        which = "memory.high" if host.cgroup.memory_high == limit else "memory limit"
        return fail(
            "cgroup-memory",
            CgroupMemoryError(
                f"the CPU experts need {gib(plan.host_memory_needed)} but the container's cgroup "
                f"{which} allows {gib(limit)}; raise it ({MEMORY_LIMIT_SETTINGS}) or remove it"
            ),
        )
    return ok("cgroup-memory", f"need {gib(plan.host_memory_needed)}, cgroup allows {gib(limit)}")


def _pools(host: HostFacts) -> str:
    sizes = sorted({size for n in host.nodes for size in n.hugepages})
    shown = []
    for size in sizes:
        total, free = pool_pages(host, size)
        label = f"{size // GIB} GiB" if size >= GIB else f"{size // 1024**2} MiB"
        shown.append(f"{label} pool {free}/{total} pages free")
    return ", ".join(shown) or "no hugepage pools"


def check_hugepages(host: HostFacts, plan: Plan, settings: Settings) -> Check:
    """THP's mode and the pools against what the plan makes glibc do with the expert buffers."""
    mode, thp = settings.hugepages, thp_mode(host)
    state = f"THP {thp or 'not available'}; {_pools(host)}"
    reserved = host.hugepages_total_bytes()
    if plan.gpu_only:
        return ok("hugepages", f"GPU-only plan: no CPU experts ({state})")
    if mode == "off":
        if reserved:
            return Check(
                "hugepages",
                "warn",
                f"KTHYBRID_HUGEPAGES=off and {gib(reserved)} reserved as hugepages that nothing "
                f"maps: they only take RAM from the experts ({state}); free them "
                "(vm.nr_hugepages=0) or set KTHYBRID_HUGEPAGES=hugetlb",
            )
        return ok("hugepages", f"off: the expert buffers are on 4 KiB pages ({state})")
    if mode == "thp":
        if thp not in {"madvise", "always"}:
            return fail(
                "hugepages",
                HugepagesError(
                    f"KTHYBRID_HUGEPAGES=thp needs transparent hugepages in madvise or always "
                    f"mode but this host's is {thp or 'not available'}; set "
                    f"{THP_ENABLED} to madvise, or KTHYBRID_HUGEPAGES=off"
                ),
            )
        return ok("hugepages", f"thp: glibc madvises the expert buffers ({state})")
    need = hugetlb_pool_needed(plan.cpu_expert_bytes)
    total, free = pool_pages(host, HUGETLB_PAGE)
    if free * HUGETLB_PAGE < need:
        have = "none are reserved" if total == 0 else f"{free} of {total} are free"
        return fail(
            "hugepages",
            HugepagesError(
                f"KTHYBRID_HUGEPAGES=hugetlb needs {gib(need)} of free 2 MiB hugepages for "
                f"{gib(plan.cpu_expert_bytes)} of CPU experts ({HUGETLB_POOL_FACTOR}x, measured: "
                f"glibc rounds each buffer up to whole pages) but {have} on the allowed memory "
                f"nodes; reserve {-(-need // HUGETLB_PAGE)} (vm.nr_hugepages; 1 GiB pages are "
                "not used) or set KTHYBRID_HUGEPAGES=off"
            ),
        )
    return ok("hugepages", f"hugetlb: {gib(need)} of the 2 MiB pool for the experts ({state})")


def check_shm(host: HostFacts) -> Check:
    if host.shm_bytes is None:
        return Check("shm", "warn", "/dev/shm not found: torch and NCCL need shared memory")
    if host.shm_bytes < MIN_SHM_BYTES:
        return fail(
            "shm",
            ShmTooSmallError(
                f"/dev/shm is {host.shm_bytes // 1024**2} MiB, below the {gib(MIN_SHM_BYTES)} "
                "torch and NCCL need; start the container with --shm-size=16g or --ipc=host"
            ),
        )
    return ok("shm", f"/dev/shm is {gib(host.shm_bytes)}")


def check_memlock(host: HostFacts) -> Check:
    if not host.memlock_known:
        return Check("memlock", "warn", "locked-memory limit unknown")
    if host.memlock_bytes is None:
        return ok("memlock", "locked memory unlimited")
    return Check(
        "memlock",
        "warn",
        f"locked memory limited to {host.memlock_bytes // 1024} KiB; pinned host buffers may "
        "fail or be slow: run with --ulimit memlock=-1",
    )


def check_cache(environ: Mapping[str, str]) -> Check:
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "/root")) / ".cache")
    path = Path(base)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".kthybrid-probe-"):
            pass
    except OSError as error:
        return Check(
            "cache",
            "warn",
            f"cache dir {path} is not writable ({error.strerror}): JIT kernels will be rebuilt "
            "on every start; mount a writable volume there",
        )
    return ok("cache", f"cache dir {path} is writable")


def check_numactl(plan: Plan) -> Check:
    if plan.argv[0] == "numactl" and shutil.which("numactl") is None:
        return fail(
            "numactl",
            MissingToolError(
                "numactl is not installed but the NUMA policy needs it; install it or set "
                "KTHYBRID_NUMA_POLICY=none"
            ),
        )
    return ok("numactl", "numactl available" if plan.argv[0] == "numactl" else "not needed")


def preflight_checks(host: HostFacts, data: TargetData, environ: Mapping[str, str]) -> list[Check]:
    """Checks that need no model: GPU present, arch, driver, shm."""
    gpu = check_gpu_present(host)
    if gpu.error is not None:
        return [gpu]
    return [gpu, check_arch(host, data, environ), check_driver(host, data), check_shm(host)]


def plan_checks(host: HostFacts, plan: Plan, settings: Settings) -> list[Check]:
    return [
        check_host_memory(host, plan),
        check_cgroup_memory(host, plan),
        check_hugepages(host, plan, settings),
    ]


def first_failure(checks: list[Check]) -> LauncherError | None:
    return next((c.error for c in checks if c.error is not None), None)
