"""The losses and TRON's negative assembly against values computed with the reference code (../shared/golden)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import golden
from tron_cli import runtime
from tron_cli.losses import sampled
from tron_cli.models.base import ItemScorer
from tron_cli.training.negatives import LossSpec, per_event, sampled_loss
from tron_cli.training.sampling import Negatives


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float((values * mask).sum() / mask.sum())


@pytest.mark.parametrize("case", range(3))
def test_losses_match_reference(case):
    data = golden("losses.json")["cases"][case]
    pos = torch.tensor(data["pos_logits"]).squeeze(-1)  # (B, T)
    neg = torch.tensor(data["neg_logits"])  # (B, T, N)
    mask = torch.tensor(data["mask"])
    valid = torch.ones_like(neg, dtype=torch.bool)
    expected = {
        "bce": (LossSpec(loss="bce", topk=0, mask_hits=True, logq=0.0), data["bce"]),
        "ssm": (LossSpec(loss="ssm", topk=0, mask_hits=True, logq=0.0), data["ssm"]),
        "bpr-max 0.5": (LossSpec(loss="bpr-max", topk=0, mask_hits=True, logq=0.0, options={"bpr_penalty": 0.5}), data["bpr_max_penalty_0.5"]),
        "bpr-max 0.03": (LossSpec(loss="bpr-max", topk=0, mask_hits=True, logq=0.0, options={"bpr_penalty": 0.03}), data["bpr_max_penalty_0.03"]),
    }
    for name, (spec, value) in expected.items():
        got = _masked_mean(per_event(spec, pos, neg, valid), mask)
        assert got == pytest.approx(value, abs=1e-5, rel=1e-5), name


def _golden_batch(data):
    table = torch.tensor(data["item_embeddings"])
    scorer = ItemScorer(table.shape[0] - 1, table.shape[1], share_embeddings=True, output_bias=False)
    with torch.no_grad():
        scorer.item_embedding.copy_(table)
    hidden = torch.tensor(data["hidden"], requires_grad=True)
    negatives = Negatives(
        "batchwise",
        torch.tensor(data["uniform_negatives"]),
        in_batch=torch.tensor(data["in_batch_negatives"]),
        in_batch_valid=torch.ones(len(data["in_batch_negatives"]), len(data["in_batch_negatives"][0]), dtype=torch.bool),
    )
    spec = LossSpec(loss=data["loss"], topk=data["topk"], mask_hits=False, logq=0.0, options={"bpr_penalty": data["bpr_penalty"] or 1.0})
    return scorer, hidden, torch.tensor(data["mask"]).bool(), torch.tensor(data["labels"]), negatives, spec


@pytest.mark.parametrize("case", range(5))
def test_negative_assembly_matches_reference_calc_loss(case):
    data = golden("calc_loss.json")["cases"][case]
    scorer, hidden, mask, labels, negatives, spec = _golden_batch(data)
    loss = sampled_loss(scorer, hidden, mask, labels, negatives, spec)
    assert loss.item() == pytest.approx(data["value"], abs=1e-5, rel=1e-5)


def _naive_topk_loss(scorer, hidden, mask, labels, negatives, spec):
    """The reference's way: all negative scores with autograd, then topk of the matrix."""
    table = scorer.item_embedding
    events = mask.reshape(-1).nonzero().squeeze(1)
    b, t, d = hidden.shape
    h = hidden.reshape(b * t, d)[events]
    owner = events // t
    pos = (h * table[labels.reshape(-1)[events]]).sum(-1)
    uniform = h @ table[negatives.uniform].T
    in_batch = (h.unsqueeze(1) * table[negatives.in_batch[owner]]).sum(-1)
    neg = torch.cat([uniform, in_batch], 1)
    if spec.mask_hits:  # a negative that is the event's own target is none
        ids = torch.cat([negatives.uniform.expand(len(events), -1), negatives.in_batch[owner]], 1)
        neg = neg.masked_fill(ids == labels.reshape(-1)[events][:, None], float("-inf"))
    if spec.topk:
        neg = neg.topk(spec.topk, dim=1).values
    return per_event(spec, pos, neg, neg > float("-inf")).mean()


