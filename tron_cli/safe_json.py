"""The one reader of JSON that comes from outside: input lines, request bodies, logs, config files, run and dataset
documents, safetensors headers and their metadata. It bounds what Python's parser would otherwise crash or stall on:

- size: more than `max_bytes` is refused before parsing;
- depth: arrays and objects nested deeper than `MAX_DEPTH` (Python's parser recurses, and a 100,000-deep array
  ends in a RecursionError);
- integer length: an integer literal of more than `MAX_INTEGER_DIGITS` digits (Python refuses to convert more than
  4,300 digits with a ValueError, and converting fewer still costs quadratic time);
- NaN and Infinity, which are not JSON.

A breach, like a syntax error, is a `JsonRefused` saying what it is in one line (with the line and column of a syntax
error); each caller names its file, line or request around it. Nothing here imports anything heavy.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 64  # tron's own documents nest about five deep
MAX_INTEGER_DIGITS = 100  # an id beyond 2^63 has 20; a hundred digits is no id
MAX_BYTES = 256 << 20  # the largest document tron reads whole (a safetensors header is capped lower)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # a JSON string literal, escapes included
_LONG_INTEGER = re.compile(rf"(?<![\w.])-?\d{{{MAX_INTEGER_DIGITS + 1},}}")  # outside strings, once those are blanked


class JsonRefused(ValueError):
    """JSON that does not parse or breaks a limit; `str()` says which, in one line (`line`: where, when known)."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line

    def at(self, where: object) -> str:
        """The message behind its place: `PATH:LINE: ...` when the line is known, else `PATH: ...`."""
        return f"{where}:{self.line}: {self}" if self.line else f"{where}: {self}"


def _refuse_nan(constant: str) -> Any:
    raise JsonRefused(f"{constant} is not JSON (a number must be finite)")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e400 reads as inf
        raise JsonRefused(f"{literal[:20]} is beyond a float's range")
    return value


def parse(text: str | bytes, max_bytes: int = MAX_BYTES) -> Any:
    """The value of one JSON text, within the limits above."""
    if len(text) > max_bytes:
        raise JsonRefused(f"{len(text):,} bytes is more than the {max_bytes:,} allowed")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise JsonRefused(f"not UTF-8 (byte {error.start})") from None
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(text)
    if len(text) > MAX_INTEGER_DIGITS and _LONG_INTEGER.search(_STRING.sub('""', text)):
        raise JsonRefused(f"an integer of more than {MAX_INTEGER_DIGITS} digits")
    try:
        return json.loads(text, parse_constant=_refuse_nan, parse_float=_finite)
    except json.JSONDecodeError as error:
        raise JsonRefused(f"not valid JSON: {error.msg} (column {error.colno})", line=error.lineno) from None
    except RecursionError:  # the depth check counts brackets; this is for a parser that still recurses too far
        raise JsonRefused(f"nested deeper than {MAX_DEPTH} arrays or objects") from None


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, counting the brackets outside string literals."""
    depth = 0
    for bracket in re.findall(r"[\[\]{}]", _STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            raise JsonRefused(f"nested deeper than {MAX_DEPTH} arrays or objects")
