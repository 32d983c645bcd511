"""Data: the pairs file format and the synthetic world."""
