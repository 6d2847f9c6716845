"""Files on disk: safetensors (streamed, memory-mapped, never pickled), JSON and YAML, atomic writes,
row files, checkpoints."""
