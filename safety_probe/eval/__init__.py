"""Evaluation: judges of refusal and harm (``judges``), DSR, over-refusal and task accuracy from greedy answers of
both runs (``evaluate``), and per-benchmark tables (``tables``)."""
