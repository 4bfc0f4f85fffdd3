"""The result record of one cell (DESIGN.md Sec. 5): schema, atomic write, lookup and collection."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # 2: kind, num_classes, labels, order (the record describes itself to the aggregator)
RECORD_NAME = "result.json"
DUPLICATE_NAME = "result.duplicate.json"  # a second finished record of a cell: kept, but not a record
INDEX_DIR = ".index"  # runs_dir/.index/<config_hash>: which record finished a cell first
STATUSES = ("ok", "nc", "failed")
FINAL = ("ok", "nc")


@dataclass
class ResultRecord:
    """One grid cell's outcome. Field names are a contract with the aggregator and users' scripts."""

    track: str
    algo: str
    calib_weight: str
    calib_act: str
    hw: str
    graph: int | None
    bn_fold: int | None
    arch: str
    data: str
    w_bits: int
    a_bits: int
    seed: int
    status: str
    fp32_top1: float | None
    top1: float | None
    top5: float | None
    init_top1: float | None
    train_epochs: int
    config_hash: str
    git_sha: str
    versions: dict[str, str]
    wall_s: float
    started_at: str
    schema_version: int = SCHEMA_VERSION
    kind: str = ""  # qat | ptq | fp32 (the algorithm's registry entry)
    num_classes: int | None = None  # of the dataset: chance level is 100 / num_classes %
    labels: dict[str, str] = field(default_factory=dict)  # display names of algo, hw, arch, calib_weight, calib_act
    order: dict[str, int] = field(default_factory=dict)  # their table positions (lower first)
    finished_at: str = ""
    data_fingerprint: str = ""
    baseline: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, ready for JSON."""
        return asdict(self)


def now_iso() -> str:
    """Current UTC time, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _file_mode() -> int:
    # the mode open() gives a new file (0644 under the usual umask 022): mkstemp's 0600 would make records the only
    # outputs other users cannot read
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a uniquely named temp file beside ``path`` (two processes never share one), flush it to
    disk, give it the mode of any new file, then rename it over ``path``: readers never see a half-written file.
    The one atomic writer of the project (records, tables, checkpoints, ONNX models, qparams)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON to ``path`` atomically (:func:`write_atomic`)."""
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_record(record: ResultRecord, out_dir: str | Path) -> Path:
    """Write ``result.json`` atomically into ``out_dir``."""
    return write_json_atomic(Path(out_dir) / RECORD_NAME, record.to_dict())


def write_record_once(record: ResultRecord, out_dir: str | Path, runs_dir: str | Path) -> Path:
    """Write ``result.json`` and claim the cell in ``runs_dir/.index``: one finished record per ``config_hash``.

    Two processes can finish the same cell (a sweep restarted while Slurm jobs of the first launch still ran). The
    first to claim the index entry owns the cell; a later one renames its own record to ``result.duplicate.json``
    (nothing computed is deleted, but collection and the tables see one record). Failed records are not claimed.
    """
    path = write_record(record, out_dir)
    if record.status not in FINAL or not record.config_hash:
        return path
    index = Path(runs_dir) / INDEX_DIR
    index.mkdir(parents=True, exist_ok=True)
    marker = index / record.config_hash
    for _ in range(2):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _indexed(marker, record.config_hash)
            if owner is None:  # stale entry (its record was deleted): take it over
                marker.unlink(missing_ok=True)
                continue
            if owner.resolve() == path.resolve():
                return path
            dup = path.with_name(DUPLICATE_NAME)
            os.replace(path, dup)
            return owner
        with os.fdopen(fd, "w") as f:
            f.write(str(path.resolve()) + "\n")
        return path
    return path


def _indexed(marker: Path, config_hash: str) -> Path | None:
    """The record an index entry points to, if it still exists and finished that cell."""
    try:
        target = Path(marker.read_text().strip())
        rec = read_record(target)
    except (OSError, json.JSONDecodeError, ValueError):
        return None
    if rec.get("config_hash") == config_hash and rec.get("status") in FINAL:
        return target
    return None


