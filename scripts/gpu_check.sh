#!/usr/bin/env bash
# GPU readiness (issue 18, item 5): on a machine with one NVIDIA GPU, in well under 10 minutes,
#   1. one LSQ cell on CUDA (the quick-start cell: algo=lsq hw=tvm, 300 QAT steps),
#   2. the same cell launched by torchrun on the one GPU (the DDP launch path; one process: the record says world size
#      and backend),
#   3. the QAT step benchmark on CUDA (benchmarks/qat_step_speed.py --device cuda),
# and prints what each measured (top-1, wall time, ms per step). On a machine where torch sees no CUDA device it says
# so in one line and exits 1: nothing here is meant for CI.
#   bash scripts/gpu_check.sh                  # outputs under a temp dir (OUT= to keep them)
# The cells use the embedded Fashion-MNIST when its files are there (DATA_ROOT= or the Debian package's folder);
# otherwise (a GPU box without the package) the synthetic dataset with the tiny arch, and the lines say so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to torch (torch.cuda.is_available() is False): nothing to check here" >&2
  exit 1
fi

OUT=${OUT:-$(mktemp -d -t bench-gpu-check-XXXXXX)}
mkdir -p "$OUT"
export BENCH_CACHE=${BENCH_CACHE:-$OUT/cache}
ROOT=${DATA_ROOT:-/usr/share/datasets/fashion-mnist}
if [ -e "$ROOT/train-images-idx3-ubyte" ] || [ -e "$ROOT/train-images-idx3-ubyte.gz" ]; then
  CELL=(algo=lsq hw=tvm "data.root=$ROOT")
  WHAT="algo=lsq hw=tvm on Fashion-MNIST (resnet18_mini, shipped baseline)"
else
  CELL=(algo=lsq hw=tvm data=synthetic arch=tiny)
  WHAT="algo=lsq hw=tvm on the synthetic dataset (arch=tiny: no Fashion-MNIST files at $ROOT)"
fi

"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), '| torch', torch.__version__,
      '| cuda', torch.version.cuda, '| devices', torch.cuda.device_count())"

summary() {  # the record of a runs dir in one line
  "$PY" - "$1" "$2" <<'PYEOF'
import json, pathlib, sys
recs = [json.loads(p.read_text()) for p in pathlib.Path(sys.argv[2]).rglob("result.json")]
for r in recs:
    launch = r.get("extra", {}).get("launch", {})
    print(f"gpu_check: {sys.argv[1]}: status {r['status']} top-1 {r['top1']} (init {r['init_top1']}, FP32 "
          f"{r['fp32_top1']}) in {r['wall_s']:.1f} s, device {launch.get('device', '?')}, world size "
          f"{launch.get('world_size', 1)}, backend {launch.get('dist_backend', '-')}")
if len(recs) != 1:
    sys.exit(f"gpu_check: {sys.argv[1]}: expected one record, found {len(recs)}")
PYEOF
}

echo "gpu_check: 1/3 $WHAT, dist.device=cuda"
t0=$SECONDS
"$PY" -m bench run "${CELL[@]}" dist.device=cuda progress=false "runs_dir=$OUT/cuda" > "$OUT/cuda.log" 2>&1 \
  || { tail -20 "$OUT/cuda.log"; exit 1; }
summary "cuda cell ($((SECONDS - t0)) s with start-up)" "$OUT/cuda"

echo "gpu_check: 2/3 the same cell through torchrun, one process on one GPU (the line below says world size and backend)"
t0=$SECONDS
"$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m bench run "${CELL[@]}" dist.device=cuda \
  progress=false "runs_dir=$OUT/ddp" > "$OUT/ddp.log" 2>&1 || { tail -20 "$OUT/ddp.log"; exit 1; }
summary "torchrun DDP cell ($((SECONDS - t0)) s with start-up)" "$OUT/ddp"

echo "gpu_check: 3/3 QAT step time on CUDA (resnet18_mini, batch 128, W4A4, TensorRT profile)"
"$PY" benchmarks/qat_step_speed.py --device cuda --rounds 3 --steps 20 | sed 's/^/gpu_check:   /'
echo "gpu_check: done; records and logs under $OUT"
