"""TGA (Text-Guided Alignment, Xu et al., ICLR 2025 §4): align image-token states with their caption's states
at the safety layers so the language model's text safety transfers to images. See docs/tga.md.

    >>> from safety_probe.tga import TGAConfig, run_tga
    >>> run_tga(TGAConfig(model="organism", layers="2-5", stage=2, lr=1e-4, max_steps=300))
"""

from safety_probe.tga.batch import TGABatch, TGACollator
from safety_probe.tga.config import METHODS, TGAConfig
from safety_probe.tga.data import TGAExample, load_tga_data, write_tga_data
from safety_probe.tga.hooks import StopForward, states_until, tap_blocks
from safety_probe.tga.loss import anneal_weights, guide_loss, guide_terms, masked_mean
from safety_probe.tga.run import filter_flags, filtered_metrics, layer_shift, run_tga
from safety_probe.tga.train import (
    TrainResult,
    guide_only_rows,
    plain_rows,
    resolve_layers,
    setup_trainable,
    tga_loss,
    train,
    weights_hash,
)

__all__ = [
    "METHODS", "StopForward", "TGABatch", "TGACollator", "TGAConfig", "TGAExample", "TrainResult",
    "anneal_weights", "filter_flags", "filtered_metrics", "guide_loss", "guide_only_rows", "guide_terms", "layer_shift",
    "load_tga_data", "masked_mean", "plain_rows", "resolve_layers", "run_tga", "setup_trainable", "states_until", "tap_blocks",
    "tga_loss", "train", "weights_hash", "write_tga_data",
]
