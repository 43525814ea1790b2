"""SASRec as TRON uses it: right-aligned learned positions, sqrt(d) scaling, pre-LN blocks, final LayerNorm.

Sequences are left-padded (item 0) so that the most recent click always sits in the last position; a batch
may be shorter than `max_length` (its all-padding left columns trimmed), positions stay right-aligned.
Attention is causal, padded keys are masked, and every position may attend to itself (no NaN rows).
Trained on windows: the last max_length + 1 clicks of each session, every position predicting the next click.
In training only the real positions are computed (`forward(..., events)`): every layer but attention works on
the (E, d) events alone, and attention scatters them into the (B, T) window, whose padding no real position
attends to; short sessions leave most of a window empty, so this skips most of the work. On the CPU the window
is cut further: sessions of similar length attend together in windows as wide as the longest of them
(`length_groups`), the same function in a quarter of the cells on OTTO-shaped batches.

With the `preference` setting (MultiTRON, `tron train --objective multitron`) the model also reads a preference
vector beta = [pi_click, pi_order] as the reference does: beta is joined to every item embedding, a Linear
(d + 2 -> d) maps the result back to d, scaled by sqrt(d / 2), then positions are added. Without the setting
the network and its initial weights are exactly TRON's. So are they without `block` sasrec (the original
SASRec's block, residuals from the normalised input) and `init` normal (N(0, 0.02) weights, as SASRec+).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tron_cli import runtime
from tron_cli.choices import DEFAULT_ORDER_WEIGHT
from tron_cli.models import MODELS, ModelSpec, check_settings, setting
from tron_cli.models.base import SessionModel
from tron_cli.models.dropout import AttentionMask, attention, dropout

POSITIONS = ("right", "left")
BLOCKS = ("pre", "sasrec")
INITS = ("xavier", "normal")
INIT_STD = 0.02  # init "normal": the standard deviation of the published SASRec+ / BERT4Rec weights
PREFERENCE_SIZE = 2  # [click weight, order weight]


@dataclass(frozen=True)
class SASRecConfig:
    hidden_size: int = setting(200, "Hidden size d.", reference="hidden_size", tune=(64, 128, 200))
    num_layers: int = setting(2, "Layers: transformer blocks, or GRU layers.", reference="num_layers", tune=(1, 2))
    num_heads: int = setting(1, "Attention heads.", tune=(1, 2))
    dropout: float = setting(0.05, "Dropout rate.", reference="dropout", tune={"low": 0.0, "high": 0.5})
    item_dropout: float = setting(
        0.0, "Dropout on item ids: in training, each input click's item is hidden with this probability (its embedding zeroed, its position kept)."
    )
    max_length: int = setting(
        50, "Clicks the model reads (training windows are the last max_length + 1 of each session).", reference="max_session_length", tune=(20, 50)
    )
    share_embeddings: bool = setting(True, "Tie input and output item embeddings.", reference="share_embeddings")
    output_bias: bool = setting(False, "Learn a bias per item.", reference="output_bias")
    positions: str = setting(
        "right",
        "Right-aligned positions (TRON: the newest click is always last) or left (counted from the session's first click, so a prefix's state is what it is inside the whole session).",
        POSITIONS,
        tune=("left", "right"),
    )
    temperature: float = setting(
        0.0,
        "0: scores are dot products; > 0: the cosine of state and item vector divided by this temperature (NISER's normalised scores; try 0.05-0.1).",
    )
    preference: bool = setting(False, "Read a preference vector [click weight, order weight] beside every click (MultiTRON; set by --objective multitron).")
    block: str = setting(
        "pre",
        "pre: x + Attn(LN(x)), then x + FFN(LN(x)) (TRON); sasrec: the original SASRec's block, whose residuals start from the normalised"
        " input: q = LN(x), x = q + Attn(q, keys and values from x), then h = LN(x), h + FFN(h).",
        BLOCKS,
    )
    init: str = setting(
        "xavier",
        "Initial weights: xavier (TRON) or normal (N(0, 0.02) item and position embeddings and linear weights, zero biases, as the published SASRec+).",
        INITS,
    )

    def __post_init__(self) -> None:
        check_settings(
            [
                (self.max_length >= 1, "--max-length must be at least 1"),
                (self.hidden_size >= 1 and self.num_layers >= 1, "--hidden-size and --num-layers must be at least 1"),
                (
                    self.num_heads >= 1 and self.hidden_size % self.num_heads == 0,
                    f"--hidden-size {self.hidden_size} must be divisible by --num-heads {self.num_heads}",
                ),
                (0 <= self.dropout < 1, "--dropout must be in [0, 1)"),
                (0 <= self.item_dropout < 1, "--item-dropout must be in [0, 1)"),
                (self.temperature >= 0, "--temperature must be 0 (dot products) or positive"),
                (self.positions in POSITIONS, f"--positions must be one of {', '.join(POSITIONS)}"),
                (self.block in BLOCKS, f"--block must be one of {', '.join(BLOCKS)}"),
                (self.init in INITS, f"--init must be one of {', '.join(INITS)}"),
            ]
        )


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + FFN(LN(x)); FFN width = d, ReLU. With `kind`
    "sasrec", the original SASRec's block: q = LN(x), x = q + Attn(q, keys and values from x), then h = LN(x),
    h + FFN(h), without dropout on the attention's output (as nn.MultiheadAttention)."""

    def __init__(self, d: int, heads: int, dropout: float, kind: str = "pre"):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.kind = kind
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, d)
        self.ff2 = nn.Linear(d, d)
        # as nn.MultiheadAttention: xavier input projection, zero biases
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, windows: AttentionMask | Groups, events: Tensor | None = None, last: bool = False) -> Tensor:
        """x (B, T, d) attended in the (B, T) window whose keys `windows` describes; with `events`, the (E, d) rows
        at those flat positions of that window, attended in it or, when `windows` are length `Groups`, in theirs.
        With `last` (an `AttentionMask` window), only the last column's output (B, 1, d)."""
        if last and not self.training and isinstance(windows, AttentionMask):  # training reads every column
            return self._last_column(x, windows)
        d = x.shape[-1]
        normed = self.norm1(x)
        if self.kind == "pre":
            qkv = self.qkv(normed)  # (B, T, 3d) or (E, 3d)
        else:  # queries from LN(x), keys and values from x itself
            q = F.linear(normed, self.qkv.weight[:d], self.qkv.bias[:d])
            qkv = torch.cat([q, F.linear(x, self.qkv.weight[d:], self.qkv.bias[d:])], dim=-1)
        if isinstance(windows, Groups):
            parts = [self._attend(qkv.index_select(0, group.slots), group.cells, group.mask) for group in windows.groups]
            attended = torch.cat([*parts, qkv.new_zeros(1, d)]).index_select(0, windows.inverse)  # (E, d)
        elif events is not None:
            attended = self._attend(qkv, events, windows, spare=True)  # (E, d): empty slots read zeros
        else:
            attended = self._attend(qkv.reshape(-1, 3 * d), None, windows).view(x.shape)
        return self._feed_forward(x, normed, attended)

    def _feed_forward(self, x: Tensor, normed: Tensor, attended: Tensor) -> Tensor:
        """The block's output from its input x, LN(x) and the attention's output at the same rows."""
        if self.kind == "pre":
            x = x + dropout(self.out(attended), self.dropout, self.training)
            h = self.norm2(x)
            h = self.ff2(dropout(F.relu(self.ff1(h)), self.dropout, self.training))
            return x + dropout(h, self.dropout, self.training)
        h = self.norm2(normed + self.out(attended))
        return h + dropout(self.ff2(dropout(F.relu(self.ff1(h)), self.dropout, self.training)), self.dropout, self.training)

    def _last_column(self, x: Tensor, mask: AttentionMask) -> Tensor:
        """(B, 1, d): the output at the last column of x (B, T, d) alone. Keys and values come from every column; the
        query, the projection and the feed-forward only from the last (a third of a block's arithmetic per column):
        what a model's last block needs when only the state after the newest click is read."""
        b, t, d = x.shape
        size = d // self.heads
        normed = self.norm1(x)
        keys_from = normed if self.kind == "pre" else x
        k, v = F.linear(keys_from, self.qkv.weight[d:], self.qkv.bias[d:]).view(b, t, 2, self.heads, size).permute(2, 0, 3, 1, 4)  # 2 x (B, H, T, d/H)
        q = F.linear(normed[:, -1:], self.qkv.weight[:d], self.qkv.bias[:d]).view(b, 1, self.heads, size).transpose(1, 2)  # (B, H, 1, d/H)
        allowed = mask.allowed[..., -1:, :]  # (B, 1, 1, T): the last query's keys
        attended = attention(q, k, v=v, mask=AttentionMask(allowed), p=self.dropout, training=self.training).transpose(1, 2).reshape(b, 1, d)
        return self._feed_forward(x[:, -1:], normed[:, -1:], attended)

    def _attend(self, qkv: Tensor, cells: Tensor | None, mask: AttentionMask, spare: bool = False) -> Tensor:
        """Attention of rows qkv (n, 3d) at flat `cells` (n,) of the (b, t) window of `mask` (None: qkv is the
        whole window) -> (n, d). The window's other cells are zeros, which no real position attends to; with
        `spare`, cell b * t is an empty slot, dropped on the way in and read as zeros on the way out."""
        b, t = mask.allowed.shape[0], mask.allowed.shape[-1]
        d = qkv.shape[-1] // 3
        window = qkv
        if cells is not None:
            window = qkv.new_zeros(b * t + int(spare), 3 * d).index_copy_(0, cells, qkv)[: b * t]
        q, k, v = window.view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (b, H, t, d/H)
        attended = attention(q, k, v=v, mask=mask, p=self.dropout, training=self.training).transpose(1, 2).reshape(b * t, d)
        if cells is None:
            return attended
        if spare:
            attended = torch.cat([attended, attended.new_zeros(1, d)])
        return attended.index_select(0, cells)


