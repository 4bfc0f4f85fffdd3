#!/usr/bin/env bash
# Regenerate the committed fmnist-mini leaderboard from real runs, then the tables: every committed table is an
# experiment (bench/conf/experiment) plus `python -m bench aggregate`, nothing else.
#   bash scripts/regenerate_leaderboard.sh            # every mini experiment, 3 seeds, deployment checks, aggregate
#   EXPERIMENTS="table7_hw" SEEDS=1 DEPLOY=0 bash scripts/regenerate_leaderboard.sh
# Order: seed 0 of every experiment first (a stopped run already covers the whole grid), then seeds 1..SEEDS-1 on the
# resnet18_mini and mobilenetv2_mini rows, then on the other archs the experiment sweeps (every mini cell takes under ~2
# minutes, so every cell gets SEEDS seeds), then the deployment checks (scripts/deploy_report.sh: integer execution and
# ONNX of Table 7's QAT cells and of PTQ W8A8/W4A4, the latency table). Resumable: cells already recorded under $RUNS
# are skipped (config_hash), so an interrupted regeneration picks up where it stopped. On another machine, first put the
# committed (partial) records back: `python -m bench restore runs=$RUNS results=$OUT`, then run this script.
# Environment: RUNS (runs/leaderboard), DEPLOY_RUNS (${RUNS}_deploy), LAUNCHER (parallel | local | slurm), JOBS (cells
# at once with the parallel launcher, 2), THREADS (torch threads per cell; default cores / JOBS), SEEDS (3), DEPLOY
# (1: run scripts/deploy_report.sh), LATENCY (1: measure the latency table; 0: keep $OUT's), OUT
# (results/fmnist-mini), PY (.venv/bin/python).
# Writes $OUT/README.md: the commit(s) of the records, the machine, the wall time and the cost per cell.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/leaderboard}
DEPLOY_RUNS=${DEPLOY_RUNS:-${RUNS}_deploy}
LAUNCHER=${LAUNCHER:-parallel}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-3}
DEPLOY=${DEPLOY:-1}
OUT=${OUT:-results/fmnist-mini}
PY=${PY:-.venv/bin/python}
EXPERIMENTS=${EXPERIMENTS:-"table7_hw table4_academic table5_bnfold table6_graph table10_ptq table11_init ptq_lowbit \
ptq_w8a8 ptq_bn_calib_4bit qat_w4a4_hw qat_w4a4_academic qat_w4a4_academic_3ep ptq_advanced ptq_advanced_per_channel ptq_white_paper"}
PRIORITY=resnet18_mini,mobilenetv2_mini
OTHERS=resnet50_mini,efficientnet_lite0_mini,regnetx_600mf_mini
LAUNCH=("hydra/launcher=$LAUNCHER")
[ "$LAUNCHER" = parallel ] && LAUNCH+=("hydra.launcher.n_jobs=$JOBS")
[ "$LAUNCHER" = parallel ] && [ -n "${THREADS:-}" ] && LAUNCH+=("hydra.launcher.threads_per_job=$THREADS")

