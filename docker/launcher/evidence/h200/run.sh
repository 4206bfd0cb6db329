#!/usr/bin/env bash
# What was run on the borrowed H200 (from the repo root of a checkout, no image, no install):
#   bash docker/launcher/evidence/h200/run.sh "$OUT"
# It builds two sparse model dirs in /tmp (a tiny MoE and one with DeepSeek-V4-Flash's
# real dimensions), then records NVML/CPU facts and what doctor and plan say.
set -u
out=${1:?usage: run.sh OUTDIR}
mkdir -p "$out"
export PYTHONPATH=docker/launcher:tests/launcher
py=${PYTHON:-python3}
$py - <<'PY'
from pathlib import Path
from launcher_fixtures import ModelSpec, build_model
build_model(Path("/tmp/kthybrid-models/tiny-moe"), ModelSpec(layers=4, experts=16, shards=3, nextn=0))
build_model(Path("/tmp/kthybrid-models/DeepSeek-V4-Flash"), ModelSpec())
PY
run() { name=$1; shift; "$@" >"$out/$name.out" 2>"$out/$name.err"; echo "$?" >"$out/$name.rc"; }
run nvidia-smi nvidia-smi -q
run lscpu lscpu
run python-version $py -c 'import sys, pynvml; print(sys.version); print(pynvml.__file__)'
run doctor-tiny $py -m kthybrid_serve doctor --model /tmp/kthybrid-models/tiny-moe
run doctor-tiny-json $py -m kthybrid_serve doctor --model /tmp/kthybrid-models/tiny-moe --json
run plan-tiny $py -m kthybrid_serve plan --model /tmp/kthybrid-models/tiny-moe
run plan-tiny-json $py -m kthybrid_serve plan --model /tmp/kthybrid-models/tiny-moe --json
run plan-v4flash $py -m kthybrid_serve plan --model /tmp/kthybrid-models/DeepSeek-V4-Flash
run doctor-v4flash $py -m kthybrid_serve doctor --model /tmp/kthybrid-models/DeepSeek-V4-Flash
KTHYBRID_TARGET=sm90 KTHYBRID_TARGET_CC=9.0 run plan-tiny-as-sm90-image \
  $py -m kthybrid_serve plan --model /tmp/kthybrid-models/tiny-moe --json
KTHYBRID_TARGET=sm120 KTHYBRID_TARGET_CC=12.0 run plan-tiny-as-sm120-image \
  $py -m kthybrid_serve plan --model /tmp/kthybrid-models/tiny-moe
run bench $py bench/plan.py --output "$out/bench-plan.json"
du -sh /tmp/kthybrid-models >"$out/model-disk-usage.txt"
