#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md in one call on a GPU machine that reaches no registry
# (the device tool), well inside its 10-minute limit. Prepare .gpu/ first with
# bench/gpu_prepare.sh, then: run(command="bash bench/gpu.sh", carry=[".gpu"], timeout_s=600).
# The log lands in $OUT/gpu.log. Each step has its own time limit, so one that fails or hangs
# costs only its share. A dry run of the plumbing on a CPU, on the tiny model:
#   NO_WHEELS=1 DEVICE=cpu SIZE=tiny STEPS=4 SKIP_COMPILE=1 bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
SIZE="${SIZE:-sd15}"    # sd15: the real SD 1.5 architecture with random weights (speed does not depend on them)
STEPS="${STEPS:-50}"    # Riffusion's default
OUT="${OUT:-/tmp/riffradio-gpu}"
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: >"$LOG"
if [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error
MODEL="/tmp/riffradio-gpu-$SIZE"

step() {  # step LIMIT_SECONDS COMMAND...: run it with a time limit, log it, go on whatever happens
  local limit=$1
  shift
  echo "=== $(date -u +%H:%M:%S) $* (limit ${limit} s)" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | grep -v -e "Writing model shards" -e "Loading pipeline components" | tee -a "$LOG"
  echo "=== rc ${PIPESTATUS[0]}" | tee -a "$LOG"
}

step 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step 20 python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
step 90 python3 -m riffradio make-test-model "$MODEL" --size "$SIZE"
# Riffusion's defaults (PNDM, 50 steps at strength 0.75), fp16, batches, against the stock pipeline.
step 120 python3 bench/engine.py --model "$MODEL" --device "$DEVICE" --steps "$STEPS" --batch 1,2,4,8 --repeats 3
# Continuation (issue 13): a clip keeping the previous clip's last 1.28 s, per clip and per new second.
step 45 python3 bench/engine.py --model "$MODEL" --device "$DEVICE" --steps "$STEPS" --continuation 1.28 --no-stock --no-vocoder --repeats 3
step 45 python3 bench/engine.py --model "$MODEL" --device "$DEVICE" --steps "$STEPS" --channels-last --no-stock --no-vocoder --repeats 3
step 45 python3 bench/engine.py --model "$MODEL" --device "$DEVICE" --steps 20 --scheduler dpm++ --no-stock --no-vocoder --repeats 3
step 45 python3 bench/vocoder.py --device "$DEVICE" --excerpts .gpu/excerpts.npz --no-baseline \
  --grid 8820 --iterations 32 --grid 17640 --iterations 32
step 75 python3 bench/control_latency.py --model "$MODEL" --device "$DEVICE" --steps "$STEPS" --changes 5
if [ -z "${SKIP_COMPILE:-}" ]; then
  step 120 python3 bench/engine.py --model "$MODEL" --device "$DEVICE" --steps "$STEPS" --compile --no-stock --no-vocoder --repeats 3
fi
echo "=== done $(date -u +%H:%M:%S)" | tee -a "$LOG"
