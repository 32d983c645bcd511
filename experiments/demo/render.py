"""README's tables: both organisms' headline numbers, what ``make demo`` writes (figures/demo) and the README's TGA
command's ``compare.json`` (experiments/demo/tga.sh); registered in experiments/render_tables.py."""

from __future__ import annotations

from collections.abc import Callable

from experiments.markdown import rates, read, table

TGA_ROWS = {
    "before": "before",
    "tga": "TGA (paper's loss, stage 1)",
    "ce": "same training without the guide (λ = 0)",
    "safety_ft": "image safety fine-tuning",
    "filter": "before + CLIP input filter",
}


def _interval(row: dict, column: str) -> str:
    mean = row[f"{column}_mean"]
    if not mean:
        return "—"
    return f"{float(mean):.2f} [{float(row[f'{column}_lower']):.2f}, {float(row[f'{column}_upper']):.2f}]"


def _share(row: dict, column: str) -> str:
    return "—" if not row[f"{column}_mean"] else f"{float(row[f'{column}_mean']):.2f}"


def demo_layers(sources: list[str]) -> str:
    """Per block of ``make demo``'s run: the shift (matched and mismatched cosine, bootstrap 95% intervals), where the
    refused and benign text runs fire (the peak test and Algorithm 1), the refusal direction's AUROC and both
    patchings' gain in P(refusal); the safety layers in bold."""
    rows, layers = read(sources[0]), read(sources[1])
    support, patched = layers["support"], layers["settings"]["patched_pairs"]
    out = []
    for r in rows:
        block = f"**{r['layer']}**" if r["safety_layer"] == "True" else r["layer"]
        out.append(
            [
                block,
                _interval(r, "cos_matched"),
                _interval(r, "cos_mismatched"),
                _share(r, "fires_refused"),
                _share(r, "fires_benign"),
                _share(r, "alg1_fire_share"),
                _share(r, "alg1_fire_share_benign"),
                _share(r, "refusal_direction_auroc"),
                _interval(r, "patching_gain"),
                _interval(r, "tail_patching_gain"),
            ]
        )
    head = [
        "block",
        f"cos(image, caption), n={support['harmful'] + support['benign']}",
        "mismatched pairs",
        f"refused text runs peaking here (n={support['refused']})",
        f"benign runs peaking (n={support['benign']})",
        "Algorithm 1 fires, refused",
        "Algorithm 1 fires, benign",
        "refusal direction AUROC",
        f"caption patching gain (n={patched})",
        f"tail patching gain (n={patched})",
    ]
    return table(head, out)


def demo_tga(sources: list[str]) -> str:
    """Each row of the README command's compare.json: image DSR with its Wilson interval, text DSR, the image run's
    benign over-refusal and task accuracy, and cos(image, caption) averaged over the aligned blocks."""
    compare = read(sources[0])
    out = []
    for name, label in TGA_ROWS.items():
        row = compare["rows"].get(name)
        if not row or "overall" not in row:
            continue
        o = row["overall"]
        shift = (row.get("shift") or {}).get("mean_cos_matched")
        out.append([label, *rates(o), "—" if shift is None else f"{shift:.2f}"])
    o = compare["rows"]["before"]["overall"]
    head = [
        f"blocks {compare['safety_layers']}, {o['n_harmful']} harmful / {o['n_benign']} benign held-out pairs",
        "image DSR",
        "text DSR",
        "image over-refusal",
        "image task acc.",
        "cos(image, caption) on J",
    ]
    return table(head, out)


README_RATES = (("text_dsr", "n_harmful"), ("image_dsr", "n_harmful"), ("image_benign_refusal", "n_benign"),
                ("image_task_accuracy", "n_benign"))


def readme_organisms(src: list[str]) -> str:
    # the first organism's build evaluates itself (held-out pairs of seed 1234); organism-smol's eval run
    runs = (("organism (`docs/organism.md`), before", read(src[0])["eval"]["overall"]),
            ("organism-smol (`docs/organism-smol.md`), before", read(src[1])["overall"]))
    rows = [[label, f"{o['n_harmful']} / {o['n_benign']}", *rates(o, README_RATES),
             f"{o['image_harmful_recognition']:.3f}"] for label, o in runs]
    return table(
        [
            "model, held-out pairs",
            "n (harmful / benign)",
            "text DSR",
            "image DSR",
            "image over-refusal",
            "image task acc.",
            "image recognition",
        ],
        rows,
    )


TABLES: dict[str, tuple[list[str], Callable[[list[str]], str]]] = {
    "readme_organisms": (
        ["safety_probe/organism/weights/build_metrics.json", "experiments/organism_smol/results/eval/metrics.json"],
        readme_organisms,
    ),
    "demo_layers": (["figures/demo/layers.csv", "figures/demo/layers.json"], demo_layers),
    "demo_tga": (["experiments/demo/results/tga/compare.json"], demo_tga),
}
