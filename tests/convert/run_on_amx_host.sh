#!/usr/bin/env bash
# The converter's evidence on an AMX host (the borrowed H200 machine: Python 3.12, torch,
# kt-kernel 0.7.2's cp312 build on PYTHONPATH), written as one JSON file.
#
#   tests/convert/run_on_amx_host.sh CARRIED OUT_JSON [BENCH_ARGS...]
#
# CARRIED holds tiny/ (mxfp4_checkpoint.py's checkpoint) and made-elsewhere/p1, p2: what the
# converter made of it in the kthybrid image on a CPU without AMX, 1 and 2 pools. Here:
#  1. convert tiny/ again with kt-kernel's AMX build, 1 and 2 pools;
#  2. compare those files byte for byte with the ones made elsewhere;
#  3. verify_amxint4.py on all four outputs (kt-kernel's AMX forward vs float64);
#  4. bench/convert_layer.py: one layer of V4-Flash's shape, GPU and CPU dequantization.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
carried="$1"
out_json="$2"
bench_args=("${@:3}")  # e.g. --experts 8 where the machine lacks the memory for 256
work="$(mktemp -d /tmp/kthybrid-convert.XXXXXX)"
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$repo/docker/launcher:$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
threads="$(nproc)"

for pools in 1 2; do
  python3 - "$carried/tiny" "$work/p$pools" "$threads" "$pools" <<'EOF'
import sys
from pathlib import Path
from kthybrid_serve.convert import ConvertRequest, convert, plan_conversion
model, output, threads, pools = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
convert(plan_conversion(ConvertRequest(model, output, threads, (0,) * pools)), sys.stderr)
EOF
done

verify() {
  python3 "$here/verify_amxint4.py" "$carried/tiny" "$2" --threads "$threads" \
    >"$work/verify-$1.json" || echo "verify $1: failed (exit $?)"
}
verify made-here-p1 "$work/p1"
verify made-here-p2 "$work/p2"
verify made-without-amx-p1 "$carried/made-elsewhere/p1"
verify made-without-amx-p2 "$carried/made-elsewhere/p2"

python3 "$repo/bench/convert_layer.py" --workdir "$work/bench" --also-cpu \
  --output "$work/bench.json" "${bench_args[@]}" >/dev/null || echo "bench: failed (exit $?)"

python3 - "$work" "$carried" "$out_json" <<'EOF'
import hashlib, json, sys
from pathlib import Path
work, carried, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
OWN = {"kthybrid-convert.json", "kthybrid-layer.json"}  # the converter's bookkeeping

def digests(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.kt"))
    }

identity = {}
for pools in (1, 2):
    here, there = digests(work / f"p{pools}"), digests(carried / "made-elsewhere" / f"p{pools}")
    differing = sorted(k for k in set(here) | set(there) if here.get(k) != there.get(k))
    identity[f"pools_{pools}"] = {"files": len(here), "differing": differing[:5],
                                  "identical": not differing and bool(here)}
verify = {}
for path in sorted(work.glob("verify-*.json")):
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    verify[path.stem.removeprefix("verify-")] = json.loads(lines[-1]) if lines else None
checked = [v for v in verify.values() if v]
worst = max(checked, key=lambda v: v["worst_err_over_tolerance"]) if checked else {}
bench = work / "bench.json"
result = {
    "what": "kthybrid-serve convert on an AMX host: MXFP4 -> AMX-INT4, verified by kt-kernel's "
            "AMX forward against float64, and one V4-Flash-shaped layer timed",
    "cpu_variant": worst.get("cpu_variant"),
    "max_abs_err": worst.get("max_abs_err"),
    "tolerance": worst.get("tolerance"),
    "ok": len(checked) == 4 and all(v["ok"] for v in checked)
          and all(i["identical"] for i in identity.values()),
    "verification": verify,
    "same_bytes_as_made_without_amx": identity,
    "timing": json.loads(bench.read_text()) if bench.exists() else None,
}
out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
print(json.dumps({k: result[k] for k in ("cpu_variant", "max_abs_err", "tolerance", "ok")}))
EOF
