"""Where and how work runs: device and seeds, memory given back, torchrun ranks, long stages that resume."""
