"""Accuracies of many parameter vectors, a run's metrics with their intervals, and the printed table."""
