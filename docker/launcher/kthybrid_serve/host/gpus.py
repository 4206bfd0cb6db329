"""The GPUs: NVML's view, or GPUs described with --gpu 'NAME,MEMORY,CC'."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, replace

from kthybrid_serve.host.hostfs import HostTree
from kthybrid_serve.units import parse_size

# The largest GPU memory a spec may claim; more is a typo (a missing unit, an extra 0).
MAX_GPU_BYTES = 4 * 1024**4
PCI_DEVICES = "/sys/bus/pci/devices"
NVIDIA_VENDOR = "0x10de"


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
    uuid: str | None = None  # NVML's GPU-...: the same on the host and in any container

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
    try:
        uuid: str | None = _text(pynvml.nvmlDeviceGetUUID(handle))
    except pynvml.NVMLError:
        uuid = None
    return Gpu(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        memory_bytes=int(memory.total),
        compute_capability=(int(major), int(minor)),
        driver_version=driver,
        cuda_driver_version=cuda_driver,
        numa_node=numa if numa is not None and numa >= 0 else None,
        pci_bus_id=bus,
        uuid=uuid,
    )


def _pci_address(bus_id: str) -> str:
    """NVML's "00000000:17:00.0" as sysfs names it: "0000:17:00.0"."""
    domain, _, rest = bus_id.strip().lower().partition(":")
    return f"{domain[-4:].rjust(4, '0')}:{rest}"


def nvidia_pci_nodes(tree: HostTree) -> list[tuple[str, int | None]]:
    """(address, NUMA node or None) of each NVIDIA display/3D function, in bus order.

    The kernel writes -1 to numa_node when the firmware does not say; that is None here.
    NVML numbers GPUs in this order (nvidia-smi's index, Docker's device_ids).
    """
    directory = tree.path(PCI_DEVICES)
    if not directory.is_dir():
        return []
    found: list[tuple[str, int | None]] = []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if not re.fullmatch(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", entry.name):
            continue
        base = f"{PCI_DEVICES}/{entry.name}"
        vendor = (tree.read(f"{base}/vendor") or "").strip().lower()
        # Class 0x03xxxx: display controllers (VGA 0x0300, 3D 0x0302); not audio or NVSwitch.
        if vendor != NVIDIA_VENDOR or not (tree.read(f"{base}/class") or "").startswith("0x03"):
            continue
        node = tree.read_int(f"{base}/numa_node", low=-1, high=1023)
        found.append((entry.name, None if node is None or node < 0 else node))
    return found


def with_pci_affinity(tree: HostTree, gpus: tuple[Gpu, ...], notes: list[str]) -> tuple[Gpu, ...]:
    """GPUs with their NUMA node from /sys/bus/pci/devices/<address>/numa_node where NVML had none.

    An NVML GPU is found by its bus id. GPUs given with --gpu have none: they are taken to be
    the host tree's NVIDIA devices in bus order when the counts agree (a note says so).
    """
    functions = nvidia_pci_nodes(tree)
    if not functions:
        return gpus
    by_address = dict(functions)
    result = []
    for gpu in gpus:
        if gpu.numa_node is not None:
            result.append(gpu)
        elif gpu.pci_bus_id is not None:
            result.append(replace(gpu, numa_node=by_address.get(_pci_address(gpu.pci_bus_id))))
        elif len(functions) == len(gpus):
            address, node = functions[gpu.index]
            result.append(replace(gpu, numa_node=node, pci_bus_id=address))
        else:
            result.append(gpu)
    if any(g.source == "flag" for g in gpus):
        matched = len(functions) == len(gpus)
        notes.append(
            f"--gpu GPUs taken to be the host tree's {len(functions)} NVIDIA PCI device(s) in bus "
            "order, for their NUMA nodes" if matched else
            f"--gpu names {len(gpus)} GPU(s) but the host tree has {len(functions)} NVIDIA PCI "
            "device(s): their NUMA nodes are unknown"
        )  # fmt: skip
    return tuple(result)
