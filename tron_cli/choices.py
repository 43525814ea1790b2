"""Fixed sets of choices shared by the core and the CLI, in a module with no heavy imports: the CLI's modules
are imported by `tron --help` (for each command's summary), which must not import torch."""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TIES = ("pessimistic", "optimistic", "average")  # how items that tie with a target count in its rank
PROTOCOLS = ("all", "tron", "otto")  # every target of every session, the reference's evaluation, or OTTO's Kaggle task
SPLITS = ("test", "valid")  # what `tron evaluate` scores
INPUT_FORMATS = ("auto", "ndjson", "otto", "parquet")  # what `tron recommend` reads
ON_ERROR = ("fail", "skip")  # what `tron recommend` does with a malformed input line
EXPORT_FORMATS = ("safetensors", "onnx")  # what `tron export` writes beside the weights
LOG_FORMATS = ("auto", "otto-jsonl", "jsonl", "csv", "tsv", "parquet")  # what `tron preprocess --train` reads (auto: by the name)
# the common names of a log's columns, recognised when the flags do not name them; compared without case, "_",
# "-", "." and spaces (sessionId, session_id, SessionID)
COLUMN_NAMES = {
    "session": ("session", "session_id", "session_key", "sid", "user_session", "visit_id"),
    "item": ("item", "item_id", "aid", "product", "product_id", "sku", "article_id", "content_id"),
    "time": ("ts", "timestamp", "time", "datetime", "event_time", "time_stamp", "created_at"),
}
RETRIEVALS = ("exact", "index")  # how `tron evaluate` finds a model's top-k: every item scored, or through the bundle's item index
# the values of a log's type column that mean an order or a cart, unless --order-types / --cart-types say
ORDER_NAMES = ("orders", "order", "purchase", "purchases", "buy", "buys", "transaction", "checkout")
CART_NAMES = ("carts", "cart", "addtocart", "add_to_cart", "basket")
OBJECTIVES = ("click", "multitron")  # what `tron train` optimises: the next click, or clicks and orders traded off by a preference
# MultiTRON: the order weight pi_o of the preference [1 - pi_o, pi_o] that a run is evaluated and recommends at, unless told
DEFAULT_ORDER_WEIGHT = 0.5
# `tron recommend --format kaggle` (OTTO's submission): the order weight behind each event type's list
KAGGLE_ORDER_WEIGHTS = {"clicks": 0.0, "carts": 0.5, "orders": 1.0}
