"""The keyword options of `tron_cli.train`, named as `tron train`'s flags (`--hidden-size` is `hidden_size`): the
training options of `TrainConfig`, the settings of every registered model and the options of every registered loss.

Generated from their declarations by `python -m tron_cli.cli._generate` (a test fails when it is stale); edit the
declarations, not this file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypedDict


class TrainOptions(TypedDict, total=False):
    """Every option `tron_cli.train` takes as a keyword; none is required."""

    model: str
    """The model to train; each starts from its own defaults (gru4rec: the reference's GRU4Rec+). [default: 'sasrec']"""

    uniform_negatives: int
    """Uniform (or popularity) negatives drawn per batch/session/event. [default: 16384]"""

    batch_negatives: int | None
    """In-batch negatives per session, from other sessions' clicks (auto: batch size - 1, TRON XL's 127 at batch 128). [default: None]"""

    sampling_style: Literal["eventwise", "sessionwise", "batchwise"]
    """How uniform negatives are shared: per event, per session or per batch. [default: 'batchwise']"""

    negative_distribution: Literal["uniform", "popularity"]
    """Draw negatives uniformly or by popularity (count ** alpha). [default: 'uniform']"""

    alpha: float
    """Popularity exponent for --negative-distribution popularity. [default: 1.0]"""

    reject_uniform_session_items: bool
    """Never draw a click of the session (of the batch, batchwise) as a uniform negative. [default: False]"""

    reject_in_batch_items: bool
    """Never take a session's own clicks as its in-batch negatives. [default: True]"""

    topk: int
    """Keep only the k highest-scoring negatives per event (0 keeps all). [default: 100]"""

    mask_hits: bool
    """Mask negatives equal to the target (--no-mask-hits: the reference's behaviour). [default: True]"""

    loss: str
    """The training objective. [default: 'ssm']"""

    logq: float
    """LogQ correction weight for sampled softmax losses (0 off, 1 full). [default: 0.0]"""

    objective: Literal["click", "multitron"]
    """click: the next click; multitron: clicks and orders, one model for every trade-off, read as a preference vector (MultiTRON). [default: 'click']"""

    beta: float | Sequence[float]
    """MultiTRON: the Dirichlet concentration of each step's preference vector: A (for A,A) or A,B. [default: (1.0, 1.0)]"""

    epochs: int
    """Training epochs. [default: 10]"""

    batch_size: int
    """Sessions per step (per device unless --batch-size-per-device). [default: 128]"""

    batch_size_per_device: int | None
    """Sessions per step on each device with --devices (default: --batch-size / N). [default: None]"""

    lr: float
    """Learning rate (the peak, under --lr-schedule). [default: 0.0005]"""

    lr_schedule: Literal["constant", "cosine", "linear"]
    """Learning rate over the run: constant, or cosine / linear decay to zero over all --epochs. [default: 'constant']"""

    warmup_steps: int
    """Raise the learning rate linearly from 0 over this many first steps. [default: 0]"""

    optimizer: Literal["adam", "adagrad", "sparse-adam", "sparse-adagrad"]
    """adam, adagrad, or a row-sparse variant that updates only the item rows a step touched. [default: 'adam']"""

    shuffle: Literal["no_shuffling", "shuffle_without_replacement", "shuffle_with_replacement", "shuffling_without_replacement", "shuffling_with_replacement"]
    """Session order per epoch (reference names; 'shuffling_*' spellings accepted). [default: 'no_shuffling']"""

    bucket_window: int
    """Put sessions of similar length in the same batch, within windows of N batches (less padding; 0: off). [default: 0]"""

    seed: int
    """Seed of every random draw (initialisation, dropout, order, negatives). [default: 0]"""

    early_stopping: int
    """Stop after N epochs without a better validation --select-on metric (0: never). [default: 0]"""

    select_on: str
    """Validation metric that selects the best epoch: recall@K, mrr@K or ndcg@K. [default: the dataset's: ndcg@10 on leave-one-out data, else recall@20]"""

    exclude_seen: bool
    """Validate without the session's own clicks in the ranking (as tron evaluate --exclude-seen). [default: the dataset's: on for leave-one-out data without blend grids]"""

    valid_limit: float
    """Validation sessions per epoch: a fraction (<= 1) or a number. [default: 1.0]"""

    transition_weight: float
    """Add W * log(1 + P(item | last click) / --transition-smoothing) to every score outside training, P counted on the train split (a Markov prior; 0: off). [default: 0.0]"""

    transition_smoothing: float
    """Additive smoothing alpha of the transition prior's probabilities. [default: 0.03]"""

    knn_weight: float
    """Add K * (session-kNN score / the session's largest) to every score outside training: the 100 most similar of the 500 most recent train sessions sharing an item vote (0: off). [default: 0.0]"""

    knn_similarity: Literal["sknn", "vsknn"]
    """The session kNN of --knn-weight: sknn (cosine of item sets) or vsknn (recency-weighted overlap). [default: 'sknn']"""

    repeat_weight: float
    """Add R / r to the score of an item the session clicked, r = 1 for its last click, 2 for the one before, ... outside training (0: off). [default: 0.0]"""

    transition_grid: float | Sequence[float]
    """Choose --transition-weight among these values (comma-separated) on the validation split when training ends (empty: keep it). [default: ()]"""

    knn_grid: float | Sequence[float]
    """Choose --knn-weight among these values (comma-separated) on the validation split when training ends. [default: ()]"""

    knn_similarities: str | Sequence[str]
    """Choose --knn-similarity among these (repeatable) on the validation split when training ends, with --knn-grid. [default: ()]"""

    repeat_grid: float | Sequence[float]
    """Choose --repeat-weight among these values (comma-separated) on the validation split when training ends. [default: ()]"""

    blend_select_on: str
    """Validation value that chooses among the grids' combinations: METRIC@K or a sum of them (ties: the smaller weights). [default: 'recall@20+mrr@20']"""

    overfit_batches: float
    """Train on only this many batches (or this fraction) per epoch, for debugging. [default: 0.0]"""

    device: Literal["auto", "cpu", "cuda"]
    """auto (CUDA when present), cpu or cuda. [default: 'auto']"""

    precision: Literal["auto", "fp32", "bf16", "fp16"]
    """auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16 or fp16. [default: 'auto']"""

    compile: bool
    """torch.compile the model and the loss (batch widths and event counts rounded up to a few static shapes). [default: False]"""

    track: str | Sequence[str]
    """Record the run with an experiment tracker (repeatable; also TRON_TRACK): mlflow, tensorboard. [default: ()]"""

    hidden_size: int
    """Hidden size d. [default sasrec: 200; gru4rec: 100]"""

    num_layers: int
    """Layers: transformer blocks, or GRU layers. [default sasrec: 2; gru4rec: 1]"""

    num_heads: int
    """Attention heads. (model sasrec) [default sasrec: 1]"""

    dropout: float
    """Dropout rate. [default sasrec: 0.05; gru4rec: 0.0]"""

    item_dropout: float
    """Dropout on item ids: in training, each input click's item is hidden with this probability (its embedding zeroed, its position kept). (model sasrec) [default sasrec: 0.0]"""

    max_length: int
    """Clicks the model reads (training windows are the last max_length + 1 of each session). [default sasrec: 50; gru4rec: 200]"""

    share_embeddings: bool
    """Tie input and output item embeddings. [default sasrec: True; gru4rec: True]"""

    output_bias: bool
    """Learn a bias per item. [default sasrec: False; gru4rec: True]"""

    positions: Literal["right", "left"]
    """Right-aligned positions (TRON: the newest click is always last) or left (counted from the session's first click, so a prefix's state is what it is inside the whole session). (model sasrec) [default sasrec: 'right']"""

    temperature: float
    """0: scores are dot products; > 0: the cosine of state and item vector divided by this temperature (NISER's normalised scores; try 0.05-0.1). (model sasrec) [default sasrec: 0.0]"""

    preference: bool
    """Read a preference vector [click weight, order weight] beside every click (MultiTRON; set by --objective multitron). (model sasrec) [default sasrec: False]"""

    block: Literal["pre", "sasrec"]
    """pre: x + Attn(LN(x)), then x + FFN(LN(x)) (TRON); sasrec: the original SASRec's block, whose residuals start from the normalised input: q = LN(x), x = q + Attn(q, keys and values from x), then h = LN(x), h + FFN(h). (model sasrec) [default sasrec: 'pre']"""

    init: Literal["xavier", "normal"]
    """Initial weights: xavier (TRON) or normal (N(0, 0.02) item and position embeddings and linear weights, zero biases, as the published SASRec+). (model sasrec) [default sasrec: 'xavier']"""

    original_gru: bool
    """The embedding feeds the gates directly (3 x hidden wide), as the original GRU4Rec. (model gru4rec) [default gru4rec: False]"""

    final_activation: bool
    """ELU(0.5) on scores before the loss (the reference's GRU4Rec). (model gru4rec) [default gru4rec: True]"""

    bpr_penalty: float
    """Score regularisation of bpr-max. (loss bpr-max) [default: 1.0]"""

    gbce_t: float
    """Calibration t of gbce (0: plain binary cross-entropy). (loss gbce) [default: 0.75]"""

    ce_chunk: int
    """Catalogue items scored at once by --loss ce (bounds its memory). (loss ce) [default: 65536]"""

    regularization: float
    """Weight of the approximate-EPO regulariser of MultiTRON's losses. (loss ssm_and_be, ssm_and_distortion) [default: 0.5]"""
