#!/usr/bin/env bash
# What was run on the borrowed H200 (from the repo root of a checkout, no image, no install):
#   bash docker/launcher/evidence/h200/run.sh OUTDIR
# It builds two sparse model dirs in /tmp (a tiny MoE and one with DeepSeek-V4-Flash's
# real dimensions), then records NVML/CPU/cgroup facts, what doctor and plan say, and
# `tune` followed by `plan` (kt-kernel from $KT_PATH, the cp312 wheel's package).
set -u
out=${1:?usage: run.sh OUTDIR}
mkdir -p "$out"
export PYTHONPATH=docker/launcher:.${KT_PATH:+:$KT_PATH}
export XDG_CACHE_HOME=/tmp/kthybrid-cache
py=${PYTHON:-python3}
"$py" - <<'PY'
from pathlib import Path
from tests.support.launcher_fixtures import ModelSpec, build_model
build_model(Path("/tmp/kthybrid-models/tiny-moe"), ModelSpec(layers=4, experts=16, shards=3, nextn=0))
build_model(Path("/tmp/kthybrid-models/DeepSeek-V4-Flash"), ModelSpec())
PY
run() { name=$1; shift; "$@" >"$out/$name.out" 2>"$out/$name.err"; echo "$?" >"$out/$name.rc"; }
v4=/tmp/kthybrid-models/DeepSeek-V4-Flash
run nvidia-smi nvidia-smi -q
run lscpu lscpu
# shellcheck disable=SC2016  # the loop runs in the inner shell
run cgroup sh -c 'cat /proc/self/cgroup; for f in cpu.max memory.max memory.high cpuset.cpus.effective cpuset.mems.effective; do printf "%s: " "$f"; cat "/sys/fs/cgroup/$f" 2>&1; done'
run python-version "$py" -c 'import sys, pynvml; print(sys.version); print(pynvml.__file__)'
run doctor-tiny "$py" -m kthybrid_serve doctor --model /tmp/kthybrid-models/tiny-moe
run plan-tiny-json "$py" -m kthybrid_serve plan --model /tmp/kthybrid-models/tiny-moe --json
run plan-v4flash-json "$py" -m kthybrid_serve plan --model "$v4" --json
run doctor-v4flash "$py" -m kthybrid_serve doctor --model "$v4"
KTHYBRID_TARGET=sm90 KTHYBRID_TARGET_CC=9.0 run plan-v4flash-as-sm90-image \
  "$py" -m kthybrid_serve plan --model "$v4" --json
KTHYBRID_TARGET=sm120 KTHYBRID_TARGET_CC=12.0 run plan-tiny-as-sm120-image \
  "$py" -m kthybrid_serve plan --model /tmp/kthybrid-models/tiny-moe --json
# The host has 128 GiB, too little for V4-Flash's experts, and one H200 holds all of a smaller
# model: tune measures a 16-layer model with V4's expert shapes, planned for an RTX 5090.
"$py" - <<'PY'
from pathlib import Path
from tests.support.launcher_fixtures import ModelSpec, build_model
build_model(Path("/tmp/kthybrid-models/v4-shapes-16l"), ModelSpec(layers=16, shards=4, nextn=0))
PY
run tune "$py" -m kthybrid_serve tune --model /tmp/kthybrid-models/v4-shapes-16l
run plan-after-tune-json "$py" -m kthybrid_serve plan --model /tmp/kthybrid-models/v4-shapes-16l \
  --gpu "NVIDIA GeForce RTX 5090,32GiB,12.0" --json
run bench "$py" bench/plan.py --runs 5 --output "$out/bench-plan.json"
du -sh /tmp/kthybrid-models >"$out/model-disk-usage.txt"
