"""Checks that refuse, before anything heavy loads, what cannot work on this host."""

from __future__ import annotations

import os
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
from kthybrid_serve.host import HostFacts
from kthybrid_serve.plan import Plan
from kthybrid_serve.settings import Settings
from kthybrid_serve.targets import Target, driver_at_least, target_for_cc
from kthybrid_serve.units import GIB, gib

MIN_CUDA_DRIVER = 12080  # the images ship CUDA 12.8 user-space (torch 2.9.1 cu128)
MIN_SHM_BYTES = 1 * GIB  # torch/NCCL shared memory; Docker's 64 MiB default breaks them


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


def check_arch(host: HostFacts, targets: tuple[Target, ...], environ: Mapping[str, str]) -> Check:
    image_target = environ.get("KTHYBRID_TARGET")
    image_cc = environ.get("KTHYBRID_TARGET_CC")
    if not image_target:
        return Check("arch", "skip", "KTHYBRID_TARGET unset (a checkout, not an image): skipped")
    own = next((t for t in targets if t.name == image_target), None)
    accepted = set(own.compute_capabilities if own else ())
    if image_cc:
        accepted.add(image_cc)
    for gpu in host.gpus:
        if gpu.cc_text in accepted:
            continue
        right = target_for_cc(gpu.cc_text, targets)
        if right is None:
            supported = ", ".join(f"{t.name} ({'/'.join(t.compute_capabilities)})" for t in targets)
            hint = f"no kthybrid image supports it (supported: {supported})"
        else:
            hint = f"use the image kthybrid:{right.name}"
        return fail(
            "arch",
            ArchMismatchError(
                f"GPU {gpu.index} ({gpu.name}) has compute capability {gpu.cc_text} but this image "
                f"is kthybrid:{image_target} (built for {image_cc or '/'.join(sorted(accepted))}); "
                f"{hint}"
            ),
        )
    return ok("arch", f"every GPU matches kthybrid:{image_target}")


def check_driver(host: HostFacts, targets: tuple[Target, ...]) -> Check:
    known = [g for g in host.gpus if g.cuda_driver_version is not None or g.driver_version]
    if not known:
        return Check("driver", "skip", "driver version unknown (GPUs given with --gpu)")
    gpu = known[0]
    target = target_for_cc(gpu.cc_text, targets)
    minimum = target.min_driver if target else "570.26"
    if gpu.cuda_driver_version is not None:
        good = gpu.cuda_driver_version >= MIN_CUDA_DRIVER
        shown = f"{gpu.cuda_driver_version // 1000}.{gpu.cuda_driver_version % 1000 // 10}"
    else:
        good = driver_at_least(gpu.driver_version or "0", minimum)
        shown = gpu.driver_version or "unknown"
    if not good:
        return fail(
            "driver",
            DriverTooOldError(
                f"NVIDIA driver {gpu.driver_version} supports CUDA {shown}, older than the CUDA "
                f"12.8 this image needs; upgrade the host driver to {minimum} or newer"
            ),
        )
    return ok("driver", f"driver {gpu.driver_version}, CUDA {shown} (needs 12.8)")


def check_host_memory(host: HostFacts, plan: Plan) -> Check:
    need = plan.host_memory_needed
    have = host.mem_available_bytes
    if need > have:
        return fail(
            "host-memory",
            HostMemoryError(
                f"the CPU experts need {gib(need)} of RAM ({gib(plan.cpu_expert_bytes)} of weights "
                f"+ overhead) but {gib(have)} is available ({gib(host.mem_total_bytes)} total); "
                "use a host with more RAM or move more experts to GPUs (more GPUs / TP)"
            ),
        )
    return ok("host-memory", f"need {gib(need)}, {gib(have)} available")


def check_cgroup_memory(host: HostFacts, plan: Plan) -> Check:
    limit = host.cgroup_memory_limit
    if limit is None:
        return ok("cgroup-memory", f"no cgroup memory limit (cgroup v{host.cgroup_version or '?'})")
    if plan.host_memory_needed > limit:
        return fail(
            "cgroup-memory",
            CgroupMemoryError(
                f"the CPU experts need {gib(plan.host_memory_needed)} but the container's cgroup "
                f"allows {gib(limit)}; raise the memory limit (docker --memory, Helm "
                "resources.limits.memory) or remove it"
            ),
        )
    return ok("cgroup-memory", f"need {gib(plan.host_memory_needed)}, cgroup allows {gib(limit)}")


def check_hugepages(host: HostFacts, plan: Plan, settings: Settings) -> Check:
    total = host.hugepages_total_bytes()
    free = host.hugepages_free_bytes()
    if not settings.get("hugepages"):
        return ok("hugepages", f"not required ({gib(total)} reserved, {gib(free)} free)")
    if free < plan.cpu_expert_bytes:
        state = "none are reserved" if total == 0 else f"{gib(free)} are free of {gib(total)}"
        return fail(
            "hugepages",
            HugepagesError(
                f"hugepages were required (KTHYBRID_HUGEPAGES) for {gib(plan.cpu_expert_bytes)} "
                f"of CPU experts but {state}; reserve them (e.g. vm.nr_hugepages) or unset "
                "KTHYBRID_HUGEPAGES"
            ),
        )
    return ok("hugepages", f"{gib(free)} free hugepages for {gib(plan.cpu_expert_bytes)}")


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
    if plan.argv and plan.argv[0] == "numactl" and shutil.which("numactl") is None:
        return fail(
            "numactl",
            MissingToolError(
                "numactl is not installed but the NUMA policy needs it; install it or set "
                "KTHYBRID_NUMA_POLICY=none"
            ),
        )
    return ok("numactl", "numactl available" if plan.argv[0] == "numactl" else "not needed")


def preflight_checks(
    host: HostFacts, targets: tuple[Target, ...], environ: Mapping[str, str]
) -> list[Check]:
    """Checks that need no model: GPU present, arch, driver, shm."""
    gpu = check_gpu_present(host)
    if gpu.error is not None:
        return [gpu]
    return [gpu, check_arch(host, targets, environ), check_driver(host, targets), check_shm(host)]


def plan_checks(host: HostFacts, plan: Plan, settings: Settings) -> list[Check]:
    return [
        check_host_memory(host, plan),
        check_cgroup_memory(host, plan),
        check_hugepages(host, plan, settings),
    ]


def first_failure(checks: list[Check]) -> LauncherError | None:
    return next((c.error for c in checks if c.error is not None), None)


def cache_dir_writable(environ: Mapping[str, str] = os.environ) -> bool:
    return check_cache(environ).status == "ok"
