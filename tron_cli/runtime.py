"""Where and in what precision tensors live: device choice, autocast settings, exact fp32 for ranking."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from tron_cli.choices import DEVICES
from tron_cli.errors import UsageError
from tron_cli.memory import available_bytes, heap_kept


def resolve_device(name: str) -> torch.device:
    """auto: CUDA when present, else CPU; cuda without a GPU is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but no CUDA device is available", "Use --device cpu or auto")
    if name not in DEVICES:
        raise UsageError(f"unknown device {name!r}", f"Use one of: {', '.join(DEVICES)}")
    return torch.device(name)


def device_memory(device: torch.device) -> int:
    """Bytes still free on `device`: a GPU's free memory, or what the machine has available."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_bytes()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training, or None for plain fp32. auto: bf16 on CUDA, fp32 on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision in ("auto", "bf16"):
        return torch.bfloat16
    if device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device", "Use --precision bf16 or fp32 on CPU")
    return torch.float16


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A block computed in full precision under an enclosing autocast (on devices that have one)."""
    return torch.autocast(device_type, enabled=False) if torch.amp.is_autocast_available(device_type) else contextlib.nullcontext()


def reads_are_free(device: torch.device) -> bool:
    """Whether reading a value back to Python costs nothing: on the CPU outside a compiled graph there is no
    device to wait for. A few hot paths use it to skip whole-matrix passes there; on every other device (and in
    compiled graphs) they never read (tests/test_device.py checks that path)."""
    return device.type == "cpu" and not torch.compiler.is_compiling()


@functools.cache
def cpu_bf16_products() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX, read from /proc/cpuinfo): there a
    bf16 product runs at several times the fp32 one's speed (4.9x on `cpu-2`'s Zen 4); elsewhere it is emulated."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@contextlib.contextmanager
def exact_fp32():
    """Disable TF32 in matmuls while ranking: rounded scores would create artificial ties and swaps."""
    if not torch.cuda.is_available():
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@contextlib.contextmanager
def deterministic_on_cpu(device: torch.device):
    """Training on the CPU with PyTorch's deterministic kernels: with more than one thread, the default
    scatter/index additions of the gradients sum in an order that varies from run to run (two 2-thread runs of
    the yoochoose-1-64 recipe differed in the loss's 6th digit after 150 steps, and in the 4th after an epoch);
    the deterministic ones cost nothing measurable there. Their companion setting that fills every new tensor
    with NaN first stays off: nothing here reads memory it has not written, and the fills were 8 % of the small
    config's step (5,000 of them a step). CUDA keeps its fast kernels."""
    if device.type != "cpu":
        yield
        return
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]


def cpu_heap(device: torch.device) -> contextlib.AbstractContextManager:
    """`memory.heap_kept` where the work runs on the CPU (a GPU's allocations are torch's own caching allocator's)."""
    return heap_kept() if device.type == "cpu" else contextlib.nullcontext()


@contextlib.contextmanager
def cpu_training(device: torch.device):
    """How `tron train` runs its epochs: PyTorch's deterministic kernels on the CPU (`deterministic_on_cpu`) and,
    there, freed memory kept for the next step's allocations (`cpu_heap`)."""
    with deterministic_on_cpu(device), cpu_heap(device):
        yield
