"""Are the generated models new and well spread: baselines, distances, the novelty verdict, the health check."""
