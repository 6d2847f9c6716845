"""Parameter vectors: which tensors a layout selects, their normalization, and [N, D] sets of them."""
