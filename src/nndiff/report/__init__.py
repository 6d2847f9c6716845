"""report.md and its figures, for a single task's run (markdown.py, figures.py) and a family run (family.py)."""
