"""What a session's other events say about its clicks: the order label of each click (MultiTRON: the clicked
item is ordered later in the session). Derived on load from the stored events, never stored itself."""

from __future__ import annotations

import numpy as np

from tron_cli.artifacts.sessions import ORDER, Sessions


def order_labels(sessions: Sessions) -> np.ndarray:
    """(E,) bool: click e's item has an order in the same session at the click's time or later."""
    labels = np.zeros(sessions.n_events, dtype=bool)
    extra = sessions.extra
    if extra is None or sessions.n_events == 0:
        return labels
    orders = extra.types == ORDER
    if not orders.any():
        return labels
    width = int(max(sessions.items.max(), extra.items.max())) + 1
    owner = np.repeat(np.arange(len(sessions), dtype=np.int64), np.diff(extra.offsets))[orders]
    order_keys = owner * width + extra.items[orders]
    # the latest order of each (session, item)
    arranged = np.lexsort((extra.ts[orders], order_keys))
    keys, ts = order_keys[arranged], extra.ts[orders][arranged]
    last = np.append(keys[1:] != keys[:-1], True)
    keys, latest = keys[last], ts[last]
    click_owner = np.repeat(np.arange(len(sessions), dtype=np.int64), sessions.lengths)
    click_keys = click_owner * width + sessions.items
    position = np.searchsorted(keys, click_keys).clip(max=len(keys) - 1)
    return (keys[position] == click_keys) & (latest[position] >= sessions.ts)
