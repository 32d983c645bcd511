"""Data: the pairs file format (and, in submodules, readers of published benchmarks)."""