start=$(date +%s)
status=0
sweep() {  # a failing cell is recorded as failed and the sweep goes on; report and continue with the next one
  echo ">>> python -m bench run -m $*"
  "$PY" -m bench run -m "$@" "${LAUNCH[@]}" runs_dir="$RUNS" progress=false || { status=1; echo "warning: $1 had failed cells"; }
}
sweeps_arch() {  # does the experiment sweep over arch (else it has one fixed arch)?
  grep -Eq '^ +arch:' "bench/conf/experiment/$1.yaml"
}
swept_archs() {  # swept_archs EXP LIST: the archs of LIST (comma-separated) that EXP's own arch sweep holds
  local line a out=()
  line=$(grep -E '^ +arch:' "bench/conf/experiment/$1.yaml" | sed -E 's/^ +arch: *//; s/[][ "'"'"']//g')
  for a in ${2//,/ }; do [[ ",$line," == *",$a,"* ]] && out+=("$a"); done
  local IFS=,; echo "${out[*]}"
}
for e in $EXPERIMENTS; do sweep "experiment=$e" seed=0; done
if [ "$SEEDS" -gt 1 ]; then
  more=$(seq -s, 1 $((SEEDS - 1)))
  # an override arch=... replaces the experiment's own sweep: pass only archs it sweeps, or new cells would appear
  for e in $EXPERIMENTS; do
    if ! sweeps_arch "$e"; then sweep "experiment=$e" "seed=$more"; continue; fi
    a=$(swept_archs "$e" "$PRIORITY")
    if [ -n "$a" ]; then sweep "experiment=$e" "arch=$a" "seed=$more"; fi
  done
  for e in $EXPERIMENTS; do
    sweeps_arch "$e" || continue
    a=$(swept_archs "$e" "$OTHERS")
    if [ -n "$a" ]; then sweep "experiment=$e" "arch=$a" "seed=$more"; fi
  done
fi
# Every file of $OUT is rewritten from the records: the tables go to a fresh folder that then replaces $OUT, so no
# table of an earlier commit stays beside the new ones. Kept from $OUT: the hand-written findings_notes.yaml and the
# committed audit report (audit/), which are not outputs of the records.
STAGE="$OUT.new"
rm -rf "$STAGE" && mkdir -p "$STAGE"
[ -f "$OUT/findings_notes.yaml" ] && cp "$OUT/findings_notes.yaml" "$STAGE/"
[ -d "$OUT/audit" ] && cp -r "$OUT/audit" "$STAGE/"
if [ "${LATENCY:-1}" = 0 ]; then  # the latency table is kept as measured (scripts/deploy_report.sh LATENCY=0)
  cp "$OUT"/latency.csv "$OUT"/latency.md "$STAGE/" 2>/dev/null || true
fi
if [ "$DEPLOY" = 1 ]; then
  RUNS="$DEPLOY_RUNS" OUT="$STAGE" PY="$PY" bash scripts/deploy_report.sh || status=1
fi
wall=$(( $(date +%s) - start ))

if "$PY" -m bench aggregate runs="$RUNS" out="$STAGE"; then
  rm -rf "$OUT" && mv "$STAGE" "$OUT"
else
  echo "error: aggregation failed; $OUT is left as it was, the partial tables are in $STAGE"
  exit 1
fi
# commit and cost of the whole leaderboard, from the records themselves (also counts cells run by earlier calls)
SUMMARY=$("$PY" - "$OUT/cells.csv" <<'PYCODE'
import sys
import pandas as pd
c = pd.read_csv(sys.argv[1])
shas = ", ".join(f"{s} ({n} cells)" for s, n in c.git_sha.value_counts().items())
c = c[c.status != "failed"]
lines = [f"- commit of the records (`git_sha`): {shas}",
         f"- cells: {len(c)}; sum of cell wall times {c.wall_s.sum() / 3600:.2f} h"]
for kind, g in c.groupby("kind"):
    lines.append(f"  - {kind}: {len(g)} cells, median {g.wall_s.median():.0f} s per cell (min {g.wall_s.min():.0f},"
                 f" max {g.wall_s.max():.0f}), {g.wall_s.sum() / 3600:.2f} h")
print("\n".join(lines))
PYCODE
)
cat > "$OUT/README.md" <<MD
# fmnist-mini leaderboard

Produced by \`bash scripts/regenerate_leaderboard.sh\` (experiments: $EXPERIMENTS; launcher: $LAUNCHER, $JOBS cells at
a time) from the records under \`$RUNS\`, then \`python -m bench aggregate runs=$RUNS out=$OUT\`.

$SUMMARY
- script run at: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- bench || echo " (with uncommitted changes)")
- machine: $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), no GPU
- wall time of this call: ${wall} s (cells recorded by earlier calls were skipped)
- seeds: 0..$((SEEDS - 1)) for every cell
- finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)

See index.md for the list of tables and figures, findings.md for the papers' claims checked against these records,
deploy/ and latency.md for the deployment checks. Tables with several seeds show mean ± std; the CSVs carry the 95%
confidence interval and mark rankings that are not significant.
MD
echo "wrote $OUT/README.md (wall ${wall} s)"
exit $status
