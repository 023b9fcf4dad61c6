#!/usr/bin/env bash
# One GPU session for issue 9 (fast mode): environment check, then each benchmark case in its own process under
# a hard `timeout`, everything teed to $OUT/bench.log, JSON results and the markdown table in $OUT.
#
#   bash benchmarks/gpu_session.sh "$OUT"          (device tool: carry [".whl"], timeout_s 600)
#
# Files in $OUT: bench.log, env.txt, <case>.jsonl (one JSON line per mode, written as each finishes),
# table.md, results.json. Cases run in priority order; each gets at most its cap and never more than what is left
# of LOOM_BENCH_BUDGET (default 540 s, the issue's "under 9 minutes"); a case that times out keeps the modes it
# finished, and the next case still runs. Knobs (environment):
#   LOOM_BENCH_BUDGET=540      seconds for the whole session (setup and summary included)
#   LOOM_BENCH_CASES="sd15-b1 sd15-b4 sdxl-b1 host"   which cases, in order (host: fast mode's Python work per
#                              step with null models, benchmarks/fast_host_overhead.py; runs if 40 s are left)
#   LOOM_BENCH_STEPS=20 LOOM_BENCH_REPEATS=3
#   LOOM_BENCH_VAE_ALL=0       1: compile the VAE decode in every case (default: in sd15-b1 only, to fit 9 minutes;
#                              sampling it/s does not depend on it)
#   LOOM_BENCH_PYTHON=python3  LOOM_BENCH_ARGS="--tiny"   (a CPU dry run of this script elsewhere, with
#   LOOM_BENCH_HOST_ARGS="--device cpu --backend aot_eager_decomp_partition")
set -u
OUT="${1:?usage: gpu_session.sh OUT_DIR}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 2
START=$(date +%s)
BUDGET="${LOOM_BENCH_BUDGET:-540}"
CASES="${LOOM_BENCH_CASES:-sd15-b1 sd15-b4 sdxl-b1 host}"
STEPS="${LOOM_BENCH_STEPS:-20}"
REPEATS="${LOOM_BENCH_REPEATS:-3}"
SCRATCH=/tmp/loom-bench

stamp() { echo "[session $(( $(date +%s) - START ))s $(date +%H:%M:%S)] $*"; }

session() {
# --- environment ------------------------------------------------------------------------------------------------
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DIFFUSERS_VERBOSITY=error
export TORCH_LOGS="${TORCH_LOGS:-recompiles,perf_hints}"  # unexpected recompiles and skipped CUDA graphs, in the log
PY="${LOOM_BENCH_PYTHON:-python3}"
EXTRA="${LOOM_BENCH_ARGS:-}"
if ls .whl/*.whl >/dev/null 2>&1; then
  stamp "installing carried wheels: $(ls .whl | tr '\n' ' ')"
  rm -rf /tmp/site
  if ! $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
    stamp "WARNING: installing the wheels together failed; one by one:"
    for w in .whl/*.whl; do
      $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$w" \
        || stamp "WARNING: $w not installed"
    done
  fi
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
rm -rf "$SCRATCH"
{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv 2>&1
  nproc; free -g 2>&1 | head -2
  $PY - <<'EOF' 2>&1
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "triton", "diffusers", "transformers", "huggingface_hub", "pydantic", "safetensors", "numpy"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"), getattr(m, "__file__", ""))
    except Exception as exc:
        print(name, "MISSING:", type(exc).__name__, exc)
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
try:
    import engine.executor, nodes.sd.fast  # noqa: F401  our engine imports (pydantic etc.)
    print("latentloom engine: importable")
except Exception as exc:
    print("latentloom engine: NOT importable:", type(exc).__name__, exc)
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# --- cases -------------------------------------------------------------------------------------------------------
cap_for() {  # the most a case may take; the last one also gets whatever the others left
  case "$1" in
    sd15-b1) echo 260 ;;
    sd15-b4) echo 120 ;;
    sdxl-b1) echo 300 ;;
    host) echo 90 ;;
    *) echo 200 ;;
  esac
}

for CASE in $CASES; do
  now=$(date +%s)
  left=$(( START + BUDGET - 15 - now ))  # 15 s kept for the summary
  cap=$(cap_for "$CASE")
  t=$(( cap < left ? cap : left ))
  if [ "$t" -lt 40 ]; then
    stamp "### $CASE: skipped, ${left}s left of the ${BUDGET}s budget"
    echo "{\"case\": \"$CASE\", \"mode\": \"all modes\", \"skipped\": \"session budget spent (${left}s left)\"}" >> "$OUT/$CASE.jsonl"
    continue
  fi
  if [ "$CASE" = "host" ]; then  # fast mode's host work per step with null models (benchmarks/fast_host_overhead.py)
    stamp "### host: start, at most ${t}s"
    # shellcheck disable=SC2086
    timeout -k 10 "$t" $PY benchmarks/fast_host_overhead.py ${LOOM_BENCH_HOST_ARGS:---device cuda --backend inductor} --repeats 3 \
        --only "default mode: sample|euler (fused)|edited body|controlnet, euler" --json "$OUT/host.json"
    stamp "### host: done (exit $?)"
    continue
  fi
  vae=1
  if [ "$CASE" != "sd15-b1" ] && [ "${LOOM_BENCH_VAE_ALL:-0}" != "1" ]; then vae=0; fi
  reps="$REPEATS"
  if [ "$CASE" != "sd15-b1" ] && [ "$reps" -gt 2 ]; then reps=2; fi
  stamp "### $CASE: start, at most ${t}s (VAE decode compiled: $vae, repeats $reps)"
  LOOM_FAST_VAE=$vae timeout -k 10 "$t" $PY benchmarks/gpu_txt2img.py --case "$CASE" --steps "$STEPS" --repeats "$reps" \
      --budget $(( t - 10 )) --json "$OUT/$CASE.jsonl" --scratch "$SCRATCH" $EXTRA
  rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    stamp "### $CASE: TIMED OUT after ${t}s (the modes it finished are kept)"
    echo "{\"case\": \"$CASE\", \"mode\": \"rest\", \"skipped\": \"timed out after ${t}s\"}" >> "$OUT/$CASE.jsonl"
  else
    stamp "### $CASE: done (exit $rc)"
  fi
done

# --- summary -----------------------------------------------------------------------------------------------------
stamp "### summary"
files=$(ls "$OUT"/*.jsonl 2>/dev/null)
if [ -n "$files" ]; then
  # shellcheck disable=SC2086
  $PY benchmarks/gpu_txt2img.py --summary $files --markdown "$OUT/table.md" --results "$OUT/results.json"
else
  echo "no results"
fi
stamp "### session done"
}

session 2>&1 | tee -a "$OUT/bench.log"
exit "${PIPESTATUS[0]}"
