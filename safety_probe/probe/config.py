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
SAFETY_LAYER_RULES = ("contrast", "share", "code")
K_SOURCES = ("generated", "phrases")
AMBIGUOUS = ("continue", "keep")
#: The per-pair tests of where a refusal forms (analysis.evidence): the default first.
TESTS = ("peak", "alg1", "paper", "gain", "entry", "direction")


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
    ambiguity: float = 0.9
    """A first token of the refusals that opens answers too — refusals are less than this share of the runs it opens
    ("I" of "I'm sorry" and "I think") — is ambiguous: the lens after it is measured on every text run (one more
    position per run and such token), so its continuation can tell a refusal from an answer."""
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
        check_number(self, "ambiguity", 0.0, 1.0)
        check_text(self, "refusal_phrase")


@dataclass
class LocateOptions:
    """How the safety layers are chosen from the measured evidence (``safety-probe locate RUN`` changes these without
    the model). docs/science.md gives the measurements behind each default."""

    test: str = "peak"
    """Per-pair test of where a text run's refusal forms: peak (the block where log P(K) rises the most, among blocks
    where P(K) is at least --min-mass and above the answered runs' --answered-quantile: Algorithm 1 turned around),
    alg1 (Algorithm 1 at every block: K rises the most among the lens' --candidates most probable tokens), paper
    (Algorithm 1 verbatim: argmax over the whole vocabulary), gain (the released code: K among the top-5 probability
    gains), entry (K enters the top-1) or direction (the refusal direction of each block's step, Arditi et al.)."""
    rule: str = "contrast"
    """Safety-layer rule: contrast (blocks where refused runs fire more often than answered runs by --margin at the
    lower end of the 95% interval of the difference), share (blocks where at least --band-share of the refused runs
    fire) or code (the released code's mean start .. mean end)."""
    margin: float = 0.2
    """contrast rule: the least difference (refused − answered firing share, lower 95% bound) of a safety layer."""
    band_share: float = 0.5
    """share rule: share of refused runs that must fire at a layer for it to join the band."""
    min_support: int = 5
    """Fewest refused (and, for the contrast rule, answered) text runs a band is drawn from; below it no band is
    drawn (a warning)."""
    min_mass: float = 0.01
    """peak test: the least P(K) of a block where the refusal can form (a rise from nothing is not a refusal)."""
    min_rise: float = 1.0
    """peak test: the least rise of log P(K) (nats) at the peak for a run to fire."""
    answered_quantile: float = 0.99
    """peak test: P(K) must also exceed this quantile of the answered runs' P(K) at the block (cross-fitted over 5
    folds; 0 turns it off), for models whose answers carry refusal mass (a safety system prompt)."""
    candidates: int = 10
    """alg1 test: the argmax of D_j runs over the lens' this-many most probable tokens (0: all; at most --lens-top)."""
    refusal_tokens: str = "generated"
    """Refusal token set K: generated (first tokens of the model's own harmful text-run refusals) or phrases (a word
    list)."""
    ambiguous: str = "continue"
    """A token of K that also opens answers (measured with --ambiguity): continue (it counts at a run and block only
    where the lens after it favours its refusal continuations) or keep (it counts everywhere: the paper's K)."""
    safety_layers: str | None = None
    """Override the located safety layers, e.g. 9-17 (the analysis is still run and saved)."""

    def validate(self) -> None:
        """One-line InputError naming the option that is out of range."""
        for name, choices in (("test", TESTS), ("rule", SAFETY_LAYER_RULES), ("refusal_tokens", K_SOURCES),
                              ("ambiguous", AMBIGUOUS)):
            check_choice(self, name, choices)
        check_number(self, "band_share", 0.0, 1.0, low_open=True)
        check_number(self, "margin", -1.0, 1.0)
        check_number(self, "min_support", 1)
        check_number(self, "candidates", 0)
        check_number(self, "min_mass", 0.0, 1.0)
        check_number(self, "min_rise", 0.0)
        check_number(self, "answered_quantile", 0.0, 1.0, high_open=True)


@dataclass
class AnalysisConfig:
    """probe-layers' analysis: the model pass and the choice of the safety layers."""

    measure: MeasureOptions = field(default_factory=MeasureOptions)
    locate: LocateOptions = field(default_factory=LocateOptions)

    def validate(self) -> None:
        """Both parts' checks."""
        self.measure.validate()
        self.locate.validate()
