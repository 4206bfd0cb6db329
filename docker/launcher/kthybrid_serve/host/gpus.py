"""The GPUs: NVML's view, or GPUs described with --gpu 'NAME,MEMORY,CC'."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from kthybrid_serve.units import parse_size

# The largest GPU memory a spec may claim; more is a typo (a missing unit, an extra 0).
MAX_GPU_BYTES = 4 * 1024**4


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU as NVML reports it, or as given with --gpu."""

    index: int
    name: str
    memory_bytes: int
    compute_capability: tuple[int, int]
    driver_version: str | None = None
    cuda_driver_version: int | None = None  # e.g. 12080 for CUDA 12.8
    numa_node: int | None = None
    pci_bus_id: str | None = None
    source: str = "nvml"  # "nvml" or "flag"

    @property
    def cc_text(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


def parse_gpu_spec(spec: str, index: int) -> Gpu:
    """`NAME,MEMORY,CC`, e.g. `NVIDIA GeForce RTX 5090,32GiB,12.0`; ValueError says why not."""
    parts = [p.strip() for p in spec.rsplit(",", 2)]
    shown = repr(spec if len(spec) <= 60 else spec[:60] + "...")
    if len(parts) != 3 or not parts[0]:
        raise ValueError(f"--gpu {shown}: expected NAME,MEMORY,CC (e.g. 'NVIDIA H200,141GiB,9.0')")
    if re.search(r"[\x00-\x1f\x7f]", parts[0]) or len(parts[0]) > 100:
        raise ValueError(f"--gpu {shown}: the name has control characters or is too long")
    match = re.fullmatch(r"([0-9]{1,2})\.([0-9])", parts[2])
    if match is None:
        raise ValueError(f"--gpu {shown}: compute capability must look like 12.0")
    memory = parse_size(parts[1])
    if not 1024**3 <= memory <= MAX_GPU_BYTES:
        raise ValueError(f"--gpu {shown}: memory must be between 1 GiB and 4 TiB, e.g. 32GiB")
    return Gpu(
        index=index,
        name=parts[0],
        memory_bytes=memory,
        compute_capability=(int(match.group(1)), int(match.group(2))),
        source="flag",
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_nvml_gpus(notes: list[str]) -> tuple[Gpu, ...]:
    """GPUs through NVML; an empty tuple (and a note) when there is no driver or no device."""
    try:
        import pynvml
    except ImportError:
        notes.append("nvidia-ml-py is not installed: cannot query GPUs")
        return ()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        notes.append(f"NVML init failed: {error}")
        return ()
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        try:
            cuda_driver: int | None = int(pynvml.nvmlSystemGetCudaDriverVersion())
        except pynvml.NVMLError:
            cuda_driver = None
        return tuple(
            _nvml_gpu(index, driver, cuda_driver, notes)
            for index in range(pynvml.nvmlDeviceGetCount())
        )
    except pynvml.NVMLError as error:
        notes.append(f"NVML query failed: {error}")
        return ()
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _nvml_gpu(index: int, driver: str, cuda_driver: int | None, notes: list[str]) -> Gpu:
    import pynvml  # already imported by read_nvml_gpus

    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    numa: int | None
    try:
        numa = int(pynvml.nvmlDeviceGetNumaNodeId(handle))
    except (pynvml.NVMLError, AttributeError) as error:
        # Not supported on every host (seen on an H200: NotSupported).
        numa = None
        notes.append(f"GPU {index}: NVML NUMA-node query unavailable ({error})")
    try:
        bus: str | None = _text(pynvml.nvmlDeviceGetPciInfo(handle).busId)
    except pynvml.NVMLError:
        bus = None
    return Gpu(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        memory_bytes=int(memory.total),
        compute_capability=(int(major), int(minor)),
        driver_version=driver,
        cuda_driver_version=cuda_driver,
        numa_node=numa if numa is not None and numa >= 0 else None,
        pci_bus_id=bus,
    )
