"""The settings of probe-layers' analysis: the model pass (:class:`MeasureOptions`) and the pure choice of the safety
layers from what it measured (:class:`LocateOptions`), in one :class:`AnalysisConfig`; every default lives here.

    >>> cfg = AnalysisConfig(measure=MeasureOptions(patch_pairs=16), locate=LocateOptions(band_share=0.6))
    >>> states, measurements = measure(vlm, pairs, cfg.measure)
    >>> result = analyze(states, measurements, cfg.locate)     # again with other LocateOptions: no model needed
"""

from __future__ import annotations

from dataclasses import dataclass, field

from safety_probe.core.checks import check_choice, check_number, check_text

PATCH_MODES = ("shift", "replace")
SAFETY_LAYER_RULES = ("default", "code")
K_SOURCES = ("generated", "phrases")


@dataclass
class MeasureOptions:
    """What the model pass measures besides the states (changing one of these needs the model again)."""

    patch_pairs: int = 64
    """Harmful pairs used for activation patching (the first ones in the pairs file; one forward per pair and block
    for each of the two patchings); 0 turns patching off."""
    patch_mode: str = "shift"
    """Caption patching: shift (move the image tokens so their mean equals the caption's) or replace (set them to it)."""
    refusal_phrase: str | None = None
    """The model's own refusal phrase, if it has one: a text-run answer containing it counts as a refusal (besides the
    standard refusal openings), and its first word joins the fallback word list of K."""
    answer_tokens: int = 16
    """Tokens generated per text run to read the model's answer (enough for any refusal opening)."""
    lens_top: int = 50
    """Most probable tokens of each block's logit lens kept per text run (the upper limit of --candidates)."""
    pool_size: int = 64
    """Tokens whose lens probability is kept for every text run and patching: the first two tokens of the refusals
    and the fallback word list (every refusal token set K is drawn from these), filled up with the answers' first
    tokens and the most probable ones (more only when the refusals need more)."""

    def validate(self) -> None:
        """One-line InputError naming the option that is out of range."""
        check_choice(self, "patch_mode", PATCH_MODES)
        check_number(self, "patch_pairs", 0)
        check_number(self, "answer_tokens", 1)
        check_number(self, "lens_top", 1)
        check_number(self, "pool_size", 1)
        check_text(self, "refusal_phrase")


@dataclass
class LocateOptions:
    """How the safety layers are chosen from the measured evidence (``safety-probe locate RUN`` changes these without
    the model)."""

    rule: str = "default"
    """Safety-layer rule: default (the layers where a refusal token rises the most for at least --band-share of the
    refusing pairs) or code (the released code's mean start .. mean end)."""
    band_share: float = 0.5
    """default rule: share of refusing pairs that must fire at a layer for it to join the band."""
    min_support: int = 5
    """Fewest refused harmful text runs the band is drawn from; below it no band is drawn (a warning)."""
    candidates: int = 10
    """Algorithm 1: the argmax of D_j runs over the lens' this-many most probable tokens (0: all, the paper verbatim;
    at most the measured --lens-top)."""
    refusal_tokens: str = "generated"
    """Refusal token set K: generated (first tokens of the model's own text-run refusals) or phrases (a word list)."""
    safety_layers: str | None = None
    """Override the located safety layers, e.g. 9-17 (the analysis is still run and saved)."""

    def validate(self) -> None:
        """One-line InputError naming the option that is out of range."""
        check_choice(self, "rule", SAFETY_LAYER_RULES)
        check_choice(self, "refusal_tokens", K_SOURCES)
        check_number(self, "band_share", 0.0, 1.0, low_open=True)
        check_number(self, "min_support", 1)
        check_number(self, "candidates", 0)


@dataclass
class AnalysisConfig:
    """probe-layers' analysis: the model pass and the choice of the safety layers."""

    measure: MeasureOptions = field(default_factory=MeasureOptions)
    locate: LocateOptions = field(default_factory=LocateOptions)

    def validate(self) -> None:
        """Both parts' checks."""
        self.measure.validate()
        self.locate.validate()
