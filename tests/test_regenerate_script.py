"""scripts/regenerate_leaderboard.sh with a stand-in Python that logs the commands: seed 0 of every experiment first,
then the other seeds on the priority rows, then on the other archs (only those the experiment itself sweeps); the
results folder is replaced as a whole (stale tables go), keeping the hand-written notes and the audit report; its
README names the records' commit and cost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STUB = f"""#!/usr/bin/env bash
if [ "$1" = "-" ]; then exec {sys.executable} "$@"; fi
echo "$*" >> "$LOG"
if [ "$3" = aggregate ]; then
  for a in "$@"; do case "$a" in out=*) out="${{a#out=}}";; esac; done
  mkdir -p "$out"
  [ -f "$out/findings_notes.yaml" ] && echo "notes seen" >> "$LOG"
  printf 'git_sha,status,wall_s,kind\\nabc1234,ok,60,qat\\n' > "$out/cells.csv"
  printf 'abc1234,ok,10,ptq\\nabc1234,failed,1,ptq\\n' >> "$out/cells.csv"
  echo new > "$out/table7_hw_w4a4.md"
fi
"""


def test_order_seeds_and_replacement(tmp_path: Path) -> None:
    stub, log, out = tmp_path / "py", tmp_path / "log", tmp_path / "results"
    stub.write_text(STUB)
    stub.chmod(0o755)
    out.mkdir()
    (out / "stale_table.md").write_text("old")
    (out / "findings_notes.yaml").write_text("x: {verdict: holds, note: n}\n")
    (out / "audit").mkdir()
    (out / "audit" / "audit.md").write_text("report")
    (out / "latency.csv").write_text("measured")  # LATENCY=0: the latency table is kept as it was measured
    env = {**os.environ, "PY": str(stub), "LOG": str(log), "OUT": str(out), "RUNS": str(tmp_path / "runs"),
           "EXPERIMENTS": "table7_hw table5_bnfold table11_init", "DEPLOY": "0", "SEEDS": "3", "LATENCY": "0"}
    p = subprocess.run(["bash", str(ROOT / "scripts" / "regenerate_leaderboard.sh")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    runs = [line for line in log.read_text().splitlines() if " run -m " in line]
    assert [r.split(" run -m ")[1].split(" hydra/")[0] for r in runs] == [
        "experiment=table7_hw seed=0", "experiment=table5_bnfold seed=0", "experiment=table11_init seed=0",
        "experiment=table7_hw arch=resnet18_mini,mobilenetv2_mini seed=1,2",
        "experiment=table5_bnfold arch=resnet18_mini,mobilenetv2_mini seed=1,2", "experiment=table11_init seed=1,2",
        "experiment=table7_hw arch=resnet50_mini,efficientnet_lite0_mini,regnetx_600mf_mini seed=1,2",
    ]  # table11_init has one arch: its other seeds run with the priority rows; table5_bnfold sweeps only those two
    assert "notes seen" in log.read_text()
    assert not (out / "stale_table.md").exists() and (out / "table7_hw_w4a4.md").read_text() == "new\n"
    assert (out / "findings_notes.yaml").exists() and (out / "audit" / "audit.md").read_text() == "report"
    assert (out / "latency.csv").read_text() == "measured"
    readme = (out / "README.md").read_text()
    assert "commit of the records (`git_sha`): abc1234 (3 cells)" in readme
    assert "qat: 1 cells, median 60 s per cell" in readme and "seeds: 0..2 for every cell" in readme
    assert not Path(f"{out}.new").exists()
