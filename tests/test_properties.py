"""Properties on random inputs (hypothesis): preprocessing against a naive restatement of its rules, and the
negative samplers, top-k and hit masking of training. Metrics against a naive ranking with ties are in
tests/test_metrics.py.

What `tron preprocess` guarantees for a log of your own with the time split (`--split time`), stated as the
naive `_reference` below computes it:

1. events are sorted by time within each session (stably); sessions with fewer than `--min-session-length`
   events are dropped, then (with `--min-item-support` S > 1) events of items with fewer than S events, then
   short sessions again;
2. cut = (latest first-event time among those sessions) - test_days; a session whose first event is before
   the cut is a train session, the others are test sessions. So every train and validation session starts
   before every test session;
3. validation is carved from the end of train: with `--valid-days V` the train sessions starting at or after
   (latest train start - V); with `--valid-fraction F` the round(F x n) latest-starting ones;
4. unless `--unknown-test-items keep`, test events of items absent from train + valid are dropped and test
   sessions left shorter than the minimum go; every test item is then known to train + valid;
5. the catalogue is the items of train + valid (+ test with keep), numbered 1..N in raw-id order, every one of
   them used; `count` is its clicks in train; no split holds a session shorter than the minimum.
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tron_cli.artifacts.sessions import read_items, read_sessions
from tron_cli.errors import InputFormatError
from tron_cli.models.base import ItemScorer
from tron_cli.stages.preprocess import Options, preprocess
from tron_cli.training.negatives import Assembly, EventSlots, LossSpec, sampled_loss
from tron_cli.training.sampling import ItemDistribution, draw, in_batch_negatives, uniform_negatives

DAY_MS = 86_400_000
T0 = 1_700_000_000_000
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------- preprocessing


@st.composite
def click_logs(draw_):
    """{session id: [(raw item, ms), ...]} in file order (not time order), over a few days, ids of any int64."""
    pool = draw_(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=2, max_size=8, unique=True))
    sessions = {}
    ids = draw_(st.lists(st.integers(0, 10**12), min_size=6, max_size=30, unique=True))
    slots = draw_(st.permutations(range(len(ids))))  # spread over 4 days, in no particular file order
    for session, slot in zip(ids, slots):
        start = slot * 4 * DAY_MS // len(ids) + draw_(st.integers(0, 3 * 3_600_000))
        length = draw_(st.sampled_from([0, 1, 2, 2, 3, 3, 4, 5, 6]))
        sessions[session] = [(draw_(st.sampled_from(pool)), T0 + start + draw_(st.integers(-3_600_000, 3_600_000))) for _ in range(length)]
    return sessions


@st.composite
def preprocess_options(draw_):
    valid = draw_(st.sampled_from(["none", "days", "fraction"]))
    return {
        "test_days": draw_(st.sampled_from([0.5, 1.0, 2.0])),
        "valid_days": 0.5 if valid == "days" else None,
        "valid_fraction": draw_(st.sampled_from([0.2, 0.5])) if valid == "fraction" else None,
        "no_valid": valid == "none",
        "min_session_length": draw_(st.integers(1, 3)),
        "min_item_support": draw_(st.sampled_from([1, 1, 2])),
        "unknown_test_items": draw_(st.sampled_from(["drop", "keep"])),
    }


def _start(events):
    return events[0][1]


def _reference(log, options):
    """(train + valid, valid by days, test candidates, known items) as {session: events} by the rules in the module
    docstring, or None where preprocess must refuse (nothing left in train, validation or test)."""
    kept = {s: sorted(ev, key=lambda e: e[1]) for s, ev in log.items() if len(ev) >= options["min_session_length"]}
    if options["min_item_support"] > 1:
        support = Counter(item for ev in kept.values() for item, _ in ev)
        kept = {s: [e for e in ev if support[e[0]] >= options["min_item_support"]] for s, ev in kept.items()}
        kept = {s: ev for s, ev in kept.items() if len(ev) >= options["min_session_length"]}
    if not kept:
        return None
    cut = max(_start(ev) for ev in kept.values()) - options["test_days"] * DAY_MS
    before = {s: ev for s, ev in kept.items() if _start(ev) < cut}
    after = {s: ev for s, ev in kept.items() if _start(ev) >= cut}
    if not before:
        return None
    valid = {}
    if options["valid_days"] is not None:
        cut2 = max(_start(ev) for ev in before.values()) - options["valid_days"] * DAY_MS
        valid = {s: ev for s, ev in before.items() if _start(ev) >= cut2}
        if len(valid) in (0, len(before)):
            return None
    if options["valid_fraction"] is not None and round(len(before) * options["valid_fraction"]) in (0, len(before)):
        return None
    known = {item for ev in before.values() for item, _ in ev}
    keep = options["unknown_test_items"] == "keep"
    test = {s: ev if keep else [e for e in ev if e[0] in known] for s, ev in after.items()}
    if not any(len(ev) >= options["min_session_length"] for ev in test.values()):
        return None
    return before, valid, after, known


def _written(path: Path, split: str, raw: list) -> dict[int, list]:
    if not (path / f"{split}.parquet").exists():
        return {}
    sessions = read_sessions(path / f"{split}.parquet")
    starts = sessions.ts[sessions.offsets[:-1]]
    assert np.all(np.diff(starts) >= 0)  # ordered by start
    out = {}
    for s in range(len(sessions)):
        a, b = sessions.offsets[s], sessions.offsets[s + 1]
        assert np.all(np.diff(sessions.ts[a:b]) >= 0)  # sorted within the session
        out[int(sessions.session[s])] = [(raw[i - 1], int(t)) for i, t in zip(sessions.items[a:b], sessions.ts[a:b])]
    return out


def _same_events(a, b) -> bool:
    return sorted(a, key=lambda e: (e[1], e[0])) == sorted(b, key=lambda e: (e[1], e[0]))


@SETTINGS
@given(click_logs(), preprocess_options())
def test_preprocessing_follows_its_rules(log, options):
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "log.csv", Path(tmp) / "out" / "log"
        rows = [f"{s},{item},{ts}" for s, events in log.items() for item, ts in events]
        source.write_text("session,item,ts\n" + "".join(row + "\n" for row in rows))
        reference = _reference(log, options)
        try:
            preprocess(Options(train=source, format="csv", time_unit="ms", out=out, **options))
        except InputFormatError:
            assert reference is None  # refused exactly when nothing would be left in a split
            event("refused")
            assert not out.exists() and not [p for p in out.parent.glob("*") if not p.name.startswith(".")]
            return
        assert reference is not None
        event("written")
        before, valid_by_days, after, known = reference
        m = options["min_session_length"]

        raw = read_items(out / "items.parquet").column("id").to_pylist()
        train, valid, test = (_written(out, split, raw) for split in ("train", "valid", "test"))
        for split in (train, valid, test):
            assert all(len(events) >= m for events in split.values())
        # 2. the time split, and every event of a train or validation session kept as it was
        assert set(train) | set(valid) == set(before) and not set(train) & set(valid)
        assert all(_same_events(events, before[s]) for s, events in {**train, **valid}.items())
        assert set(test) <= set(after)
        if train and test:
            assert max(_start(ev) for ev in {**train, **valid}.values()) < min(_start(ev) for ev in test.values())
        # 3. validation from the end of train
        if options["valid_days"] is not None:
            assert set(valid) == set(valid_by_days)
        elif options["valid_fraction"] is not None:
            assert len(valid) == round(len(before) * options["valid_fraction"])
            assert max(_start(ev) for ev in train.values()) <= min(_start(ev) for ev in valid.values())
        else:
            assert not valid
        # 4. test sessions: unknown items dropped (or kept), short ones gone
        assert known == {item for events in {**train, **valid}.values() for item, _ in events}
        for s, events in after.items():
            expected = events if options["unknown_test_items"] == "keep" else [e for e in events if e[0] in known]
            if len(expected) >= m:
                assert s in test and _same_events(test[s], expected)
            else:
                assert s not in test
        test_items = {item for events in test.values() for item, _ in events}
        if options["unknown_test_items"] == "drop":
            assert test_items <= known
        # 5. the catalogue: sorted raw ids, dense 1..N, all used; counts are train clicks
        table = read_items(out / "items.parquet")
        assert table.column("item").to_pylist() == list(range(1, len(raw) + 1))
        assert raw == sorted(raw) and len(set(raw)) == len(raw)
        assert set(raw) == known | (test_items if options["unknown_test_items"] == "keep" else set())
        clicks = Counter(item for events in train.values() for item, _ in events)
        assert table.column("count").to_pylist() == [clicks[item] for item in raw]


# --------------------------------------------------------------------------------------------- batches


@st.composite
def batches(draw_, max_items: int = 30):
    """(inputs (B, T) left-padded, n_items): random lengths, items drawn from 1..n_items."""
    n_items = draw_(st.integers(2, max_items))
    b, t = draw_(st.integers(1, 5)), draw_(st.integers(1, 6))
    rows = []
    for _ in range(b):
        length = draw_(st.integers(0, t))
        rows.append([0] * (t - length) + [draw_(st.integers(1, n_items)) for _ in range(length)])
    return torch.tensor(rows, dtype=torch.long), n_items


def _owners(inputs: torch.Tensor) -> torch.Tensor:
    """Session of each real click, in row-major order (how training passes them for eventwise sampling)."""
    return (inputs != 0).reshape(-1).nonzero().squeeze(1) // inputs.shape[1]


@SETTINGS
@given(batches(), st.integers(1, 40), st.sampled_from(["batchwise", "sessionwise", "eventwise"]), st.booleans(), st.integers(0, 2**31))
def test_uniform_negatives_with_rejection_never_hold_a_rejected_item(batch, count, style, popularity, seed):
    inputs, n_items = batch
    owners = _owners(inputs)
    counts = torch.arange(n_items + 1, dtype=torch.float64) % 4 + 1 if popularity else None
    distribution = ItemDistribution(n_items, counts, 1.0, torch.device("cpu"))
    shared, local = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    ids, valid = uniform_negatives(distribution, count, style, inputs, owners, True, shared, local)
    rows = {"batchwise": [set(inputs[inputs != 0].tolist())], "sessionwise": [set(r[r != 0].tolist()) for r in inputs]}.get(style)
    if rows is None:
        rows = [set(inputs[o][inputs[o] != 0].tolist()) for o in owners.tolist()]
    ids, valid = ids.reshape(len(rows), count), valid.reshape(len(rows), count)
    assert bool(((ids >= 1) & (ids <= n_items)).all())
    for forbidden, row_ids, row_valid in zip(rows, ids.tolist(), valid.tolist()):
        assert not any(ok and item in forbidden for item, ok in zip(row_ids, row_valid))
        if len(forbidden) < n_items:
            assert all(row_valid)  # drawn among the allowed items directly: every slot is filled while one is left
        if len(forbidden) == n_items:
            assert not any(row_valid)
    plain, none = uniform_negatives(distribution, count, style, inputs, owners, False, shared, local)
    assert none is None and plain.shape == (ids.shape if style != "batchwise" else (count,))


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 35), st.booleans(), st.integers(0, 2**31), st.data())
def test_in_batch_negatives_come_from_other_sessions_without_replacement(b, t, count, reject_own, seed, data):
    lengths = data.draw(st.lists(st.integers(0, t), min_size=b, max_size=b))
    ids_of_positions = torch.randperm(b * t, generator=torch.Generator().manual_seed(seed)).reshape(b, t) + 1  # distinct: an id names its position
    inputs = torch.where(torch.arange(t)[None, :] >= t - torch.tensor(lengths)[:, None], ids_of_positions, 0)
    ids, valid = in_batch_negatives(inputs, count, reject_own, torch.Generator().manual_seed(seed))
    assert ids.shape == valid.shape == (b, count)
    owner = {int(item): row for row in range(b) for item in inputs[row] if item != 0}
    for row in range(b):
        chosen = [int(i) for i, ok in zip(ids[row], valid[row]) if ok]
        assert all(i in owner for i in chosen)  # real clicks of the batch, never padding
        assert len(set(chosen)) == len(chosen)  # no position twice
        if reject_own:
            assert all(owner[i] != row for i in chosen)
        available = sum(lengths) - (lengths[row] if reject_own else 0)
        assert len(chosen) == min(count, available)  # slots stay empty only when the batch has too few clicks


@st.composite
def assemblies(draw_):
    """A scorer, hidden states, a mask, targets and drawn negatives: everything sampled_loss takes."""
    inputs, n_items = draw_(batches(max_items=8))  # few items: negatives often equal the target
    b, t = inputs.shape
    seed = draw_(st.integers(0, 2**31))
    generator = torch.Generator().manual_seed(seed)
    scorer = ItemScorer(n_items, 4, share_embeddings=True, output_bias=draw_(st.booleans()))
    with torch.no_grad():
        for parameter in scorer.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    hidden = torch.randn(b, t, 4, generator=generator)
    mask = inputs != 0
    targets = torch.randint(1, n_items + 1, (b, t), generator=generator)
    style = draw_(st.sampled_from(["batchwise", "sessionwise", "eventwise"]))
    n_uniform, n_in_batch = draw_(st.integers(0, 12)), draw_(st.integers(0, 6))
    if n_uniform + n_in_batch == 0:
        n_uniform = 1
    negatives = draw(
        ItemDistribution(n_items, None, 1.0, torch.device("cpu")),
        inputs,
        _owners(inputs),
        n_uniform,
        n_in_batch,
        style,
        draw_(st.booleans()),
        draw_(st.booleans()),
        generator,
        torch.Generator().manual_seed(seed + 1),
    )
    return scorer, hidden, mask, targets, negatives


def _naive_columns(negatives, owners: list[int], event: int) -> tuple[list[int], list[bool]]:
    """(ids, slot valid) of every negative column of event `event` (owned by session owners[event])."""
    owner = owners[event]
    uniform = negatives.uniform
    if negatives.style == "batchwise":
        ids, ok = uniform.tolist(), None if negatives.uniform_valid is None else negatives.uniform_valid.tolist()
    else:
        row = owner if negatives.style == "sessionwise" else event
        ids = uniform[row].tolist() if uniform.numel() else []
        ok = None if negatives.uniform_valid is None else negatives.uniform_valid[row].tolist()
    ok = [True] * len(ids) if ok is None else ok
    if negatives.in_batch is not None:
        ids += negatives.in_batch[owner].tolist()
        ok += negatives.in_batch_valid[owner].tolist()
    return ids, ok


@SETTINGS
@given(assemblies(), st.booleans())
def test_masked_hits_are_exactly_the_columns_equal_to_the_target(assembly, mask_hits):
    scorer, hidden, mask, targets, negatives = assembly
    events = EventSlots.select(mask, targets)
    batch = Assembly(scorer, events.gather(hidden), events, negatives, False)
    owners = batch.owner.tolist()
    ids, valid = batch.column_ids(), batch.column_valid(mask_hits)
    for row, target in enumerate(targets[mask].tolist()):
        naive_ids, slot_ok = _naive_columns(negatives, owners, row)
        assert ids[row].tolist() == naive_ids
        assert valid[row].tolist() == [ok and (item != target or not mask_hits) for item, ok in zip(naive_ids, slot_ok)]


@SETTINGS
@given(assemblies(), st.integers(0, 20), st.booleans())
def test_topk_keeps_the_k_highest_scoring_valid_negatives(assembly, k, mask_hits):
    """sampled_loss with top-k equals sampled softmax over the k best valid negatives picked by a plain sort."""
    scorer, hidden, mask, targets, negatives = assembly
    owners = (mask.reshape(-1).nonzero().squeeze(1) // mask.shape[1]).tolist()
    if not owners:
        return
    table = scorer.output_table().detach().double()
    bias = scorer.output_bias.detach().double()[:, 0] if scorer.output_bias is not None else torch.zeros(len(table), dtype=torch.float64)
    expected = []
    for row, (h, target) in enumerate(zip(hidden[mask].double(), targets[mask].tolist())):
        ids, ok = _naive_columns(negatives, owners, row)
        scores = [float(h @ table[i] + bias[i]) for i, good in zip(ids, ok) if good and (i != target or not mask_hits)]
        kept = sorted(scores, reverse=True)[:k] if k else scores
        positive = float(h @ table[target] + bias[target])
        expected.append(math.log(sum(math.exp(s) for s in [positive, *kept])) - positive)
    spec = LossSpec(
        loss="ssm", logq=0.0, topk=min(k, negatives.uniform.shape[-1] + (0 if negatives.in_batch is None else negatives.in_batch.shape[1])), mask_hits=mask_hits
    )
    with torch.no_grad():
        loss = sampled_loss(scorer, hidden, mask, targets, negatives, spec)
    assert float(loss) == pytest.approx(sum(expected) / len(expected), rel=1e-4, abs=1e-4)
