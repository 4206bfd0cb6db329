"""Builders of host trees (sysfs, procfs, cgroup files as the kernel writes them) and model dirs.

Model directories get real safetensors headers and sparse data regions (truncate),
so their apparent size is the real checkpoint's while they use a few MB of disk.
Build them in temporary directories only: copying them without keeping holes
writes the full size.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

RTX5090 = "NVIDIA GeForce RTX 5090,32607MiB,12.0"
RTX4090 = "NVIDIA GeForce RTX 4090,24564MiB,8.9"
H200 = "NVIDIA H200,143771MiB,9.0"

GB = 1000**3
GIB = 1024**3

SPR_FLAGS = (
    "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl "
    "avx512_vnni avx512_vbmi avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8"
)
ZEN4_FLAGS = (
    "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl "
    "avx512_vnni avx512_vbmi avx512_bf16"
)
AVX2_FLAGS = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma"
ICELAKE_FLAGS = (
    "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl "
    "avx512_vnni avx512_vbmi"
)


@dataclass
class HostSpec:
    """A machine: sockets x NUMA nodes per socket x cores per node, optionally with SMT."""

    sockets: int = 1
    nodes_per_socket: int = 1
    cores_per_node: int = 8
    smt: bool = True
    mem_bytes: int = 256 * GB
    mem_available_fraction: float = 0.95
    flags: str = SPR_FLAGS
    model_name: str = "Intel(R) Xeon(R) Platinum 8462Y+"
    cgroup: str = "v2"  # v2, v1, none
    cgroup_cpus: str | None = None  # cpuset; None: every CPU
    cgroup_memory: int | None = None
    cgroup_path: str = "/"
    affinity: str | None = None
    shm_size: str | None = "16g"  # None: tmpfs without size= (half of RAM)
    memlock: str = "unlimited"
    hugepages_2m: int = 0
    hugepages_1g: int = 0
    numa_sysfs: bool = True
    cpu_quota: tuple[int, int] | None = None  # (quota, period) in microseconds
    cgroup_mems: str | None = None  # cpuset.mems.effective; None: every node
    memory_high: int | None = None
    isolated: str = ""  # /sys/devices/system/cpu/isolated
    nohz_full: str = ""
    cpuless_nodes: int = 0  # memory-only nodes (CXL expanders) after the CPU nodes
    # NVIDIA GPUs in /sys/bus/pci/devices, in bus order: each one's numa_node (-1: unknown)
    gpu_nodes: tuple[int, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def nodes(self) -> int:
        return self.sockets * self.nodes_per_socket

    @property
    def cores(self) -> int:
        return self.nodes * self.cores_per_node

    @property
    def cpus(self) -> int:
        return self.cores * (2 if self.smt else 1)


def _write(root: Path, path: str, text: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def _cpulist(cpus: list[int]) -> str:
    ranges: list[str] = []
    for cpu in sorted(cpus):
        if ranges and "-" in ranges[-1] and int(ranges[-1].split("-")[1]) == cpu - 1:
            ranges[-1] = f"{ranges[-1].split('-')[0]}-{cpu}"
        elif ranges and "-" not in ranges[-1] and int(ranges[-1]) == cpu - 1:
            ranges[-1] = f"{ranges[-1]}-{cpu}"
        else:
            ranges.append(str(cpu))
    return ",".join(ranges)


def build_host(root: Path, spec: HostSpec) -> Path:
    """Write the host tree; Linux numbers all first threads, then all SMT siblings."""
    root.mkdir(parents=True, exist_ok=True)
    cores = spec.cores
    node_cpus: dict[int, list[int]] = {n: [] for n in range(spec.nodes)}
    for cpu in range(spec.cpus):
        core = cpu % cores
        node = core // spec.cores_per_node
        package = node // spec.nodes_per_socket
        core_id = core % (spec.cores_per_node * spec.nodes_per_socket)
        siblings = [core, core + cores] if spec.smt else [core]
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        _write(root, f"{base}/core_id", f"{core_id}\n")
        _write(root, f"{base}/physical_package_id", f"{package}\n")
        _write(root, f"{base}/thread_siblings_list", f"{_cpulist(siblings)}\n")
        node_cpus[node].append(cpu)
    _write(root, "/sys/devices/system/cpu/online", f"0-{spec.cpus - 1}\n")
    node_mem_kb = spec.mem_bytes // spec.nodes // 1024
    for extra_node in range(spec.nodes, spec.nodes + spec.cpuless_nodes):
        node_cpus[extra_node] = []
    if spec.numa_sysfs:
        for node, cpus in node_cpus.items():
            base = f"/sys/devices/system/node/node{node}"
            _write(root, f"{base}/cpulist", f"{_cpulist(cpus)}\n")
            _write(
                root,
                f"{base}/meminfo",
                f"Node {node} MemTotal:       {node_mem_kb} kB\n"
                f"Node {node} MemFree:        {int(node_mem_kb * 0.9)} kB\n"
                f"Node {node} HugePages_Total:  {spec.hugepages_2m // spec.nodes}\n",
            )
            pages = f"{base}/hugepages/hugepages-2048kB"
            _write(root, f"{pages}/nr_hugepages", f"{spec.hugepages_2m // spec.nodes}\n")
            _write(root, f"{pages}/free_hugepages", f"{spec.hugepages_2m // spec.nodes}\n")
            gig = f"{base}/hugepages/hugepages-1048576kB"
            _write(root, f"{gig}/nr_hugepages", f"{spec.hugepages_1g // spec.nodes}\n")
            _write(root, f"{gig}/free_hugepages", f"{spec.hugepages_1g // spec.nodes}\n")
        _write(root, "/sys/devices/system/node/online", f"0-{len(node_cpus) - 1}\n")
    _write(root, "/sys/devices/system/cpu/isolated", f"{spec.isolated}\n")
    _write(root, "/sys/devices/system/cpu/nohz_full", f"{spec.nohz_full}\n")
    mem_kb = spec.mem_bytes // 1024
    # Reserved hugepages are not available to ordinary allocations.
    huge_kb = spec.hugepages_2m * 2048 + spec.hugepages_1g * 1024 * 1024
    _write(
        root,
        "/proc/meminfo",
        f"MemTotal:       {mem_kb + spec.cpuless_nodes * node_mem_kb} kB\n"
        f"MemFree:        {int(mem_kb * 0.9)} kB\n"
        f"MemAvailable:   {max(0, int(mem_kb * spec.mem_available_fraction) - huge_kb)} kB\n"
        f"HugePages_Total:   {spec.hugepages_2m}\n"
        f"HugePages_Free:    {spec.hugepages_2m}\n"
        "Hugepagesize:       2048 kB\n",
    )
    blocks = []
    for cpu in range(spec.cpus):
        core = cpu % cores
        blocks.append(
            f"processor\t: {cpu}\nvendor_id\t: GenuineIntel\nmodel name\t: {spec.model_name}\n"
            f"physical id\t: {core // spec.cores_per_node // spec.nodes_per_socket}\n"
            f"core id\t\t: {core % (spec.cores_per_node * spec.nodes_per_socket)}\n"
            f"flags\t\t: {spec.flags}\n"
        )
    _write(root, "/proc/cpuinfo", "\n".join(blocks) + "\n")
    cpuset = spec.cgroup_cpus or f"0-{spec.cpus - 1}"
    if spec.cgroup == "v2":
        _write(root, "/proc/self/cgroup", f"0::{spec.cgroup_path}\n")
        base = "/sys/fs/cgroup" + ("" if spec.cgroup_path == "/" else spec.cgroup_path)
        _write(root, "/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids\n")
        _write(root, f"{base}/cpuset.cpus.effective", f"{cpuset}\n")
        memory = "max" if spec.cgroup_memory is None else str(spec.cgroup_memory)
        _write(root, f"{base}/memory.max", f"{memory}\n")
        high = "max" if spec.memory_high is None else str(spec.memory_high)
        _write(root, f"{base}/memory.high", f"{high}\n")
        quota = "max 100000" if spec.cpu_quota is None else "{} {}".format(*spec.cpu_quota)
        _write(root, f"{base}/cpu.max", f"{quota}\n")
        mems = spec.cgroup_mems or f"0-{spec.nodes + spec.cpuless_nodes - 1}"
        _write(root, f"{base}/cpuset.mems.effective", f"{mems}\n")
    elif spec.cgroup == "v1":
        path = spec.cgroup_path
        _write(
            root,
            "/proc/self/cgroup",
            f"12:cpuset:{path}\n11:memory:{path}\n10:cpu,cpuacct:{path}\n1:name=systemd:{path}\n",
        )
        suffix = "" if path == "/" else path
        _write(root, f"/sys/fs/cgroup/cpuset{suffix}/cpuset.effective_cpus", f"{cpuset}\n")
        _write(root, f"/sys/fs/cgroup/cpuset{suffix}/cpuset.cpus", f"{cpuset}\n")
        limit = 9223372036854771712 if spec.cgroup_memory is None else spec.cgroup_memory
        _write(root, f"/sys/fs/cgroup/memory{suffix}/memory.limit_in_bytes", f"{limit}\n")
        cfs_quota, cfs_period = spec.cpu_quota or (-1, 100000)
        _write(root, f"/sys/fs/cgroup/cpu,cpuacct{suffix}/cpu.cfs_quota_us", f"{cfs_quota}\n")
        _write(root, f"/sys/fs/cgroup/cpu,cpuacct{suffix}/cpu.cfs_period_us", f"{cfs_period}\n")
        if spec.cgroup_mems:
            _write(
                root,
                f"/sys/fs/cgroup/cpuset{suffix}/cpuset.effective_mems",
                f"{spec.cgroup_mems}\n",
            )
    _write(
        root,
        "/proc/self/status",
        f"Name:\tkthybrid-serve\nCpus_allowed_list:\t{spec.affinity or cpuset}\n",
    )
    shm_opts = "rw,nosuid,nodev,noexec,relatime" + (
        f",size={spec.shm_size}" if spec.shm_size else ""
    )
    _write(
        root,
        "/proc/self/mounts",
        "overlay / overlay rw,relatime,lowerdir=/l,upperdir=/u,workdir=/w 0 0\n"
        "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
        f"shm /dev/shm tmpfs {shm_opts},inode64 0 0\n"
        "cgroup /sys/fs/cgroup cgroup2 ro,nosuid,nodev,noexec,relatime 0 0\n",
    )
    memlock = spec.memlock
    _write(
        root,
        "/proc/self/limits",
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max cpu time              unlimited            unlimited            seconds   \n"
        f"Max locked memory         {memlock:<21}{memlock:<21}bytes     \n"
        "Max open files            1048576              1048576              files     \n",
    )
    for i, node in enumerate(spec.gpu_nodes):
        # A 3D controller per bus, then its audio-less neighbour: an Intel NIC (not a GPU).
        for address, vendor, klass in (
            (f"0000:{0x17 + 0x20 * i:02x}:00.0", "0x10de", "0x030200"),
            (f"0000:{0x18 + 0x20 * i:02x}:00.0", "0x8086", "0x020000"),
        ):
            base = f"/sys/bus/pci/devices/{address}"
            _write(root, f"{base}/vendor", f"{vendor}\n")
            _write(root, f"{base}/class", f"{klass}\n")
            _write(root, f"{base}/numa_node", f"{node}\n")
    for path, text in spec.extra.items():
        _write(root, path, text)
    return root


# -- model directories ------------------------------------------------------------

DTYPE_BYTES = {"BF16": 2, "F32": 4, "F8_E4M3": 1, "F8_E8M0": 1, "I8": 1, "U8": 1}


@dataclass
class ModelSpec:
    """A DeepSeek-V4-Flash shaped checkpoint (defaults: the real dimensions)."""

    layers: int = 43
    experts: int = 256
    hidden: int = 4096
    inter: int = 2048
    top_k: int = 6
    vocab: int = 129280
    nextn: int = 1
    shards: int = 46
    attention_bytes_per_layer: int = 150 * 1000**2
    # Another MoE model type (e.g. "qwen3_moe") has no DeepSeek-V4 run-time needs.
    model_type: str = "deepseek_v4"
    architecture: str = "DeepseekV4ForCausalLM"


def _tensor(name: str, dtype: str, shape: list[int]) -> tuple[str, str, list[int], int]:
    size = DTYPE_BYTES[dtype]
    for dim in shape:
        size *= dim
    return name, dtype, shape, size


def _expert_tensors(prefix: str, spec: ModelSpec) -> list[tuple[str, str, list[int], int]]:
    result = []
    for expert in range(spec.experts):
        for proj, (n, k) in (
            ("w1", (spec.inter, spec.hidden)),
            ("w3", (spec.inter, spec.hidden)),
            ("w2", (spec.hidden, spec.inter)),
        ):
            base = f"{prefix}.ffn.experts.{expert}.{proj}"
            result.append(_tensor(f"{base}.weight", "I8", [n, k // 2]))
            result.append(_tensor(f"{base}.scale", "F8_E8M0", [n, k // 32]))
    return result


def _layer_tensors(prefix: str, spec: ModelSpec) -> list[tuple[str, str, list[int], int]]:
    rows = spec.attention_bytes_per_layer // spec.hidden
    tensors = [
        _tensor(f"{prefix}.attn.wo_a.weight", "F8_E4M3", [rows, spec.hidden]),
        _tensor(f"{prefix}.attn_norm.weight", "BF16", [spec.hidden]),
        _tensor(f"{prefix}.ffn.gate.weight", "BF16", [spec.experts, spec.hidden]),
    ]
    for proj in ("w1", "w2", "w3"):
        tensors.append(
            _tensor(
                f"{prefix}.ffn.shared_experts.{proj}.weight", "F8_E4M3", [spec.inter, spec.hidden]
            )
        )
    return tensors + _expert_tensors(prefix, spec)


def write_safetensors(path: Path, tensors: list[tuple[str, str, list[int], int]]) -> None:
    """A real safetensors header followed by a sparse data region of the right size."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape, size in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        handle.truncate(8 + len(raw) + offset)


