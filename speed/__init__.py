"""The speed harness: what safety-probe's model passes cost, as ratios measured side by side (docs/speed.md).

Run ``make bench`` (or ``python -m speed.run --help``). Not part of the package: "benchmark" in safety-probe means
the safety datasets of :mod:`safety_probe.data.benchmarks`.
"""
