"""The first organism's TGA tables of docs/tga.md (the recipe and its ablations, from experiments/tga/results);
registered in experiments/render_tables.py."""

from __future__ import annotations

from collections.abc import Callable

from experiments.markdown import read, span, table


def tga_recipe(src: list[str]) -> str:
    located, far, ft400 = (read(p) for p in src)
    rows = []

    def add(name: str, r: dict, span_note: str = "") -> None:
        o, sh = r["overall"], r.get("shift") or {}
        cos = (
            "—"
            if "mean_cos_matched" not in sh
            else f"{sh['mean_cos_matched']:.3f}{span_note} ({sh['mean_cos_mismatched']:.3f})"
        )
        rows.append(
            [
                name,
                f"{o['text_dsr']:.3f}",
                f"{o['image_dsr']:.3f}",
                f"{o['image_benign_refusal']:.3f}",
                f"{o['image_task_accuracy']:.3f}",
                cos,
                f"{sh['mean_cos_centred']:.3f}" if "mean_cos_centred" in sh else "—",
            ]
        )

    J = span(located["safety_layers"])
    add("before", located["rows"]["before"])
    add(f"**TGA, J = {J} (located)**", located["rows"]["tga"])
    add("ce (the same run, λ = 0)", located["rows"]["ce"])
    add("safety_ft (+14 refused toxic images, CE)", located["rows"]["safety_ft"])
    add("safety_ft with 400 refused toxic images (`results/safety_ft_400`)", ft400["rows"]["safety_ft"])
    add("filter (CLIP zero-shot on the image)", located["rows"]["filter"])
    add(f"TGA, J = {span(far['safety_layers'])} (far)", far["rows"]["tga"], f" over {span(far['safety_layers'])}")
    return table(
        [
            "row",
            "text DSR",
            "image DSR",
            "image over-refusal",
            "image task acc.",
            "cos(I, C) over J (mismatched)",
            "centred",
        ],
        rows,
    )


ABLATION_WHAT = {
    "paper_prompt": "R in the prompt (the paper's prompt)",
    "toxic_described": "toxic rows also trained on their description (answer loss)",
    "released_code_form": "exp form with the released code's annealing (measured when this form summed "
    "over J; it now averages, 1/5 of that weight at J = 3–7)",
    "stage2": "stage 2 (projector + LM), lr 3e-5, frozen caption target",
    "stage2_paper_lr": "stage 2 at the paper's lr 2e-6, frozen caption target",
}


def tga_ablation(src: list[str]) -> str:
    located = read(src[0])
    rows = []
    o, sh = located["rows"]["tga"]["overall"], located["rows"]["tga"]["shift"]
    rows.append(
        [
            "recipe",
            "(above)",
            f"{o['text_dsr']:.3f}",
            f"{o['image_dsr']:.3f}",
            f"{o['image_benign_refusal']:.3f}",
            f"{o['image_task_accuracy']:.3f}",
            f"{sh['mean_cos_matched']:.3f}",
        ]
    )
    for r in read(src[1]):
        if r["method"] != "tga":
            continue
        rows.append(
            [
                r["run"],
                ABLATION_WHAT.get(r["run"], ""),
                *(
                    f"{float(r[k]):.3f}"
                    for k in ("text_dsr", "image_dsr", "image_benign_refusal", "image_task_accuracy", "cos_over_layers")
                ),
            ]
        )
    return table(
        ["run", "what changes", "text DSR", "image DSR", "image over-refusal", "image task acc.", "cos over J"], rows
    )


TABLES: dict[str, tuple[list[str], Callable[[list[str]], str]]] = {
    "tga_recipe": (
        [
            "experiments/tga/results/located/compare.json",
            "experiments/tga/results/far/compare.json",
            "experiments/tga/results/safety_ft_400/compare.json",
        ],
        tga_recipe,
    ),
    "tga_ablation": (
        ["experiments/tga/results/located/compare.json", "experiments/tga/results/ablation/summary.csv"],
        tga_ablation,
    ),
}
