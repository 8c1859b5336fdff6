"""Training on CPU: the process keeps the memory it frees, for its next step.

glibc's malloc serves a large block (over its mmap threshold, which rises to at most 32 MB: a
training step's activations, gradients, logits) with a fresh ``mmap`` and returns it to the kernel
when it is freed, so every step pays the page faults and zeroing of all its large tensors again: the
forward pass of a training step then costs up to twice the same pass without gradients. Told through
``mallopt(3)`` (glibc's documented interface) to use its heap for every block and to keep what is
freed, the process reuses most of those pages step after step (tests/train/test_host_memory.py
counts them). Measured on 2 cores, the ~100 M-parameter bench preset, a discriminator update on 16
video answers: forward 8.3 -> 5.1-5.4 s, forward and backward 16.7 -> 12.8 s (`bench/train.py` gives
the whole RL step). The process's memory stays at its peak instead of falling between steps.

``RMSD_KEEP_FREED_MEMORY=0`` turns it off. Elsewhere (CUDA, which caches its own memory; macOS; a
libc without ``mallopt``) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt(3) parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
ENV = "RMSD_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Make malloc keep freed memory for reuse (see the module docstring); True if it was told."""
    if os.environ.get(ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    import torch

    if torch.cuda.is_available():  # training runs on the GPU, whose allocator caches its own memory
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # no block from mmap (its pages would go back at free), and never give the heap's top back
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
