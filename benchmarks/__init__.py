"""Benchmarks of safety-probe's recording against the bare forward and the usual alternatives.

Run ``make bench`` (or ``python -m benchmarks.run --help``); see docs/benchmarks.md.
"""
