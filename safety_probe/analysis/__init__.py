"""Pure functions of saved states and measurements: per-layer scores with bands (``scores``), the locators and the
band rules (``locate``), the semantic shift (``shift``), and probe-layers' analysis (``analyze``) with its result and
files (``results``)."""
