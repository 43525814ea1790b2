"""The best columns of a wide block of scores on a CPU, where the product that writes the block and `topk` over it
are most of a TRON training step: the product written block by block (`shared_scores`), candidate columns by slice
maxima (`candidate_columns`), and the fp32 best found through a bf16 product whose error bound proves which
columns can hold them (`proven_top`). Shapes: E rows (events), U columns (negatives), d hidden."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from tron_cli import runtime

NEG_INF = float("-inf")

# columns of the shared negatives' scores a CPU computes at once: MKL multiplies 1,556 x 200 by 200 x 16,384 in
# 76 ms as one product and in 54 ms as eight of 2,048 columns each, written into their place (2 cores)
SCORE_COLUMNS = {"cpu": 2048}


def shared_scores(hidden: Tensor, vectors: Tensor) -> Tensor:
    """(E, U) scores `hidden` (E, d) @ `vectors` (U, d).T; on a CPU, without autograd or autocast, written block of
    columns by block of columns (`SCORE_COLUMNS`), which is faster there than one wide product."""
    width = SCORE_COLUMNS.get(hidden.device.type)
    tracked = torch.is_grad_enabled() and (hidden.requires_grad or vectors.requires_grad)
    if width is None or tracked or vectors.shape[0] <= width or torch.is_autocast_enabled(hidden.device.type):
        return hidden @ vectors.T
    out = hidden.new_empty(hidden.shape[0], vectors.shape[0])
    for first in range(0, vectors.shape[0], width):
        torch.mm(hidden, vectors[first : first + width].T, out=out[:, first : first + width])
    return out


SLICES = 4  # column slices per row of `candidate_columns`: the fastest of 4, 8 and 16 on 2 CPU cores at 16,384 columns


def candidate_columns(scores: Tensor, k: int) -> Tensor | None:
    """(E, 4 k) columns of `scores` (E, U) among which each row's k highest lie, or None where a row is too narrow
    for that to pay (fewer than 16 k columns) and off the CPU (where `topk` is fast).

    On the CPU `topk` over a wide matrix costs half the product that wrote it. A row is cut into 4 equal slices and
    each column position j gets the largest of the 4 slices' column j: every one of the k best scores lies at one of
    the k best positions (each of those holds a score at least the k-th best one's), which are found the same way
    among the (E, U / 4) maxima, down to a row narrow enough for `topk`. Columns past the last whole slice are
    candidates as they are. 22 instead of 35 ms at 1,556 x 16,384, k = 101."""
    e, u = scores.shape
    width = u // SLICES
    if scores.device.type != "cpu" or width < 4 * k:
        return None
    maxima = scores[:, : SLICES * width].view(e, SLICES, width).amax(1)  # (E, U / 4)
    inner = candidate_columns(maxima, k)
    if inner is None:
        _, positions = maxima.topk(k, dim=1, sorted=False)  # (E, k)
    else:
        _, picked = maxima.gather(1, inner).topk(k, dim=1, sorted=False)
        positions = inner.gather(1, picked)
    columns = (positions.unsqueeze(1) + torch.arange(SLICES, device=scores.device).view(1, -1, 1) * width).view(e, -1)  # (E, 4 k)
    rest = u - SLICES * width
    return columns if not rest else torch.cat([columns, torch.arange(u - rest, u, device=scores.device).expand(e, -1)], dim=1)


def best_columns(scores: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """(values (E, n), columns (E, n)) of each row's n highest scores, in no order."""
    candidates = candidate_columns(scores, n)
    if candidates is None:
        return scores.topk(n, dim=1, sorted=False)
    values, picked = scores.gather(1, candidates).topk(n, dim=1, sorted=False)
    return values, candidates.gather(1, picked)


# columns rescored in fp32 per column kept: on Gaussian scores of TRON XL's shape (1,556 x 16,384, k = 101), 128
# candidates left 42 % of the rows unproven, 160 none
CANDIDATES_PER_KEPT = 1.6
# the prefilter pays from this many candidate widths of columns: at 1,556 x 4,096 and k = 101 (24 widths) it takes
# as long as the fp32 path (21.9 against 21.4 ms), at 8,192 (47) 33.2 against 37.0 ms, at 16,384 47.8 against 66.7
MIN_WIDTHS = 32
BF16_UNIT = 2.0**-8  # bf16's unit roundoff: 8 significant bits, round to nearest
FP32_UNIT = 2.0**-24


def candidate_width(k: int) -> int:
    """K, the rough columns `proven_top` rescores in fp32 per row for a top-k: 1.6 k rounded up to a multiple of 16."""
    return 16 * math.ceil(CANDIDATES_PER_KEPT * k / 16)


def proven_top(hidden: Tensor, vectors: Tensor, k: int, invalid: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """(fp32 scores (E, K), columns (E, K)) of K >= k columns per row that hold the k highest fp32 scores of
    `hidden` (E, d) @ `vectors` (U, d).T among the valid columns (`invalid` broadcastable to (E, U), or None);
    invalid columns score -inf. None where it does not pay: off the CPU, without hardware bf16 products
    (`runtime.cpu_bf16_products`), for blocks narrower than `MIN_WIDTHS` K and in reduced precision.

    The rough (E, U) scores come from the inputs rounded to bf16 (4.9x the fp32 product's speed on `cpu-2`); the
    K best rough columns (1.6 k, rounded up to a multiple of 16) are rescored in fp32 by a sampled product (only
    the (E, K) dot products, no gathered rows). `_rough_error` bounds |fp32 score - rough score| for every column
    of a row, so that every column left out scores at most ceiling = (the K-th best rough score) + that bound;
    where the k-th best rescored value is above it, the row's k best are proven to be among the K. Other rows
    (scores too close together) are computed in full fp32. The result is the exact top-k of the values it returns."""
    e, u = hidden.shape[0], vectors.shape[0]
    width = candidate_width(k)
    # compiled graphs keep the fp32 path: checked first, so that no graph traces the read of /proc/cpuinfo
    if torch.compiler.is_compiling() or hidden.device.type != "cpu" or torch.is_grad_enabled() or u < MIN_WIDTHS * width:
        return None
    if not (hidden.dtype == vectors.dtype == torch.float32 and runtime.cpu_bf16_products()):
        return None
    low_hidden, low_vectors = hidden.bfloat16(), vectors.bfloat16()
    rough = shared_scores(low_hidden, low_vectors)  # (E, U) bf16
    if invalid is not None:
        rough.masked_fill_(invalid, NEG_INF)
    rough_top, columns = best_columns(rough, width)  # (E, K)
    values = sampled_scores(hidden, vectors, columns)  # (E, K) fp32
    if invalid is not None:
        values.masked_fill_(invalid.expand(e, u).gather(1, columns), NEG_INF)
    floor = rough_top.amin(1).float()  # (E,) no column left out has a higher rough score
    error = _rough_error(hidden, low_hidden, vectors, low_vectors)  # (E,)
    # rough = fp32-accumulated (1 + r), |r| <= BF16_UNIT: left out, a column scores at most this (s + c|s| grows with s)
    ceiling = floor + 2 * BF16_UNIT * floor.abs() + error
    kth = values.topk(k, dim=1, sorted=False).values.amin(1)  # (E,)
    proven = (kth > ceiling) | ((floor == NEG_INF) & error.isfinite())  # fewer valid columns than K: all are in
    unproven = (~proven).nonzero().squeeze(1)  # read back: free on the CPU
    if unproven.numel():
        exact = shared_scores(hidden.index_select(0, unproven), vectors)
        if invalid is not None:
            exact.masked_fill_(invalid.expand(e, u).index_select(0, unproven), NEG_INF)
        exact_values, exact_columns = best_columns(exact, width)
        values.index_copy_(0, unproven, exact_values)
        columns.index_copy_(0, unproven, exact_columns)
    return values, columns


def _rough_error(hidden: Tensor, low_hidden: Tensor, vectors: Tensor, low_vectors: Tensor) -> Tensor:
    """(E,) a bound over every column x of a row h on |h.x - (h16.x16 summed in fp32)|, h16 and x16 rounded to
    bf16 (h16 x16 are exact in fp32): h.x - h16.x16 = (h - h16).x + h16.(x - x16), each term at most the product
    of the norms (Cauchy-Schwarz), plus both sums' own fp32 rounding (d FP32_UNIT |a||b| each, taken 8x over for
    the order a kernel adds in), all with 1 % to spare for the norms' rounding."""
    d = hidden.shape[1]
    rounded_hidden, rounded_vectors = low_hidden.float(), low_vectors.float()
    hidden_norm, rounded_norm = hidden.norm(dim=1), rounded_hidden.norm(dim=1)  # (E,)
    column_norm = torch.maximum(vectors.norm(dim=1).max(), rounded_vectors.norm(dim=1).max())
    rounding = (hidden - rounded_hidden).norm(dim=1) * column_norm + rounded_norm * (vectors - rounded_vectors).norm(dim=1).max()
    sums = 8 * d * FP32_UNIT * (hidden_norm + rounded_norm) * column_norm
    return 1.01 * (rounding + sums)


def sampled_scores(hidden: Tensor, vectors: Tensor, columns: Tensor) -> Tensor:
    """(E, K) fp32 `hidden[e] . vectors[columns[e, j]]` by a sampled product (`torch.sparse.sampled_addmm`): no
    (E, K, d) rows gathered (at TRON XL's 1,556 x 160 a 12x faster way than gathering them for a `bmm`)."""
    e, width = columns.shape
    rows = torch.arange(0, e * width + 1, width, device=columns.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        pattern = torch.sparse_csr_tensor(rows, columns.reshape(-1), hidden.new_zeros(e * width), size=(e, vectors.shape[0]))
    return torch.sparse.sampled_addmm(pattern, hidden, vectors.T, beta=0.0).values().view(e, width)
