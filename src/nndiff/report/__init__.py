"""report.md and its figures."""
