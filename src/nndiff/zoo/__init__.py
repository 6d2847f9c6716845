"""Collecting snapshots: base training, SGD trajectories, alignment, the learning-rate probe, the zoo format."""
