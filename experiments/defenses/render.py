"""The table of docs/defenses.md: the first organism's trained rows and each inference-time defense, with its
measured cost; registered in experiments/render_tables.py."""

from __future__ import annotations

from collections.abc import Callable

from experiments.markdown import read, table

DEFENSE_LABELS = {
    "before": "before",
    "tga": "**TGA, J = 4–6** (stage 1, trained)",
    "ce": "ce (λ = 0)",
    "safety_ft": "safety_ft (+14 refused toxic images)",
    "filter": "filter (CLIP zero-shot on the image)",
    "refusal_steering-add": "refusal_steering:add",
    "refusal_steering-ablate": "refusal_steering:ablate (control)",
    "shift_correction-cmrm": "shift_correction:cmrm (image tokens)",
    "shift_correction-cmrm-after": "shift_correction:cmrm, `--positions after`",
    "shift_correction-shiftdc": "shift_correction:shiftdc",
    "hidden_detect-cosine": "hidden_detect:cosine",
    "hidden_detect-logprob": "hidden_detect:logprob",
    "self_check": "self_check",
}


def defenses_rows(src: list[str]) -> str:
    """The trained rows of the comparison run (compare.json: no inference cost), then each defense (summary.csv: the
    cost ratio measured by experiments/defenses/organism.sh)."""
    rows = []
    for key, r in read(src[0])["rows"].items():
        if key not in ("before", "tga", "ce", "safety_ft", "filter"):
            continue
        o = r["overall"]
        rows.append(
            [
                DEFENSE_LABELS[key],
                *(
                    f"{o[k]:.3f}"
                    for k in (
                        "text_dsr",
                        "image_dsr",
                        "image_benign_refusal",
                        "text_benign_refusal",
                        "image_task_accuracy",
                        "text_task_accuracy",
                    )
                ),
                "—",
                "not timed (+ a CLIP forward)" if key == "filter" else "1",
            ]
        )
    for r in read(src[1]):
        if r["row"].startswith("before"):
            continue

        def f(k: str, r: dict = r) -> str:
            return "—" if r.get(k) in (None, "") else f"{float(r[k]):.3f}"

        rows.append(
            [
                DEFENSE_LABELS.get(r["row"], r["row"]),
                f("text_dsr"),
                f("image_dsr"),
                f("image_benign_refusal"),
                f("text_benign_refusal"),
                f("image_task_accuracy"),
                f("text_task_accuracy"),
                "—" if not r.get("strength") else f"{float(r['strength']):g}",
                f"{float(r['cost_ratio']):.2f}",
            ]
        )
    return table(
        [
            "row",
            "text DSR",
            "image DSR",
            "image over-refusal",
            "text over-refusal",
            "image task acc.",
            "text task acc.",
            "α",
            "inference cost (× plain)",
        ],
        rows,
    )


TABLES: dict[str, tuple[list[str], Callable[[list[str]], str]]] = {
    "defenses_organism": (
        ["experiments/defenses/results/compare/compare.json", "experiments/defenses/results/summary.csv"],
        defenses_rows,
    ),
}
