"""Tensors as safetensors, never pickle: written atomically, and their header (names, shapes, dtypes, metadata)
read and checked before any tensor is loaded, so a hostile or truncated file allocates nothing."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tron_cli.artifacts.files import atomic_path
from tron_cli.artifacts.schemas import redo_hint, whole_number
from tron_cli.errors import ArtifactError
from tron_cli.safe_json import JsonRefused, parse

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # a header larger than this is hostile or corrupt

# safetensors' dtype names, as its header spells them
SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def save_tensors(path: Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """Write torch tensors as safetensors atomically (shared storage is copied, never pickled)."""
    from safetensors.torch import save_file

    contiguous = {name: tensor.detach().contiguous().clone() for name, tensor in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=dict(metadata or {}))


@dataclass
class TensorHeader:
    """What a safetensors file declares before any tensor is read: each tensor's shape and dtype name, and the
    file's string metadata."""

    tensors: dict[str, tuple[tuple[int, ...], str]]
    metadata: dict[str, str]


def read_tensor_header(path: Path, kind: str) -> TensorHeader:
    """The header of a safetensors file, refusing an oversized or truncated header, one that is not JSON, and
    tensors whose data would lie beyond the file; reads only the header, so nothing is allocated for the tensors."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing", redo_hint(kind))
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ArtifactError(f"{path} is truncated (no safetensors header)", redo_hint(kind))
        (header_size,) = struct.unpack("<Q", head)
        if header_size > MAX_SAFETENSORS_HEADER or header_size > size - 8:
            raise ArtifactError(f"{path} declares a {header_size}-byte header in a {size}-byte file: refused", redo_hint(kind))
        raw = handle.read(header_size)
    bad = f"{path} is not a valid safetensors file"
    try:
        header = parse(raw)
    except JsonRefused as error:
        raise ArtifactError(
            f"{bad} (its header is {error})" if str(error).startswith("not ") else f"{bad} (its header holds {error})", redo_hint(kind)
        ) from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{bad} (its header is not a JSON object)", redo_hint(kind))
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ArtifactError(f"{bad} (its metadata is not a map of strings)", redo_hint(kind))
    tensors: dict[str, tuple[tuple[int, ...], str]] = {}
    data_size = size - 8 - header_size
    for name, entry in header.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if (
            dtype not in SAFETENSORS_DTYPES
            or not isinstance(shape, list)
            or not all(whole_number(0)(n) for n in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(whole_number(0)(n) for n in offsets)
        ):
            raise ArtifactError(f"{bad} (tensor {name!r} is not described by a dtype, a shape and two offsets)", redo_hint(kind))
        if offsets[0] > offsets[1] or offsets[1] > data_size:
            raise ArtifactError(f"{bad} (tensor {name!r} lies beyond the end of the file: truncated or corrupt)", redo_hint(kind))
        tensors[name] = (tuple(shape), dtype)
    return TensorHeader(tensors, metadata)


def check_tensor_header(header: TensorHeader, path: Path, kind: str, expected: Mapping[str, tuple[tuple[int, ...], Any]]) -> None:
    """Refuse a file whose tensors differ in name, shape or dtype from `expected` ({name: (shape, torch dtype)})."""
    missing = sorted(set(expected) - set(header.tensors))
    extra = sorted(set(header.tensors) - set(expected))
    if missing or extra:
        raise ArtifactError(f"{path}: tensors {missing or extra} {'missing' if missing else 'unexpected'}", redo_hint(kind))
    for name, (shape, dtype) in expected.items():
        found_shape, found_dtype = header.tensors[name]
        wanted = str(dtype).removeprefix("torch.")
        if tuple(found_shape) != tuple(shape) or SAFETENSORS_DTYPES[found_dtype] != wanted:
            raise ArtifactError(
                f"{path}: tensor {name} is {tuple(found_shape)} torch.{SAFETENSORS_DTYPES[found_dtype]}, expected {tuple(shape)} {dtype}",
                redo_hint(kind),
            )


def load_tensors(path: Path, kind: str, expected: Mapping[str, tuple[tuple[int, ...], Any]] | None = None) -> dict[str, Any]:
    """Read safetensors, refusing oversized headers, truncation, and (with `expected`) wrong names, shapes or
    dtypes; the header is checked before any tensor is read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    header = read_tensor_header(path, kind)
    if expected is not None:
        check_tensor_header(header, path, kind, expected)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ArtifactError(f"{path} is not a valid safetensors file ({error})", redo_hint(kind)) from None
    if expected is not None:
        for name, (shape, dtype) in expected.items():
            tensor = tensors[name]
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ArtifactError(
                    f"{path}: tensor {name} is {tuple(tensor.shape)} {tensor.dtype}, expected {tuple(shape)} {dtype}",
                    redo_hint(kind),
                )
    for name, tensor in tensors.items():  # a NaN or infinite weight would score, and could win every ranking
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise ArtifactError(f"{path}: tensor {name} holds NaN or infinite values", redo_hint(kind))
    return tensors
