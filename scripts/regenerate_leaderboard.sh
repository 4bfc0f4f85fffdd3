#!/usr/bin/env bash
# Regenerate the committed fmnist-mini leaderboard from real runs, then the tables: every committed table is an
# experiment (bench/conf/experiment) plus `python -m bench aggregate`, nothing else.
#   bash scripts/regenerate_leaderboard.sh            # all mini experiments, then `python -m bench aggregate`
#   EXPERIMENTS="table7_hw" bash scripts/regenerate_leaderboard.sh
# Resumable: cells already recorded under $RUNS are skipped (config_hash), so an interrupted regeneration picks up
# where it stopped. Environment: RUNS (runs/leaderboard), LAUNCHER (parallel | local | slurm), JOBS (cells at once
# with the parallel launcher, 2), THREADS (torch threads per cell; default cores / JOBS), SEEDS (seeds of the resnet18_mini and mobilenetv2_mini rows of Table 7, 3),
# OUT (results/fmnist-mini), PY (.venv/bin/python). Writes $OUT/README.md: commit, machine, wall time, seeds.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/leaderboard}
LAUNCHER=${LAUNCHER:-parallel}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-3}
OUT=${OUT:-results/fmnist-mini}
PY=${PY:-.venv/bin/python}
EXPERIMENTS=${EXPERIMENTS:-"table7_hw table4_academic table5_bnfold table6_graph table10_ptq table11_init ptq_lowbit \
ptq_w8a8 ptq_bn_calib_4bit qat_w4a4_hw qat_w4a4_academic qat_w4a4_academic_3ep ptq_advanced ptq_advanced_per_channel"}
LAUNCH=("hydra/launcher=$LAUNCHER")
[ "$LAUNCHER" = parallel ] && LAUNCH+=("hydra.launcher.n_jobs=$JOBS")
[ "$LAUNCHER" = parallel ] && [ -n "${THREADS:-}" ] && LAUNCH+=("hydra.launcher.threads_per_job=$THREADS")

start=$(date +%s)
status=0
sweep() {  # a failing cell is recorded as failed and the sweep goes on; report and continue with the next one
  echo ">>> python -m bench run -m $*"
  "$PY" -m bench run -m "$@" "${LAUNCH[@]}" runs_dir="$RUNS" progress=false || { status=1; echo "warning: $1 had failed cells"; }
}
for e in $EXPERIMENTS; do
  sweep "experiment=$e"
  if [ "$e" = table7_hw ] && [ "$SEEDS" -gt 1 ]; then
    sweep "experiment=table7_hw" arch=resnet18_mini,mobilenetv2_mini "seeds=$SEEDS"
  fi
done
wall=$(( $(date +%s) - start ))

"$PY" -m bench aggregate runs="$RUNS" out="$OUT" || status=1
# cost of the whole leaderboard, from the records themselves (also counts cells run by earlier, interrupted calls)
COST=$("$PY" - "$OUT/cells.csv" <<'PYCODE'
import sys
import pandas as pd
c = pd.read_csv(sys.argv[1])
c = c[c.status != "failed"]
lines = [f"- cells: {len(c)}; sum of cell wall times {c.wall_s.sum() / 3600:.2f} h"]
for kind, g in c.groupby("kind"):
    lines.append(f"  - {kind}: {len(g)} cells, median {g.wall_s.median():.0f} s per cell (min {g.wall_s.min():.0f},"
                 f" max {g.wall_s.max():.0f})")
print("\n".join(lines))
PYCODE
)
cat > "$OUT/README.md" <<MD
# fmnist-mini leaderboard

Produced by \`bash scripts/regenerate_leaderboard.sh\` (experiments: $EXPERIMENTS; launcher: $LAUNCHER, $JOBS cells at
a time) from the records under \`$RUNS\`, then \`python -m bench aggregate runs=$RUNS out=$OUT\`.

- commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- bench conf || echo " (with uncommitted changes)")
- machine: $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), no GPU
- wall time of this call: ${wall} s (cells recorded by earlier calls were skipped)
$COST
- seeds: 0 for every cell; 0..$((SEEDS - 1)) for the resnet18_mini and mobilenetv2_mini rows of Table 7
- finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)

See index.md for the list of tables and figures. Tables with several seeds show mean ± std; the CSVs carry the 95%
confidence interval and mark rankings that are not significant.
MD
echo "wrote $OUT/README.md (wall ${wall} s)"
exit $status
