"""The order sessions are trained in: per epoch, optionally shuffled and bucketed by length; seeds per rank."""

from __future__ import annotations

import torch


def epoch_order(n: int, shuffle: str, generator: torch.Generator) -> torch.Tensor:
    device = generator.device
    if shuffle == "shuffle_without_replacement":
        return torch.randperm(n, generator=generator, device=device)
    if shuffle == "shuffle_with_replacement":
        return torch.randint(0, n, (n,), generator=generator, device=device)
    return torch.arange(n, device=device)


def bucket_by_length(order: torch.Tensor, lengths: torch.Tensor, batch: int, window: int, generator: torch.Generator) -> torch.Tensor:
    """Within each window of `window` batches of `order`, group sessions of similar length into the same batch
    and shuffle those batches: a batch is then only as wide as its sessions, not as the longest of a random
    mix (short-session data wastes most of a padded batch). The window keeps the order's coarse structure."""
    span = batch * window
    out = order.clone()
    for start in range(0, len(order), span):
        part = order[start : start + span]
        part = part[torch.argsort(lengths[part], stable=True)]
        n_batches = -(-len(part) // batch)
        batches = torch.randperm(n_batches, generator=generator, device=order.device)
        position = (batches[:, None] * batch + torch.arange(batch, device=order.device)).reshape(-1)
        out[start : start + len(part)] = part[position[position < len(part)]]
    return out


def local_seed(seed: int, rank: int, epoch: int) -> int:
    """Seed of a rank's local generator in an epoch: fixed by (seed, rank, epoch), whatever ran before."""
    return (seed * 1_000_003 + (rank + 1) * 7_919 + epoch * 104_729) % (2**63)
