"""Decode the embedded default dataset at import, for a process that forks cells (the parallel launcher's fork server).

Every cell forked afterwards finds Fashion-MNIST decoded in memory (``load_tensors`` is cached per root, and a fork
shares the pages copy-on-write: the cells only read them) instead of decompressing, hashing and normalising the four
files itself (~0.8 s a cell). Torch runs the decoding on one thread, so the fork server starts no thread pool that its
children would inherit. A missing or corrupt dataset is left for the cell to report: importing this never fails.
"""

from __future__ import annotations

import os


def warm() -> bool:
    """Decode Fashion-MNIST from its default folder into the process's cache; False when that failed (no error)."""
    import torch

    from bench.data.fashion_mnist import DEFAULT_ROOT, load_tensors

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        load_tensors(os.path.abspath(DEFAULT_ROOT))
        return True
    except Exception:  # noqa: BLE001 - the cell that uses the data reports the error, with its config
        return False
    finally:
        torch.set_num_threads(threads)


warm()
