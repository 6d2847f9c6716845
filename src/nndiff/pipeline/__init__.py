"""Each stage's work on a run directory, `nndiff run` over all of them, and the paper's ablation sweeps."""
