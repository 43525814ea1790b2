"""Measuring a model or a baseline on a split: the evaluation procedures (`procedures`: protocols all, tron, otto),
the metrics (`metrics`), OTTO's own task (`otto_task`) and the baselines that need no training (`baselines`)."""
