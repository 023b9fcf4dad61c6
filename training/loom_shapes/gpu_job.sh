#!/usr/bin/env bash
# The one command for a lent GPU: train loom-shapes (all stages + eval) under a time budget, pack the
# results into $OUT, then time our txt2img workflow against diffusers. Each part is isolated: a failure
# in one still returns what the others produced.
set -u
OUT=${OUT:-/tmp/out}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout "${TRAIN_TIMEOUT:-430}" python3 -m training.loom_shapes.run_gpu --out /tmp/loom --ckpt-dir /tmp/loom-ckpt \
  --total-seconds "${TRAIN_SECONDS:-380}" > "$OUT/train.log" 2>&1
echo "train exit $?" | tee -a "$OUT/train.log"
tail -n 40 "$OUT/train.log"
(cd /tmp && tar czf - loom) | split -b 15M - "$OUT/loom.tgz."
ls -la "$OUT"
timeout "${BENCH_TIMEOUT:-110}" python3 benchmarks/gpu_txt2img.py --batches 1 4 --repeats 3 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
echo "bench exit $?"
tail -n 12 "$OUT/bench.log"