def read_record(path: str | Path) -> dict[str, Any]:
    """Read one ``result.json``."""
    with Path(path).open() as f:
        return json.load(f)


def record_paths(runs_dir: str | Path, name: str = RECORD_NAME) -> list[Path]:
    """Every file called ``name`` under ``runs_dir``, sorted. Concurrent cells create and remove folders there while
    this walks (a sweep's probe folders, emptied run folders): one that vanishes mid-walk is skipped, not an error
    (``Path.rglob`` raises FileNotFoundError on it)."""
    found = []
    for dirpath, _, files in os.walk(runs_dir):  # os.walk ignores folders it can no longer list
        if name in files:
            found.append(Path(dirpath) / name)
    return sorted(found)


def iter_records(runs_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """All readable records under ``runs_dir`` (unreadable or partial files are skipped)."""
    out = []
    root = Path(runs_dir)
    if not root.is_dir():
        return out
    for p in record_paths(root):
        try:
            out.append((p, read_record(p)))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def find_record(runs_dir: str | Path, config_hash: str, statuses: tuple[str, ...] = FINAL) -> Path | None:
    """Path of an existing record of the same cell (same ``config_hash``) with a final status, if any."""
    if statuses == FINAL and config_hash:
        owner = _indexed(Path(runs_dir) / INDEX_DIR / config_hash, config_hash)
        if owner is not None:
            return owner
    for p, rec in iter_records(runs_dir):  # records written before the index existed, or by an older version
        if rec.get("config_hash") == config_hash and rec.get("status") in statuses:
            return p
    return None


def collect(runs_dir: str | Path) -> Any:
    """All records under ``runs_dir`` as a pandas DataFrame (one row per record, plus its ``path``)."""
    import pandas as pd

    rows = [{**{k: v for k, v in rec.items() if k != "config"}, "path": str(p)} for p, rec in iter_records(runs_dir)]
    return pd.DataFrame(rows)


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of a config dict in canonical JSON form (first 16 hex digits)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def git_sha() -> str:
    """Commit of the source tree, with ``-dirty`` when it has uncommitted changes; ``unknown`` outside a git checkout
    of this project (an installed package: its site-packages may sit inside some other repository, e.g. a project's
    .venv, whose commit says nothing about this code)."""
    root = Path(__file__).resolve().parent.parent
    try:
        top, sha = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=root, capture_output=True, text=True, check=True,
            timeout=10,
        ).stdout.splitlines()
        if Path(top).resolve() != root:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "bench"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def launch_info() -> dict[str, Any]:
    """Where the cell ran: host, torch threads, and under Slurm the job id and how often it was requeued."""
    import torch

    # threads and the CPU are left out of config_hash, but reduction order (thread split; the vector ISA the kernels
    # dispatch to) can move low-bit QAT results: keep them visible so an audit can name the cause of a moved number
    info: dict[str, Any] = {"host": platform.node(), "torch_threads": torch.get_num_threads(), "cpu": cpu_model(),
                            "cpu_capability": str(torch.backends.cpu.get_cpu_capability())}
    if "SLURM_JOB_ID" in os.environ:
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        info["slurm_job_id"] = f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]
        info["slurm_restart_count"] = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    return info


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU this process runs on: ``/proc/cpuinfo``'s model name with its family and model numbers (two machines
    sold under one name can differ in vector units), else what :mod:`platform` says."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def cpu_of(rec: dict[str, Any]) -> str:
    """The CPU a record ran on and the vector ISA torch used (``"AMD EPYC (family 25, model 1); AVX2"``), or "" for
    records written before the launch info carried them."""
    launch = (rec.get("extra") or {}).get("launch") or {}
    return "; ".join(str(x) for x in (launch.get("cpu"), launch.get("cpu_capability")) if x)


def versions() -> dict[str, str]:
    """Versions of the software a record depends on."""
    import timm
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # TorchVersion is not a plain str (torch.load weights_only refuses it)
        "torchvision": str(torchvision.__version__),
        "timm": str(timm.__version__),
    }
