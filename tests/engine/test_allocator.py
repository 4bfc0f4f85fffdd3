"""bench.engine.allocator: large tensors come from the malloc heap (reused) instead of fresh mmap pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.engine.allocator import keep_heap

PROBE = r"""
import sys, torch
from bench.engine.allocator import keep_heap

def heap_and_big():
    # size of [heap] and count of other writable anonymous mappings of at least 48 MiB
    heap, big = 0, 0
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(a, 16) for a in parts[0].split("-"))
            if len(parts) > 5 and parts[5] == "[heap]":
                heap += hi - lo
            elif len(parts) == 5 and parts[1].startswith("rw") and hi - lo >= 48 << 20:
                big += 1
    return heap, big

on = keep_heap() if sys.argv[1] == "on" else False
torch.ones(1000).fill_(2.0)  # first-use set-up out of the way
h0, b0 = heap_and_big()
t = torch.empty(48 * 1024 * 1024 // 4)  # 48 MiB: above glibc's largest mmap threshold (32 MiB)
t.fill_(1.0)
h1, b1 = heap_and_big()
print(on, int(h1 - h0 >= 48 << 20), b1 - b0)
"""


def _probe(mode: str) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    on, heap_grew, new_maps = out.split()
    return on, int(heap_grew), int(new_maps)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_come_from_the_heap_once_kept() -> None:
    assert _probe("on") == ("True", 1, 0)  # the heap grew to hold the block: no mapping of its own
    assert _probe("off") == ("False", 0, 1)  # glibc's default: a fresh mmap for the block


def test_idempotent() -> None:
    assert keep_heap() is keep_heap()
