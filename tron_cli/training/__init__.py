"""The training loop's parts: state (`state.py`), epoch order (`order.py`), how a model is fed per epoch
(`feeds.py`), the loop itself (`loop.py`) and the run directory (`rundir.py`). The stage is `tron_cli.stages.train`."""
