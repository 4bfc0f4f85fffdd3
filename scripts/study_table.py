"""Print a Markdown pivot of the records under a runs folder: one row per combination of ``--rows`` keys, one column
per value of ``--cols``, cells ``mean ± std (n)`` of ``--value`` over the records (seeds) that share them. Keys are
record fields (``arch``, ``algo``, ``hw``, ``w_bits``, ``top1``, ``init_top1``, ``train_epochs``...) or dotted config
paths (``config.quant.pot_snap``). For studies whose numbers go into an issue's note, not into ``results/``.

    python scripts/study_table.py runs/study_pot --rows arch,w_bits,algo --cols config.quant.pot_snap --value top1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def get(rec: dict, key: str):
    node = rec
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs")
    ap.add_argument("--rows", required=True)
    ap.add_argument("--cols", required=True)
    ap.add_argument("--value", default="top1")
    ap.add_argument("--where", default="", help="key=value[,key=value]: keep only matching records")
    a = ap.parse_args(argv)
    rows, col = a.rows.split(","), a.cols
    where = [w.split("=", 1) for w in a.where.split(",") if w]
    cells: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
    colvals: list = []
    for p in sorted(Path(a.runs).rglob("result.json")):
        rec = json.loads(p.read_text())
        if rec.get("status") != "ok" or any(str(get(rec, k)) != v for k, v in where):
            continue
        v = get(rec, a.value)
        if v is None:
            continue
        c = get(rec, col)
        if c not in colvals:
            colvals.append(c)
        cells[tuple(get(rec, k) for k in rows)][c].append(float(v))
    print("| " + " | ".join(rows + [f"{col}={c}" for c in colvals]) + " |")
    print("|" + "---|" * (len(rows) + len(colvals)))
    for key in sorted(cells, key=lambda t: tuple(str(x) for x in t)):
        out = []
        for c in colvals:
            vs = cells[key].get(c, [])
            if not vs:
                out.append("")
            elif len(vs) == 1:
                out.append(f"{vs[0]:.2f}")
            else:
                out.append(f"{statistics.mean(vs):.2f} ± {statistics.stdev(vs):.2f} ({len(vs)})")
        print("| " + " | ".join([str(k) for k in key] + out) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
