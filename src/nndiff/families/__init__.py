"""Task families: many related tasks over one dataset, and generating models for tasks nobody trained.

A user's family (`--family path/to/file.py:make_family`) returns a `Family`; `binary_codes` and
`binary_labels` build the label-space kind."""

from nndiff.families.family import Family, binary_codes, binary_labels

__all__ = ["Family", "binary_codes", "binary_labels"]
