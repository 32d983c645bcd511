"""What the recording measurement measures on each model: the cases (run, batch size, sequence length), the methods timed
against the bare forward, the rounds, and the shapes of the random-weight LLaVAs."""

from __future__ import annotations

from dataclasses import dataclass, field

# Decoder shapes of the random-weight "large" LLaVA (text model; the vision tower stays tiny).
SHAPES: dict[str, dict[str, int]] = {
    "1b": {"hidden_size": 2048, "num_hidden_layers": 16, "intermediate_size": 5632,
           "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000, "image_size": 28},
    "7b": {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 11008,
           "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "image_size": 336},
    # --quick only
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
             "num_attention_heads": 4, "num_key_value_heads": 2, "image_size": 28},
    "small": {"hidden_size": 128, "num_hidden_layers": 4, "intermediate_size": 256,
              "num_attention_heads": 4, "num_key_value_heads": 2, "image_size": 28},
}  # fmt: skip
# The organism's sizes (safety_probe/organism/train.py): used to build a stand-in until it is trained.
ORGANISM_LIKE = {"hidden_size": 128, "num_hidden_layers": 8, "intermediate_size": 384, "num_attention_heads": 4,
                 "num_key_value_heads": 4, "vocab_size": 1024, "image_size": 56}  # fmt: skip


@dataclass
class Case:
    """One timed configuration: which run of the pair, how many pairs, and the sequence length aimed at."""

    run: str  # "image" | "text"
    batch_size: int
    seq_target: int


@dataclass
class Plan:
    """What to measure on one model."""

    key: str
    cases: list[Case]
    methods: list[str]
    warmup_rounds: int  # rounds of every method before the first case (fresh models run slow at first)
    min_rounds: int
    max_rounds: int
    case_budget_s: float  # stop adding timed rounds past this (after min_rounds)
    leak_batches: int
    leak_batch_size: int
    bytes_targets: tuple[int, int]
    bytes_pairs: int
    notes: list[str] = field(default_factory=list)


#: ``record`` is the default backend (hooks); ``record_<backend>`` the others (speed/methods.py).
ALL_METHODS = ["forward", "trunk", "record", "record_nnsight", "record_transformerlens", "hidden_states", "tl_resid",
               "tl_all"]


def organism_plan(quick: bool) -> Plan:
    if quick:
        return Plan(
            "organism",
            [Case("image", 1, 24), Case("image", 2, 48)],
            ALL_METHODS,
            2,
            2,
            3,
            2.0,
            leak_batches=10,
            leak_batch_size=2,
            bytes_targets=(24, 48),
            bytes_pairs=2,
        )
    cases = [
        Case("image", 1, 32),
        Case("image", 1, 128),
        Case("image", 8, 32),
        Case("image", 8, 128),
        Case("text", 8, 128),
    ]
    return Plan(
        "organism",
        cases,
        ALL_METHODS,
        warmup_rounds=10,
        min_rounds=7,  # a short forward scatters most under load: more rounds make the median of ratios steadier
        max_rounds=60,
        case_budget_s=10.0,
        leak_batches=100,
        leak_batch_size=4,
        bytes_targets=(32, 128),
        bytes_pairs=4,
    )


def large_plan(shape: str, quick: bool, device: str) -> Plan:
    if quick:
        return Plan(
            shape,
            [Case("image", 2, 32)],
            ALL_METHODS,
            1,
            2,
            2,
            1.0,
            leak_batches=5,
            leak_batch_size=1,
            bytes_targets=(24, 48),
            bytes_pairs=1,
        )
    if device.startswith("cuda"):
        cases = [Case("image", 1, 600), Case("image", 8, 600), Case("image", 8, 1200)]
        return Plan(
            shape,
            cases,
            ALL_METHODS,
            warmup_rounds=5,
            min_rounds=10,
            max_rounds=30,
            case_budget_s=30.0,
            leak_batches=100,
            leak_batch_size=8,
            bytes_targets=(600, 1200),
            bytes_pairs=2,
        )
    # CPU: a 1B forward of ~20 tokens takes seconds on 2 cores: two cases, few rounds, a short leak run.
    methods = [m for m in ALL_METHODS if m != "tl_all"]
    return Plan(
        shape,
        [Case("image", 1, 20), Case("image", 1, 40)],
        methods,
        warmup_rounds=1,
        min_rounds=4,
        max_rounds=4,
        case_budget_s=0.0,
        leak_batches=10,
        leak_batch_size=1,
        bytes_targets=(20, 40),
        bytes_pairs=1,
        notes=["CPU: tl_all is measured on the organism only (time budget)"],
    )


