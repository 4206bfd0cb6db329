"""Where kt-kernel's expert buffers land with each hugepage setting, and the GB/s with each.

Each variant is one run of the launcher's kt-kernel worker (kthybrid_serve.cpubench.worker:
single-token decode MoE over synthetic experts, MXFP4 at DeepSeek-V4-Flash's expert shapes by
default) with a working set of a third of the host's RAM unless told otherwise. The worker
reads /proc/self/smaps_rollup before and after loading; the growth of AnonHugePages (THP) and
Private_Hugetlb (hugetlb pages) against the bytes of experts loaded says where they landed.

Variants: THP never / madvise / always with no tunable, GLIBC_TUNABLES=glibc.malloc.hugetlb=1
(malloc madvises its mmap'd chunks), =2 (MAP_HUGETLB, the default hugepage size) with no pool
and with a reserved 2 MiB pool, and =1073741824 with a reserved 1 GiB pool.

Runs as root on the host: it switches the THP mode and reserves pools, and puts both back as
they were. Variants that need what this host cannot do (a read-only THP switch, a pool the
kernel will not reserve) are reported as not run, with the reason.

    .venv/bin/python bench/hugepages.py --image kthybrid:sm120 --host-name avx512-dev
    python3 bench/hugepages.py --host-name amx-h200host --threads 13   # kt-kernel importable
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kthybrid_serve.cpubench.sweep import run_worker, worker_env
from kthybrid_serve.cpubench.worker import RunSpec
from kthybrid_serve.model.experts import bytes_per_expert
from kthybrid_serve.units import GIB, MIB, parse_size

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "docker" / "launcher"

THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
THP_DEFRAG = Path("/sys/kernel/mm/transparent_hugepage/defrag")
POOLS = Path("/sys/kernel/mm/hugepages")
HUGETLB_1 = "glibc.malloc.hugetlb=1"
HUGETLB_2 = "glibc.malloc.hugetlb=2"
HUGETLB_1G = f"glibc.malloc.hugetlb={GIB}"


@dataclass(frozen=True)
class Variant:
    name: str
    thp: str | None  # None: leave the host's mode
    tunables: str | None
    pool_page: int | None = None  # reserve a pool of this page size for the run


# Most telling first: a run cut short by a time limit keeps the ones that matter.
VARIANTS = (
    Variant("thp-madvise", "madvise", None),
    Variant("thp-madvise + hugetlb=1", "madvise", HUGETLB_1),
    Variant("hugetlb=2, 2 MiB pool", None, HUGETLB_2, 2 * MIB),
    Variant("hugetlb=1GiB, 1 GiB pool", None, HUGETLB_1G, GIB),
    Variant("thp-always", "always", None),
    Variant("thp-never", "never", None),
    Variant("hugetlb=2, no pool", None, HUGETLB_2),
    Variant("thp-never + hugetlb=1", "never", HUGETLB_1),
)


def thp_mode() -> str:
    text = THP_ENABLED.read_text()
    return text[text.index("[") + 1 : text.index("]")]


def set_thp(mode: str) -> str | None:
    """Switch THP; None on success, else why not."""
    try:
        THP_ENABLED.write_text(mode)
    except OSError as error:
        return f"cannot set THP to {mode}: {error.strerror}"
    return None if thp_mode() == mode else f"THP stayed {thp_mode()} after writing {mode}"


def pool_file(page: int, name: str) -> Path:
    return POOLS / f"hugepages-{page // 1024}kB" / name


def pool_pages(page: int) -> int:
    return int(pool_file(page, "nr_hugepages").read_text())


def set_pool(page: int, count: int) -> int:
    """Ask for `count` pages of `page` bytes; the kernel reserves what it can. Returns that."""
    if count:  # free page cache and defragment first, so that large pages can be found
        for knob, value in (("drop_caches", "3"), ("compact_memory", "1")):
            with contextlib.suppress(OSError):
                Path("/proc/sys/vm", knob).write_text(value)
    pool_file(page, "nr_hugepages").write_text(str(count))
    return pool_pages(page)


def meminfo() -> dict[str, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def where(loaded: int, thp: int, hugetlb: int) -> str:
    if hugetlb >= 0.9 * loaded:
        return "hugetlb pages"
    if thp >= 0.9 * loaded:
        return "transparent hugepages"
    if max(thp, hugetlb) <= 0.1 * loaded:
        return "4 KiB pages"
    return "mixed"


def run_variant(
    variant: Variant, spec: RunSpec, python: list[str], timeout: float, need: int
) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": variant.name, "glibc_tunables": variant.tunables}
    original_thp = thp_mode()
    pool_before = pool_pages(variant.pool_page) if variant.pool_page else None
    try:
        if variant.thp and variant.thp != original_thp:
            problem = set_thp(variant.thp)
            if problem:
                entry["error"] = f"not run: {problem}"
                return entry
        entry["thp_enabled"] = thp_mode()
        if variant.pool_page:
            page = variant.pool_page
            if not pool_file(page, "nr_hugepages").exists():
                entry["error"] = f"not run: this kernel has no {page // MIB} MiB hugepages"
                return entry
            wanted = math.ceil(need / page)
            try:
                reserved = set_pool(page, wanted)
            except OSError as error:
                entry["error"] = f"not run: cannot reserve the pool: {error.strerror}"
                return entry
            entry["pool"] = {"page_bytes": page, "requested": wanted, "reserved": reserved}
            if reserved < wanted:
                entry["error"] = (
                    f"not run: the kernel reserved {reserved} of {wanted} {page // MIB} MiB pages "
                    "(memory too fragmented or too small)"
                )
                return entry
        extra = {"GLIBC_TUNABLES": variant.tunables} if variant.tunables else {}
        command = python
        if python[0] == "docker":
            command = [python[0], python[1], *(f"-e{k}={v}" for k, v in extra.items()), *python[2:]]
        result = run_worker(spec, worker_env(os.environ, extra), timeout, command)
    finally:
        if variant.pool_page and pool_before is not None:
            set_pool(variant.pool_page, pool_before)
        if thp_mode() != original_thp:
            set_thp(original_thp)
    if not result.get("ok"):
        entry["error"] = result.get("error")
        return entry
    before, after = result["smaps_before_load"], result["smaps_after_load"]
    loaded = int(result["loaded_bytes"])
    thp = after["AnonHugePages"] - before["AnonHugePages"]
    hugetlb = after["Private_Hugetlb"] - before["Private_Hugetlb"]
    entry.update(
        loaded_bytes=loaded,
        anon_huge_pages_bytes=thp,
        private_hugetlb_bytes=hugetlb,
        rss_growth_bytes=after["Rss"] - before["Rss"],
        on_thp=round(thp / loaded, 3),
        on_hugetlb=round(hugetlb / loaded, 3),
        lands_on=where(loaded, thp, hugetlb),
        gbps=result["gbps"],
        gbps_segments=result["gbps_segments"],
        load_seconds=result["load_seconds"],
        cpu_variant=result["cpu_variant"],
        moe_class=result["moe_class"],
        glibc=result.get("glibc"),
    )
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host-name", required=True, help="names the output file")
    parser.add_argument("--image", help="run each worker in this image (docker run)")
    parser.add_argument("--working-set", help="expert bytes to load (default: a third of RAM)")
    parser.add_argument("--threads", type=int, default=0, help="kt-kernel threads (default: cores)")
    parser.add_argument("--node", type=int, default=0)
    parser.add_argument("--method", default="MXFP4")
    parser.add_argument("--shape", default="4096,2048,6", help="HIDDEN,INTERMEDIATE,TOP_K")
    parser.add_argument("--experts", type=int, default=64, help="experts per synthetic layer")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--only", nargs="*", help="names of the variants to run")
    parser.add_argument("--output", help="default: bench/results/hugepages-<host-name>.json")
    args = parser.parse_args()
    # A time limit's SIGTERM unwinds: workers are killed and THP and pools are put back.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        parser.error("run as root: it switches THP and reserves hugepage pools")

    hidden, inter, top_k = (int(p) for p in args.shape.split(","))
    total = meminfo()["MemTotal"]
    target = parse_size(args.working_set) if args.working_set else math.ceil(total / 3)
    expert = bytes_per_expert(args.method, hidden, inter)
    layers = math.ceil(target / (args.experts * expert))
    threads = args.threads or len(os.sched_getaffinity(0))
    spec = RunSpec(
        method=args.method, hidden=hidden, intermediate=inter, top_k=top_k,
        experts=args.experts, layers=layers, pools=((args.node, threads),), seconds=args.seconds,
    )  # fmt: skip
    loaded = layers * args.experts * expert
    # kt-kernel stages one layer while it loads it; the staging comes from the pool too.
    need = int((loaded + args.experts * expert) * 1.05)
    python = [sys.executable]
    if args.image:
        python = [
            "docker", "run", "--rm", "--network=none", "--entrypoint=python",
            f"-v={LAUNCHER}:/kthybrid-launcher:ro", "-e=PYTHONPATH=/kthybrid-launcher",
            args.image,
        ]  # fmt: skip
    timeout = 300 + 30 * loaded / GIB
    print(
        f"{len(args.only or VARIANTS)} variant(s), {loaded / GIB:.1f} GiB of {args.method} "
        "experts each "
        f"({layers} layers x {args.experts} x {expert / MIB:.1f} MiB), {threads} threads",
        flush=True,
    )
    host = {
        "name": args.host_name,
        "kernel": platform.release(),
        "mem_total_bytes": total,
        "thp_enabled": THP_ENABLED.read_text().strip(),
        "thp_defrag": THP_DEFRAG.read_text().strip() if THP_DEFRAG.exists() else None,
        "hugepage_sizes": sorted(int(p.name.split("-")[1][:-2]) * 1024 for p in POOLS.iterdir()),
        "runner": f"docker image {args.image}" if args.image else sys.executable,
    }
    variants = [v for v in VARIANTS if not args.only or v.name in args.only]
    output = Path(args.output or REPO / "bench" / "results" / f"hugepages-{args.host_name}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    document = {"host": host, "spec": spec.to_json(), "loaded_bytes": loaded, "variants": results}
    for variant in variants:
        print(f"- {variant.name} ...", flush=True)
        entry = run_variant(variant, spec, python, timeout, need)
        results.append(entry)
        output.write_text(json.dumps(document, indent=2) + "\n")  # after each: a cut run keeps some
        if entry.get("error"):
            print(f"  {entry['error']}", flush=True)
        else:
            print(
                f"  {entry['lands_on']}: THP {entry['on_thp']:.0%}, hugetlb "
                f"{entry['on_hugetlb']:.0%} of {loaded / GIB:.1f} GiB; {entry['gbps']:.1f} GB/s "
                f"(load {entry['load_seconds']:.0f} s)",
                flush=True,
            )
    print(f"-> {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
