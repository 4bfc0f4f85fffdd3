#!/usr/bin/env bash
# Regenerate the deployment results of results/fmnist-mini/ (issue "Deployability"):
#   1. fake quant vs integer-only execution, PTQ W8A8 and W4A4, six profiles x five minis (check-real), and of
#      Table 7's QAT cells (W4A4, four algorithms x six profiles x five minis, seed 0);
#   2. the QDQ ONNX export evaluated by onnxruntime, PTQ W8A8, the five deployable profiles x five minis (export),
#      and LSQ QAT at W8A8 on the same grid (ONNX QDQ holds 8-bit grids only, so Table 7's W4A4 cells cannot be
#      exported; LSQ is Table 7's first algorithm);
#   3. the aggregator over those records -> $OUT/deploy/{deploy_check,onnx_runtime,...}.csv/.md;
#   4. FP32 vs INT8 onnxruntime latency per profile, next to onnxruntime's own quantization and each profile's plain
#      QDQ export: ImageNet archs at 224 px and the minis at 32 px -> $OUT/latency.csv and $OUT/latency.md.
# Resumable (cells already recorded under $RUNS are skipped). Environment: RUNS (runs/deploy), OUT
# (results/fmnist-mini), PY (.venv/bin/python), THREADS (torch / onnxruntime threads per cell, 1), JOBS (cells at once,
# 2; the latency step runs alone), LATENCY (1; 0 keeps the latency table already in $OUT: it is a measurement on this
# machine, not an output of the records). A failing cell is recorded and the report goes on; the exit status says so.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/deploy}
OUT=${OUT:-results/fmnist-mini}
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-1}
JOBS=${JOBS:-2}
LATENCY=${LATENCY:-1}
MINIS=resnet18_mini,resnet50_mini,mobilenetv2_mini,efficientnet_lite0_mini,regnetx_600mf_mini
status=0
cells() {  # cells() VERB OVERRIDES...: a sweep of deployment-checked cells, JOBS at a time, THREADS threads each
  local verb=$1; shift
  echo ">>> python -m bench $verb -m $*"
  "$PY" -m bench "$verb" -m "$@" hydra/launcher=parallel hydra.launcher.n_jobs="$JOBS" \
    hydra.launcher.threads_per_job="$THREADS" runs_dir="$RUNS" progress=false || { status=1; echo "warning: failed cells"; }
}
cells check-real algo=ptq hw=academic,tensorrt,tvm,acl,snpe,fbgemm bits=w8a8,w4a4 arch=$MINIS
cells check-real experiment=table7_hw seed=0
cells export experiment=table7_hw algo=lsq bits=w8a8 hw=tensorrt,tvm,acl,snpe,fbgemm seed=0
cells export algo=ptq hw=tensorrt,tvm,acl,snpe,fbgemm bits=w8a8 arch=$MINIS
"$PY" -m bench aggregate runs="$RUNS" out="$OUT/deploy" plots=false || status=1
if [ "$LATENCY" = 1 ]; then
  "$PY" -m bench latency threads="$THREADS" plain=true out="$OUT/latency_imagenet.csv"
  "$PY" -m bench latency archs=$MINIS image_size=32 threads="$THREADS" repeats=50 plain=true out="$OUT/latency_mini.csv"
  "$PY" - "$OUT" <<'PYCODE'
import sys
import pandas as pd
from bench.deploy.latency import speed_table
out = sys.argv[1]
rows = pd.concat([pd.read_csv(f"{out}/latency_imagenet.csv"), pd.read_csv(f"{out}/latency_mini.csv")])
rows.to_csv(f"{out}/latency.csv", index=False)
with open(f"{out}/latency.md", "w") as f:
    f.write(speed_table(rows.where(rows.notna(), None).to_dict("records")))
PYCODE
  rm -f "$OUT"/latency_imagenet.* "$OUT"/latency_mini.*
fi
echo "wrote $OUT/deploy/ and $OUT/latency.csv, $OUT/latency.md"
exit $status