def build_model(directory: Path, spec: ModelSpec | None = None) -> Path:
    spec = spec or ModelSpec()
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": [spec.architecture],
        "model_type": spec.model_type,
        "hidden_size": spec.hidden,
        "moe_intermediate_size": spec.inter,
        "n_routed_experts": spec.experts,
        "n_shared_experts": 1,
        "num_experts_per_tok": spec.top_k,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": 64,
        "num_key_value_heads": 1,
        "head_dim": 512,
        "qk_rope_head_dim": 64,
        "q_lora_rank": 1024,
        "o_lora_rank": 1024,
        "vocab_size": spec.vocab,
        "num_nextn_predict_layers": spec.nextn,
        "max_position_embeddings": 1048576,
        "expert_dtype": "fp4",
        "torch_dtype": "bfloat16",
        "quantization_config": {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "scale_fmt": "ue8m0",
            "weight_block_size": [128, 128],
        },
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    groups: list[list[tuple[str, str, list[int], int]]] = [
        [
            _tensor("embed.weight", "BF16", [spec.vocab, spec.hidden]),
            _tensor("head.weight", "BF16", [spec.vocab, spec.hidden]),
            _tensor("norm.weight", "BF16", [spec.hidden]),
        ]
    ]
    groups += [_layer_tensors(f"layers.{layer}", spec) for layer in range(spec.layers)]
    groups += [_layer_tensors(f"mtp.{i}", spec) for i in range(spec.nextn)]
    shards = min(spec.shards, len(groups))
    per_shard: list[list[tuple[str, str, list[int], int]]] = [[] for _ in range(shards)]
    for index, group in enumerate(groups):
        per_shard[index * shards // len(groups)].extend(group)
    weight_map = {}
    total = 0
    for index, tensors in enumerate(per_shard):
        name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(directory / name, tensors)
        for tensor_name, _, _, size in tensors:
            weight_map[tensor_name] = name
            total += size
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return directory


def build_amx_weights(directory: Path, layers: int, numa: int, experts: int = 4) -> Path:
    """Converted AMXINT4 layout (`--no-merge-safetensor`): _layer_L/_numa_N/*.kt files."""
    for layer in range(layers):
        for node in range(numa):
            base = directory / f"_layer_{layer}" / f"_numa_{node}"
            base.mkdir(parents=True, exist_ok=True)
            for expert in range(experts):
                for proj in ("gate", "up", "down"):
                    with (base / f"INT4_{proj}_{expert}_quant_.kt").open("wb") as handle:
                        handle.truncate(1024 * 1024)
    return directory


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    @property
    def json(self) -> dict[str, object]:
        data = json.loads(self.out)
        assert isinstance(data, dict)
        return data
