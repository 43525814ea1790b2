"""The training step's CPU shortcuts compute what the path of every other device computes.

On the CPU, reading a value back is free (`runtime.reads_are_free`), and three shortcuts use that or the CPU's
own costs: attention in windows of sessions of similar length (`sasrec.length_groups`), accidental hits
masked among the k + r best negatives instead of over the whole uniform block (`Assembly._most_hits`),
dropout masks drawn four elements per 64-bit draw (`models/dropout.py`), and the top-k of a wide uniform block
through a bf16 product where the CPU has one in hardware (`top_columns.proven_top`).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import invoke, tiny_train_args
from tron_cli import runtime
from tron_cli.models import dropout as dropout_module
from tron_cli.models import sasrec
from tron_cli.models.base import ItemScorer
from tron_cli.models.sasrec import SASRec, SASRecConfig
from tron_cli.training import negatives as negatives_module
from tron_cli.training.negatives import EventSlots, LossSpec, sampled_loss
from tron_cli.training.sampling import Negatives

LENGTHS = [12, 1, 3, 7, 2, 12, 5, 1, 9, 2, 2, 3]


def _windows(lengths: list[int], width: int, n_items: int, generator: torch.Generator) -> torch.Tensor:
    items = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        items[row, width - length :] = torch.randint(1, n_items + 1, (length,), generator=generator)
    return items


@pytest.mark.parametrize("positions, block", [("right", "pre"), ("left", "pre"), ("right", "sasrec"), ("left", "sasrec")])
def test_attention_in_length_groups_equals_the_padded_window(positions, block, monkeypatch):
    monkeypatch.setattr(sasrec, "GROUP_COST", 0)  # as many groups as pay off by cells alone: three here
    generator = torch.Generator().manual_seed(0)
    items = _windows(LENGTHS, 12, 50, generator)
    assert len(sasrec._group_bounds((items != 0).sum(1).sort(descending=True).values)) == 4
    events = EventSlots.select(items != 0, items, int((items != 0).sum()) + 3)  # three empty slots at the end
    torch.manual_seed(1)
    model = SASRec(SASRecConfig(hidden_size=16, num_heads=2, dropout=0.0, max_length=12, positions=positions, block=block), n_items=50).train()
    results = []
    for free in (True, False):
        monkeypatch.setattr(runtime, "reads_are_free", lambda device, free=free: free)
        model.zero_grad()
        hidden = model(items, False, events.positions)  # (E, d)
        (hidden * torch.linspace(-1, 1, hidden.numel()).view_as(hidden)).sum().backward()
        results.append((hidden.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (grouped, grouped_grads), (padded, padded_grads) = results
    torch.testing.assert_close(grouped, padded, atol=1e-6, rtol=1e-5)
    for got, want in zip(grouped_grads, padded_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # and the states of the real events are those of the whole-window pass evaluation runs
    torch.testing.assert_close(grouped[events.real], events.gather(model(items).detach())[events.real], atol=1e-6, rtol=1e-5)


def test_length_groups_split_one_long_session_from_many_short_ones():
    ordered = torch.tensor([50] + [20] * 27 + [3] * 100)
    assert sasrec._group_bounds(ordered) == [0, 1, 28, 128]
    assert sasrec._group_bounds(torch.tensor([5] * 10)) == [0, 10]  # one length: one window
    assert sasrec._group_bounds(torch.tensor([7])) == [0, 1]


def _batch_with_hits(generator: torch.Generator):
    n_items, d = 30, 8
    scorer = ItemScorer(n_items, d, share_embeddings=True, output_bias=False)
    with torch.no_grad():
        scorer.item_embedding.copy_(torch.randn(n_items + 1, d, generator=generator))
    items = _windows([6, 4, 2, 5], 6, n_items, generator)
    mask = items != 0
    targets = torch.where(mask, torch.randint(1, n_items + 1, items.shape, generator=generator), 0)
    # targets drawn among the uniform negatives: one of them three times, others once
    uniform = torch.cat([targets[mask][:3].repeat_interleave(torch.tensor([3, 1, 1])), torch.randint(1, n_items + 1, (20,), generator=generator)])
    negatives = Negatives("batchwise", uniform, in_batch=items[:, :3].flip(0), in_batch_valid=items[:, :3].flip(0) != 0)
    hidden = torch.randn(*items.shape, d, generator=generator, requires_grad=True)
    return scorer, hidden, mask, targets, negatives


@pytest.mark.parametrize("topk", [3, 10, 24])  # 24: k + r is more than the 25 uniform columns
def test_hits_masked_among_the_best_equal_hits_masked_everywhere(topk, monkeypatch):
    results = []
    for free in (True, False):
        monkeypatch.setattr(runtime, "reads_are_free", lambda device, free=free: free)
        scorer, hidden, mask, targets, negatives = _batch_with_hits(torch.Generator().manual_seed(3))
        loss = sampled_loss(scorer, hidden, mask, targets, negatives, LossSpec(loss="ssm", topk=topk, mask_hits=True, logq=0.0))
        loss.backward()
        results.append(
            (loss.item(), hidden.grad.clone(), scorer.item_embedding.grad.to_dense() if scorer.item_embedding.grad.is_sparse else scorer.item_embedding.grad)
        )
    (loss_late, hidden_late, table_late), (loss_dense, hidden_dense, table_dense) = results
    assert loss_late == pytest.approx(loss_dense, abs=1e-6)
    torch.testing.assert_close(hidden_late, hidden_dense, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(table_late, table_dense, atol=1e-6, rtol=1e-5)
    # and masking matters here: without it the loss differs
    scorer, hidden, mask, targets, negatives = _batch_with_hits(torch.Generator().manual_seed(3))
    assert sampled_loss(scorer, hidden, mask, targets, negatives, LossSpec(loss="ssm", topk=topk, mask_hits=False, logq=0.0)).item() != pytest.approx(
        loss_dense, abs=1e-4
    )


def test_cpu_dropout_drops_at_the_rate_and_keeps_the_expectation():
    x = torch.ones(400_000)
    torch.manual_seed(5)
    out = dropout_module.dropout(x, 0.05, True)
    dropped = float((out == 0).float().mean())
    assert dropped == pytest.approx(0.05, abs=0.002)
    assert float(out.mean()) == pytest.approx(1.0, abs=0.01)
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 65536 / (65536 - round(0.05 * 65536))))
    torch.manual_seed(5)
    assert torch.equal(dropout_module.dropout(x, 0.05, True), out)  # the global seed decides the mask
    assert dropout_module.dropout(x, 0.05, False) is x and dropout_module.dropout(x, 0.0, True) is x
    # gradients flow through the kept elements only, with their scale
    y = torch.ones(1000, requires_grad=True)
    dropped_out = dropout_module.dropout(y, 0.3, True)
    dropped_out.sum().backward()
    torch.testing.assert_close(y.grad, dropped_out.detach())


def test_written_out_attention_equals_torchs_without_its_dropout(monkeypatch):
    generator = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, 2, 5, 4, generator=generator) for _ in range(3))
    column = torch.arange(5)
    allowed = (column[:, None] >= column[None, :]).expand(3, 1, 5, 5)
    monkeypatch.setattr(dropout_module, "dropout", lambda x, p, training: x)
    written = dropout_module.attention(q, k, v, dropout_module.AttentionMask(allowed), 0.2, True)  # the CPU's own path
    torch.testing.assert_close(written, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed))


def test_training_through_the_bf16_prefilter_equals_training_without_it(tiny_dataset, tmp_path, monkeypatch):
    """`tron train` with 3,000 uniform negatives and top-20 (a block wide enough for the prefilter), once with
    the prefilter taken at every step and once without: the same top-k each step up to fp32 rounding, so the same
    losses and weights to within that rounding."""
    taken = []
    plain = negatives_module.proven_top

    def counting(*args, **kwargs):
        result = plain(*args, **kwargs)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(negatives_module, "proven_top", counting)
    runs = {}
    for bf16 in (True, False):
        monkeypatch.setattr(runtime, "cpu_bf16_products", lambda on=bf16: on)
        out = tmp_path / f"bf16-{bf16}"
        flags = tiny_train_args(hidden_size=32, uniform_negatives=3000, topk=20, epochs=1, overfit_batches=6, valid_limit=0.2)
        result = invoke("train", str(tiny_dataset), *flags, "--out", str(out))
        assert result.exit_code == 0, result.stderr
        runs[bf16] = (json.loads((out / "summary.json").read_text())["loss"], load_file(out / "model.safetensors"))
    assert taken and taken.count(True) == taken.count(False) == len(taken) // 2
    (loss_on, weights_on), (loss_off, weights_off) = runs[True], runs[False]
    assert loss_on == pytest.approx(loss_off, rel=1e-4)
    for name, tensor in weights_off.items():
        torch.testing.assert_close(weights_on[name], tensor, rtol=1e-3, atol=1e-4)
