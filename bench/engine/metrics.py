"""Per-epoch metrics as JSON lines."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _clean(v: Any) -> Any:
    # JSON has no NaN/inf: write null so every reader can parse the file
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsWriter:
    """Appends one JSON object per line to ``path`` (flushed at once, so a killed run keeps its curve)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict[str, Any]) -> None:
        """Append one row."""
        if self.path is None:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl file back."""
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]
