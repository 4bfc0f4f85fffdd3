#!/usr/bin/env bash
# Stop the one-node cluster started by scripts/slurm/start.sh STATE_DIR (its daemons, by their pid files).
set -uo pipefail
DIR=$(realpath -m "${1:-/tmp/bench-slurm}")
for d in slurmd slurmctld; do
  if [ -s "$DIR/$d.pid" ]; then
    pid=$(cat "$DIR/$d.pid")
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$DIR/$d.pid"
  fi
done
echo "slurm stopped ($DIR)"