@pytest.mark.parametrize("case", [1, 3, 4])
def test_topk_recomputation_equals_autograd_through_full_matrix(case):
    data = golden("calc_loss.json")["cases"][case]
    grads = []
    for compute in (sampled_loss, _naive_topk_loss):
        scorer, hidden, mask, labels, negatives, spec = _golden_batch(data)
        loss = compute(scorer, hidden, mask, labels, negatives, spec)
        loss.backward()
        grads.append((loss.item(), hidden.grad.clone(), scorer.item_embedding.grad.clone()))
    _assert_same_loss_and_gradients(*grads)


def _assert_same_loss_and_gradients(a: tuple, b: tuple) -> None:
    """Two (loss, gradient of the states, gradient of the item table) agree to float rounding."""
    (loss_a, hidden_a, table_a), (loss_b, hidden_b, table_b) = a, b
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    torch.testing.assert_close(hidden_a, hidden_b, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(table_a, table_b, atol=1e-6, rtol=1e-5)


def test_masked_hits_are_not_negatives():
    pos = torch.tensor([1.0])
    neg = torch.tensor([[1.0, -2.0]])
    with_hit = sampled.ssm(pos, neg, torch.tensor([[True, True]]))
    masked = sampled.ssm(pos, neg, torch.tensor([[False, True]]))
    only_real = sampled.ssm(pos, neg[:, 1:], torch.tensor([[True]]))
    assert float(masked) == pytest.approx(float(only_real))
    assert float(with_hit) > float(masked)


def test_bpr_max_with_no_valid_negative_is_zero_not_nan():
    out = sampled.bpr_max(torch.tensor([0.3]), torch.tensor([[5.0]]), torch.tensor([[False]]), penalty=1.0)
    assert torch.isfinite(out).all() and float(out) == 0.0


def test_gbce_with_t_zero_is_binary_cross_entropy():
    torch.manual_seed(0)
    pos, neg = torch.randn(7), torch.randn(7, 5) * 3
    valid = torch.ones_like(neg, dtype=torch.bool)
    logits = torch.cat([pos[:, None], neg], 1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)
    torch.testing.assert_close(sampled.gbce(pos, neg, valid, t=0.0, n_items=1000), plain)
    # t > 0 weakens the positive term (beta < 1), so the loss drops
    assert (sampled.gbce(pos, neg, valid, t=0.75, n_items=1000) < plain).all()


def test_gbce_is_finite_for_extreme_scores():
    pos = torch.tensor([-1e4, 1e4], requires_grad=True)
    neg = torch.tensor([[1e4], [-1e4]])
    out = sampled.gbce(pos, neg, torch.ones_like(neg, dtype=torch.bool), t=0.9, n_items=10)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(pos.grad).all()


@pytest.mark.parametrize("with_bias", [False, True])
def test_kept_scores_have_the_gradients_of_the_plain_product(with_bias):
    """KeptScores gives hidden, pool rows and biases the gradients of (hidden[e] * pool[index[e, j]]).sum() + bias,
    rows kept by several events (and twice by one) included, without materialising the kept rows."""
    from tron_cli.training.negatives import KeptScores

    generator = torch.Generator().manual_seed(4)
    hidden = torch.randn(7, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    pool = torch.randn(11, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, generator=generator, requires_grad=True) if with_bias else None
    index = torch.randint(0, 11, (7, 4), generator=generator)
    weight = torch.randn(7, 4, dtype=torch.float64, generator=generator)
    plain = (hidden[:, None] * pool[index]).sum(-1) + (bias[index] if bias is not None else 0)
    (plain * weight).sum().backward()
    expected = [t.grad.clone() for t in (hidden, pool, bias) if t is not None]
    for t in (hidden, pool, bias):
        if t is not None:
            t.grad = None
    kept = KeptScores.apply(plain.detach(), hidden, pool, bias, index)
    torch.testing.assert_close(kept, plain.detach())
    (kept * weight).sum().backward()
    for got, want in zip([t.grad for t in (hidden, pool, bias) if t is not None], expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("width", "k"), [(6403, 100), (16384, 100), (800, 1), (1500, 100)])
def test_candidate_columns_of_a_wide_row_hold_its_top_k(width, k):
    """The slice maxima (two levels deep at 6,403 columns, a remainder past the last whole slice included) keep
    distinct columns among which lie the values torch.topk finds; masked (-inf) slots and repeated values included.
    A row too narrow for them has none."""
    from tron_cli.training.top_columns import candidate_columns

    generator = torch.Generator().manual_seed(width + k)
    scores = torch.randn(37, width, generator=generator)
    scores[:, 5::7] = float("-inf")
    scores[3] = float("-inf")  # a row with no negative at all
    scores[4, :] = 0.5
    scores[5, -3:] = 10.0  # the best of a row in the remainder
    columns = candidate_columns(scores, k)
    if width < 16 * k:
        assert columns is None
        return
    assert columns is not None and columns.shape == (37, 4 * k + width % 4)
    values = scores.gather(1, columns).topk(k, dim=1).values
    torch.testing.assert_close(values, scores.topk(k, dim=1).values)
    assert (columns.sort(1).values.diff(dim=1) > 0).all()  # no column twice


def _hardware_bf16(monkeypatch, on: bool) -> None:
    """The bf16 prefilter of `top_columns.proven_top` taken (on) or not, whatever this CPU has: its arithmetic is
    the same where bf16 products are emulated, only slower."""
    monkeypatch.setattr(runtime, "cpu_bf16_products", lambda: on)


def _exact_top(hidden: torch.Tensor, vectors: torch.Tensor, k: int, invalid: torch.Tensor | None) -> torch.Tensor:
    scores = hidden @ vectors.T
    if invalid is not None:
        scores = scores.masked_fill(invalid, float("-inf"))
    return scores.topk(k, dim=1).values


@pytest.mark.parametrize("masking", ["none", "columns", "cells"])
def test_proven_top_holds_the_exact_top_k_with_their_fp32_scores(monkeypatch, masking):
    """The columns that the bf16 prefilter keeps hold each row's k best fp32 scores among the valid columns, with
    those scores (rescored in fp32); masked columns score -inf; a row with no valid column, and one with fewer
    than k, come out whole."""
    from tron_cli.training.top_columns import proven_top

    _hardware_bf16(monkeypatch, True)
    generator = torch.Generator().manual_seed(7)
    e, u, d, k = 40, 4096, 24, 20
    hidden = torch.randn(e, d, generator=generator) * torch.rand(e, 1, generator=generator) * 3
    vectors = torch.randn(u, d, generator=generator)
    invalid = None
    if masking == "columns":
        invalid = torch.rand(u, generator=generator) < 0.3  # (U,)
    elif masking == "cells":
        invalid = torch.rand(e, u, generator=generator) < 0.3
        invalid[0] = True  # nothing valid
        invalid[1, 10:] = True  # 10 valid columns: fewer than k
    with torch.no_grad():
        result = proven_top(hidden, vectors, k, invalid)
    assert result is not None
    values, columns = result
    assert values.dtype == torch.float32 and columns.shape == values.shape and values.shape[1] >= k
    rescored = (hidden @ vectors.T).gather(1, columns)
    finite = values > float("-inf")
    torch.testing.assert_close(values[finite], rescored[finite])
    if invalid is not None:
        assert not (invalid.expand(e, u).gather(1, columns) & finite).any()
    torch.testing.assert_close(values.topk(k, dim=1).values, _exact_top(hidden, vectors, k, invalid))


def test_proven_top_scores_unproven_rows_in_full_fp32(monkeypatch):
    """Rows whose scores lie too close together for the bf16 bound to separate the k best (columns a hair apart)
    fall back to the full fp32 product, and still come out exact; rows the bound separates do not."""
    from tron_cli.training import top_columns

    _hardware_bf16(monkeypatch, True)
    generator = torch.Generator().manual_seed(8)
    e, u, d, k = 30, 4096, 16, 20
    base = torch.randn(d, generator=generator)
    vectors = base + 1e-4 * torch.randn(u, d, generator=generator)  # every score within the bf16 error of the others
    vectors[::2] = torch.randn(u // 2, d, generator=generator)  # half of them far apart
    hidden = torch.randn(e, d, generator=generator)
    hidden[:10] = base  # these rows cannot be told apart by a bf16 product
    exact_rows = []
    plain = top_columns.shared_scores

    def counting(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if h.dtype == torch.float32:
            exact_rows.append(h.shape[0])
        return plain(h, x)

    monkeypatch.setattr(top_columns, "shared_scores", counting)
    with torch.no_grad():
        result = top_columns.proven_top(hidden, vectors, k, None)
    assert result is not None
    values, _ = result
    assert exact_rows and 10 <= exact_rows[0] < e
    torch.testing.assert_close(values.topk(k, dim=1).values, _exact_top(hidden, vectors, k, None))


def test_proven_top_is_skipped_where_it_does_not_pay(monkeypatch):
    """None without hardware bf16 products, for a block narrower than 32 candidate widths, under autograd and
    for reduced-precision states: the callers take the fp32 path there."""
    from tron_cli.training.top_columns import proven_top

    hidden, vectors = torch.randn(8, 16), torch.randn(4096, 16)
    _hardware_bf16(monkeypatch, False)
    with torch.no_grad():
        assert proven_top(hidden, vectors, 20, None) is None
    _hardware_bf16(monkeypatch, True)
    with torch.no_grad():
        assert proven_top(hidden, vectors, 20, None) is not None
        assert proven_top(hidden, vectors[:1000], 20, None) is None  # 32 candidates a row need 1,024 columns
        assert proven_top(hidden.bfloat16(), vectors.bfloat16(), 20, None) is None
    assert proven_top(hidden, vectors, 20, None) is None


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-prefilter"])
@pytest.mark.parametrize("mask_hits", [False, True])
def test_topk_over_a_wide_uniform_block_equals_autograd_through_the_full_matrix(monkeypatch, mask_hits, bf16):
    """The loss and gradients of a batch whose uniform block takes the candidate columns (found in fp32, or
    through the bf16 prefilter), against the plain way; with `mask_hits`, targets among the 4,096 draws of 3,000
    items (each about once, and among the best: the states lie near their targets) are masked among them."""
    _hardware_bf16(monkeypatch, bf16)
    generator = torch.Generator().manual_seed(0)
    n_items, d, b, t, k = 3000, 8, 3, 5, 20
    results = []
    for compute in (sampled_loss, _naive_topk_loss):
        scorer = ItemScorer(n_items, d, share_embeddings=True, output_bias=False)
        with torch.no_grad():
            scorer.item_embedding.copy_(torch.randn(n_items + 1, d, generator=torch.Generator().manual_seed(1)))
        labels = torch.randint(1, n_items + 1, (b, t), generator=torch.Generator().manual_seed(3))
        # states near their targets' rows: a target drawn as a negative is among the best, where masking shows
        hidden = (scorer.item_embedding.detach()[labels] + 0.1 * torch.randn(b, t, d, generator=torch.Generator().manual_seed(2))).requires_grad_()
        mask = torch.ones(b, t, dtype=torch.bool)
        mask[0, :2] = False
        negatives = Negatives(
            "batchwise",
            torch.randint(1, n_items + 1, (4096,), generator=torch.Generator().manual_seed(4)),
            in_batch=torch.randint(1, n_items + 1, (b, 4), generator=generator),
            in_batch_valid=torch.ones(b, 4, dtype=torch.bool),
        )
        spec = LossSpec(loss="ssm", topk=k, mask_hits=mask_hits, logq=0.0)
        loss = compute(scorer, hidden, mask, labels, negatives, spec)
        loss.backward()
        results.append((loss.item(), hidden.grad.clone(), scorer.item_embedding.grad.clone()))
    _assert_same_loss_and_gradients(*results)
