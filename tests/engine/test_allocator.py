"""bench.engine.allocator: large tensors come from the malloc heap (reused) instead of fresh mmap pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.engine.allocator import keep_heap

PROBE = r"""
import sys, torch
from bench.engine.allocator import keep_heap

def region(addr):
    # the /proc/self/maps entry holding addr: "heap" for the brk heap, else "mmap"
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(a, 16) for a in parts[0].split("-"))
            if lo <= addr < hi:
                return "heap" if len(parts) > 5 and parts[5] == "[heap]" else "mmap"
    return "none"

on = keep_heap() if sys.argv[1] == "on" else False
t = torch.empty(48 * 1024 * 1024 // 4)  # 48 MiB: above glibc's largest mmap threshold (32 MiB)
t.fill_(1.0)
print(on, region(t.data_ptr()))
"""


def _probe(mode: str) -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    on, where = out.split()
    return on, where


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_come_from_the_heap_once_kept() -> None:
    assert _probe("on") == ("True", "heap")
    assert _probe("off") == ("False", "mmap")  # glibc's default: a fresh mapping for the block


def test_idempotent() -> None:
    assert keep_heap() is keep_heap()
