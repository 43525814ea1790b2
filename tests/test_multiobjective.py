"""MultiTRON's losses against values computed with the reference's own loss functions
(`golden/multitron_losses.json`, otto-de/MultiTRON src/loss.py), to 1e-5."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import golden
from tron_cli.losses.multitron import approx_epo, click_and_distortion, click_and_order, total


def _events(inputs: dict) -> tuple[torch.Tensor, ...]:
    """The golden (B, T, ...) inputs as events: only the real positions, as tron computes them."""
    mask = torch.tensor(inputs["mask"], dtype=torch.float64).bool()
    pos = torch.tensor(inputs["pos_logits"], dtype=torch.float64)[..., 0][mask]
    neg = torch.tensor(inputs["neg_logits"], dtype=torch.float64)[mask]
    ordered = torch.tensor(inputs["order_labels"], dtype=torch.float64)[mask]
    return pos, neg, torch.ones_like(neg, dtype=torch.bool), ordered, mask


@pytest.mark.parametrize("case", range(3))
@pytest.mark.parametrize("loss", ["ssm_and_be", "ssm_and_distortion"])
def test_losses_match_the_reference(case, loss):
    data = golden("multitron_losses.json")["cases"][case]
    pos, neg, valid, ordered, mask = _events(data["inputs"])
    beta = torch.tensor(data["inputs"]["beta"], dtype=torch.float64)
    expected = data[loss]
    per_event = click_and_order(pos, neg, valid, ordered) if loss == "ssm_and_be" else click_and_distortion(pos, neg, valid)
    torch.testing.assert_close(per_event[:, 0], torch.tensor(expected["click_elementwise"], dtype=torch.float64)[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_event[:, 1], torch.tensor(expected["second_elementwise"], dtype=torch.float64)[mask], atol=1e-5, rtol=1e-5)
    value, means, epo = total(per_event, beta, data["inputs"]["regularization_penalty"])
    assert means.tolist() == pytest.approx([expected["click_loss"], expected["second_loss"]], abs=1e-5)
    assert float((means * beta).sum()) == pytest.approx(expected["weighted"], abs=1e-5)
    assert float(epo) == pytest.approx(expected["approx_epo"], abs=1e-5)
    assert float(value) == pytest.approx(expected["total"], abs=1e-5)


def test_the_regulariser_is_the_reference_cross_entropy_of_softmax_shares():
    """The reference's own unit test pins shares [0.6, 0.4] to 0.6981; equal shares give its floor, ln 2."""
    assert float(approx_epo(torch.tensor([[0.6, 0.4]]), torch.tensor([1.0, 1.0]))[0]) == pytest.approx(0.6981, abs=1e-4)
    assert float(approx_epo(torch.tensor([[2.0, 2.0]]), torch.tensor([0.5, 0.5]))[0]) == pytest.approx(0.693147, abs=1e-6)


def test_masked_negatives_are_not_part_of_the_distortion():
    pos, neg = torch.tensor([0.5]), torch.tensor([[1.0, 9.0]])
    masked = click_and_distortion(pos, neg, torch.tensor([[True, False]]))
    alone = click_and_distortion(pos, neg[:, :1], torch.tensor([[True]]))
    torch.testing.assert_close(masked, alone)
