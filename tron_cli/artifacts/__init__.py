"""The artifact contract (version 1): every on-disk schema of `tron`, its readers and writers.

Stages meet only through these files (docs/artifacts.md describes them):

- sessions Parquet (`train.parquet`, `valid.parquet`, `test.parquet`): one row per session,
  `session: int64`, `items: list<int32>` (dense ids 1..N, 0 = padding), `ts: list<int64>` (ms);
- `items.parquet`: `item: int32` (dense id), `id` (raw id in its source type), `count: int64` (train clicks);
- JSON documents (`dataset.json`, `manifest.json`, run `config.json`, `summary.json`, `metrics.json`, bundle
  `config.json`, checkpoint `state.json`), each with a `"schema": "<kind>/<version>"` field;
- tensors as safetensors, never pickle.

One module per concern: `schemas` (tags, versions, who makes what), `files` (atomic writes), `documents` (JSON),
`sessions` (sessions, catalogue and dataset files), `tensors` (safetensors). Readers check the version and say
which command makes the file; writers go to a temporary name and rename, so a reader never sees half a file.
"""