@dataclass(frozen=True)
class Group:
    """Sessions of a batch attended together in a window as wide as the longest of them: the event slots
    `slots` (n,) of the pass sit at flat `cells` (n,) of that (b, t) window, whose keys `mask` describes."""

    slots: Tensor
    cells: Tensor
    mask: AttentionMask


@dataclass(frozen=True)
class Groups:
    """A batch's sessions in groups of similar length; `inverse` (E,): each event slot's row in the groups'
    outputs joined, plus one row of zeros for empty slots."""

    groups: list[Group]
    inverse: Tensor


GROUP_COST = 20_000  # one more group's own cost (its extra operations), in window cells; on OTTO-shaped batches the cut barely moves between 0 and 10^5


def length_groups(items: Tensor, events: Tensor) -> Groups:
    """The sessions of left-padded items (B, T) in up to three groups of similar length, each attended in a
    window as wide as its longest session: OTTO-shaped batches, where one long session sets T for 127 short
    ones, attend in about a quarter of the cells (attention costs b t^2 per window). Reads the lengths back
    (on the CPU, where that is free)."""
    b, t = items.shape
    lengths = (items != 0).sum(1).clamp(min=1)  # (B,)
    order = torch.sort(lengths, descending=True, stable=True).indices
    ordered = lengths.index_select(0, order)  # (B,) non-increasing
    bounds = _group_bounds(ordered)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(b, device=items.device))  # (B,) each session's place
    real = events < b * t
    session, column = (events // t).clamp(max=b - 1), events % t
    place = torch.where(real, rank.index_select(0, session), b)  # empty slots belong to no group
    groups = []
    for start, stop in itertools.pairwise(bounds):
        width = int(ordered[start])
        slots = ((place >= start) & (place < stop)).nonzero().squeeze(1)  # (n,) in slot order
        cells = (place.index_select(0, slots) - start) * width + column.index_select(0, slots) - (t - width)
        window = items.index_select(0, order[start:stop])[:, t - width :]  # (b, width)
        groups.append(Group(slots, cells, AttentionMask(_allowed(window)[:, None])))
    joined = torch.cat([group.slots for group in groups])  # (R,) the slot of each row of the groups' outputs joined
    inverse = torch.full_like(events, joined.numel()).index_copy_(0, joined, torch.arange(joined.numel(), device=events.device))
    return Groups(groups, inverse)


def _group_bounds(ordered: Tensor) -> list[int]:
    """[0, ..., B]: where groups of the non-increasing lengths `ordered` (B,) start, for the least cells (b t^2
    per window plus GROUP_COST a group) with one, two or three groups. A group is only worth starting where a
    shorter length begins, so the search runs over those places (at most T of them)."""
    n = ordered.shape[0]
    cost = ordered.double() ** 2  # (B,) a session's cells in a window as wide as the longest session of its group
    starts = (ordered[1:] != ordered[:-1]).nonzero().squeeze(1) + 1  # (C,)
    at = cost.index_select(0, starts)  # (C,)
    options = [(float(n * cost[0]) + GROUP_COST, [0, n])]
    if starts.numel():
        two = starts * cost[0] + (n - starts) * at + 2 * GROUP_COST  # (C,) the second group from starts[i]
        options.append((float(two.min()), [0, int(starts[two.argmin()]), n]))
        i, j = starts[:, None], starts[None, :]
        three = i * cost[0] + (j - i) * at[:, None] + (n - j) * at[None, :] + 3 * GROUP_COST  # (C, C): from starts[i], starts[j]
        three = three.masked_fill(j <= i, float("inf"))
        first, second = divmod(int(three.argmin()), starts.numel())
        options.append((float(three.min()), [0, int(starts[first]), int(starts[second]), n]))
    return min(options, key=lambda option: option[0])[1]


class SASRec(SessionModel):
    feeding = "windows"
    forward_events = True

    def __init__(self, config: SASRecConfig, *, n_items: int):
        d = config.hidden_size
        super().__init__(n_items, d, config.share_embeddings, config.output_bias, temperature=config.temperature)
        self.config = config
        self.position = nn.Parameter(torch.empty(config.max_length, d))
        nn.init.xavier_uniform_(self.position)
        self.blocks = nn.ModuleList(Block(d, config.num_heads, config.dropout, config.block) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(d)
        self.scale = math.sqrt(d)
        if config.init == "normal":
            self._init_normal()
        # created last, so that a model without it draws the very same initial weights as before it existed
        self.preference_projection: nn.Linear | None = nn.Linear(d + PREFERENCE_SIZE, d) if config.preference else None
        # the vector used when forward is given none (evaluation, recommendation): set by `use_order_weight`
        self.register_buffer("fixed_preference", torch.tensor([1.0 - DEFAULT_ORDER_WEIGHT, DEFAULT_ORDER_WEIGHT]), persistent=False)

    fixed_preference: Tensor

    @torch.no_grad()
    def _init_normal(self) -> None:
        """N(0, INIT_STD) item and position embeddings and linear weights, zero biases (the published SASRec+);
        the attention's joint input projection keeps its xavier weights, as nn.MultiheadAttention's, which that
        code's initialisation does not reach. Drawn after the default weights, so TRON's stay as they are."""
        tables = [self.item_embedding, self.position] + ([] if self.output_embedding is None else [self.output_embedding])
        for table in tables:
            table.normal_(0.0, INIT_STD)
        self.item_embedding[0] = 0.0
        if self.output_embedding is not None:
            self.output_embedding[0] = 0.0
        for block in self.blocks:
            assert isinstance(block, Block)
            for linear in (block.out, block.ff1, block.ff2):
                linear.weight.normal_(0.0, INIT_STD)
                linear.bias.zero_()

    @property
    def preference_input(self) -> bool:
        return self.preference_projection is not None

    def use_order_weight(self, weight: float) -> None:
        self.fixed_preference.copy_(torch.tensor([1.0 - weight, weight]))

    def _embed(self, items: Tensor, sparse: bool, preference: Tensor | None, events: Tensor | None, b: int, t: int) -> Tensor:
        """Scaled embeddings of `items`: (B, T) ids, or with `events` the (E,) ids at those flat positions of the
        (B, T) window. With a preference input each is joined with its row's vector of `preference` ((2,) or
        (B, 2); None: `fixed_preference`), padding included as in the reference, and projected back to d."""
        rows = self.embed(items, sparse)  # (B, T, d) or (E, d)
        if self.training and self.config.item_dropout:
            kept = torch.rand(rows.shape[:-1], device=rows.device) >= self.config.item_dropout  # (B, T) or (E,)
            rows = rows * kept.unsqueeze(-1).to(rows.dtype)
        if self.preference_projection is None:
            return rows * self.scale
        vectors = (self.fixed_preference if preference is None else preference).to(rows.dtype).expand(b, PREFERENCE_SIZE)  # (B, 2)
        if events is None:
            vectors = vectors[:, None, :].expand(b, t, PREFERENCE_SIZE)
        else:
            vectors = vectors.index_select(0, (events // t).clamp(max=b - 1))  # (E, 2): empty slots read the last row
        # the reference scales by sqrt(d / 2) after this projection (not TRON's sqrt(d))
        return self.preference_projection(torch.cat([rows, vectors], dim=-1)) * math.sqrt(rows.shape[-1] / 2)

    @property
    def bounded_length(self) -> bool:
        return True  # one learned position per click: a longer window has no embedding

    def _positions(self, items: Tensor) -> Tensor:
        """(T, d) or (B, T, d) position embeddings of a left-padded batch."""
        t = items.shape[1]
        if self.config.positions == "right":
            return self.position[-t:]
        # left: count from each session's first click, so a window's states do not depend on what follows it
        # (the state after click j is the same in a pass over the whole session and over its first j clicks)
        start = (items == 0).sum(1, keepdim=True)  # (B, 1) padding columns
        return self.position[(torch.arange(t, device=items.device)[None, :] - start).clamp(min=0)]

    def forward(self, items: Tensor, sparse: bool = False, events: Tensor | None = None, preference: Tensor | None = None, last: bool = False) -> Tensor:
        """(B, T) left-padded item ids, T <= max_length -> (B, T, d) hidden states; position t predicts the next
        click. With `events` (E,) flat positions into B * T (B * T: an empty slot), only their states (E, d); with
        `last`, only the last column's (B, 1, d). `preference` (2,) or (B, 2) is read by a model with a preference
        input (None: `fixed_preference`)."""
        b, t = items.shape
        positions = self._positions(items)  # (T, d) or (B, T, d)
        if events is None:
            x = self._embed(items, sparse, preference=preference, events=None, b=b, t=t) + positions
        else:
            rows = torch.cat([positions.expand(b, t, -1).reshape(b * t, -1), positions.new_zeros(1, positions.shape[-1])])
            x = self._embed(
                torch.cat([items.reshape(-1), items.new_zeros(1)]).index_select(0, events), sparse, preference=preference, events=events, b=b, t=t
            ) + rows.index_select(0, events)
        x = dropout(x, self.config.dropout, self.training)
        windows = AttentionMask(_allowed(items)[:, None]) if events is None or not runtime.reads_are_free(items.device) else length_groups(items, events)
        for number, block in enumerate(self.blocks, 1):
            x = block(x, windows, events, last=last and number == len(self.blocks))
        return self.output_state(self.final_norm(x))

    def last_hidden(self, windows: Tensor, preference: Tensor | None = None) -> Tensor:
        return self.forward(windows, preference=preference, last=True)[:, -1]


def _allowed(items: Tensor) -> Tensor:
    """(B, T, T) of left-padded items (B, T): query i sees key j <= i when j is a real click; it always sees
    itself (no NaN rows). Built from aranges (not torch.eye), so that every ONNX exporter can trace it."""
    column = torch.arange(items.shape[1], device=items.device)
    return ((column[:, None] >= column[None, :]) & (items != 0)[:, None, :]) | (column[:, None] == column[None, :])


MODELS.register("sasrec", ModelSpec("sasrec", SASRec, SASRecConfig, "SASRec, the transformer TRON trains (defaults: TRON XL)."))
