"""Test tools beside the pipeline: tiny random-weight models of every supported family (``testing.tiny``).

Used by the test suite and the benchmarks; no module of the pipeline imports this package.
"""
