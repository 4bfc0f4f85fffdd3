"""Marker for tests of the fused kernels (``bench.quant.fused_lsq``), a C++ extension built with the system C++
compiler: skipped without one, unless ``BENCH_REQUIRE_COMPILER=1`` (CI) makes that a failure."""

from __future__ import annotations

import os
import shutil

import pytest

HAVE_COMPILER = shutil.which(os.environ.get("CXX", "g++")) is not None

if not HAVE_COMPILER and os.environ.get("BENCH_REQUIRE_COMPILER") == "1":
    raise RuntimeError("BENCH_REQUIRE_COMPILER=1 but no C++ compiler (g++ or $CXX) is on PATH; apt-get install g++")

needs_compiler = pytest.mark.skipif(
    not HAVE_COMPILER, reason="no C++ compiler for the fused LSQ kernels (apt-get install g++)"
)
