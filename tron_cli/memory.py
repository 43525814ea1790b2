"""What the machine can hold, and a refusal before allocating what it cannot.

A size a person asks for (`--hidden-size 1000000000`, `--items 100000000000`) used to end in an allocation
traceback, or in the machine swapping for minutes first. A stage estimates the bytes of a model, a table, an index
or a generated dataset before it allocates them, and `refuse_beyond` turns an estimate above what is available into
one line: what was asked, how much it needs, how much there is. Nothing here imports torch (the CUDA side is
`runtime.device_memory`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import platform
from collections.abc import Iterator
from pathlib import Path

from tron_cli.errors import UsageError


def human(n_bytes: float) -> str:
    """Bytes for people: 1.5 GB, 320 MB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{n_bytes:.0f} bytes"


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup (v2, else v1), when one is set."""
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def available_bytes() -> int:
    """Memory this process can still take: the kernel's MemAvailable (Linux), within the cgroup's limit; the
    physical memory elsewhere."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    return min(available, limit) if limit is not None else available


def refuse_beyond(asked: str, needed: float, available: float, where: str = "this machine", hint: str = "Ask for less") -> None:
    """A usage error when `needed` bytes exceed `available` (with a little room for everything else)."""
    if needed > 0.9 * available:
        size = f"about {human(needed)}" if needed < 1e18 else "more than any machine has (its sizes overflow int64)"
        raise UsageError(f"{asked} needs {size}, and {where} has {human(available)} available", hint)


# glibc's mallopt parameters (malloc.h) and their defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_held = 0  # heap_kept blocks open: only the outermost sets and restores the allocator


@contextlib.contextmanager
def heap_kept() -> Iterator[None]:
    """Inside the block, freed memory stays in the process's heap for the next allocation (glibc; elsewhere a no-op).

    glibc serves every block above its mmap threshold (32 MB at most) with a fresh mapping and unmaps it on free,
    so a CPU training step that allocates the same (events x negatives) scores and (items x d) gradients each
    time page-faults all of them in again: a third of the product that writes the scores, 18 % of a TRON XL step
    and of an evaluation pass on 2 cores (BENCHMARKS.md, issue #30). Blocks nest (validation inside training); on
    leaving the outermost, the defaults come back and the heap is trimmed, so that a Python session gets the
    memory back."""
    global _held
    libc = _glibc()
    if libc is None:
        yield
        return
    if _held == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if _held == 0:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
