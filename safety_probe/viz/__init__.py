"""Publication figures: matplotlib PDFs (TrueType fonts) and PNGs, offline plotly HTML.

    >>> from safety_probe.viz import plot_shift, draw_all
    >>> plot_shift(result.scores, result.safety_layers, n_pairs=result.support["harmful"])

``layers`` draws probe-layers' results, ``evaluation`` the evaluation's and the comparison's, both through the
backend-neutral specs of ``render`` (lines, heatmaps) and ``bars``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {name: "safety_probe.viz.layers" for name in
            ("draw_all", "layer_figures", "plot_shift", "plot_locate", "plot_locators", "plot_patching",
             "plot_last_token")}
_EXPORTS.update({name: "safety_probe.viz.evaluation" for name in ("plot_eval", "plot_tga_dsr", "plot_tga_shift")})
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'safety_probe.viz' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
