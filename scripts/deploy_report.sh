#!/usr/bin/env bash
# Regenerate the deployment results of results/fmnist-mini/ (issue "Deployability"):
#   1. fake quant vs integer-only execution, PTQ W8A8 and W4A4, six profiles x five minis (check-real);
#   2. the QDQ ONNX export evaluated by onnxruntime, PTQ W8A8, the five deployable profiles x five minis (export);
#   3. the aggregator over those records -> $OUT/deploy/{deploy_check,onnx_runtime,...}.csv/.md;
#   4. FP32 vs INT8 onnxruntime latency per profile, next to onnxruntime's own quantization and each profile's plain
#      QDQ export: ImageNet archs at 224 px and the minis at 32 px -> $OUT/latency.csv and $OUT/latency.md.
# Resumable (cells already recorded under $RUNS are skipped). Environment: RUNS (runs/deploy), OUT
# (results/fmnist-mini), PY (.venv/bin/python), THREADS (torch / onnxruntime threads, 1).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/deploy}
OUT=${OUT:-results/fmnist-mini}
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-1}
MINIS=resnet18_mini,resnet50_mini,mobilenetv2_mini,efficientnet_lite0_mini,regnetx_600mf_mini
"$PY" -m bench check-real -m algo=ptq hw=academic,tensorrt,tvm,acl,snpe,fbgemm bits=w8a8,w4a4 arch=$MINIS \
  runs_dir="$RUNS" progress=false threads="$THREADS"
"$PY" -m bench export -m algo=ptq hw=tensorrt,tvm,acl,snpe,fbgemm bits=w8a8 arch=$MINIS \
  runs_dir="$RUNS" progress=false threads="$THREADS"
"$PY" -m bench aggregate runs="$RUNS" out="$OUT/deploy" plots=false
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
echo "wrote $OUT/deploy/ and $OUT/latency.csv, $OUT/latency.md"
