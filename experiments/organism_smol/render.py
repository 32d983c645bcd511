"""The tables of organism-smol's results (README.md, docs/organism-smol.md): its first measurements (compare.json
of each design round) and the decisive table (experiments/organism_smol/table, scored by its score.py);
registered in experiments/render_tables.py."""

from __future__ import annotations

from collections.abc import Callable

from experiments.markdown import rates, read, span, table, wilson

SMOL = "experiments/organism_smol/results"
TABLE = f"{SMOL}/table"


EVAL_COLS = (
    ("text_dsr", "n_harmful"),
    ("image_dsr", "n_harmful"),
    ("text_benign_refusal", "n_benign"),
    ("image_benign_refusal", "n_benign"),
    ("text_task_accuracy", "n_benign"),
    ("image_task_accuracy", "n_benign"),
)


def smol_eval(src: list[str]) -> str:
    m = read(src[0])
    rows = []
    for name, o in {"overall": m["overall"], **m["per_scene"]}.items():
        rec = o.get("image_harmful_recognition")
        rows.append(
            [
                name.replace("_", " "),
                f"{o['n_harmful']} / {o['n_benign']}",
                *(wilson(o.get(k), o.get(n)) for k, n in EVAL_COLS),
                "" if rec is None else f"{rec:.3f}",
            ]
        )
    return table(
        [
            "",
            "n (harmful / benign)",
            "text DSR",
            "image DSR",
            "text over-refusal",
            "image over-refusal",
            "text task acc.",
            "image task acc.",
            "image recognition",
        ],
        rows,
    )


def _compare_row(name: str, r: dict, layers: str, before_shift: float | None) -> list[str]:
    o = r["overall"]
    shift = r.get("shift", {}).get("mean_cos_matched")
    cos = (
        f"{before_shift:.2f} → {shift:.2f}"
        if shift is not None and before_shift is not None and name != "before"
        else ""
    )
    rec = o.get("image_harmful_recognition")
    return [name, layers, *rates(o), "" if rec is None else f"{rec:.3f}", cos]


def _compare_table(spec: list[tuple[str, str, str]]) -> str:
    """Rows (label, compare.json, row key): before from the first file; cos(I, C) over its J before → after."""
    rows = []
    for label, path, key in spec:
        c = read(path)
        r = c["rows"][key]
        before = c["rows"]["before"].get("shift", {}).get("mean_cos_matched")
        layers = "—" if key in ("before", "ce", "filter") else span(c["safety_layers"])
        rows.append(_compare_row(label, r, layers, before if key not in ("ce", "filter") else None))
    return table(
        [
            "row",
            "J",
            "image DSR",
            "text DSR",
            "image over-refusal",
            "image task acc.",
            "image recognition",
            "cos(I, C) over J before → after (image-token means)",
        ],
        rows,
    )


ROUND1 = [
    ("before", f"{SMOL}/tga/compare.json", "before"),
    ("paper TGA (image-token means)", f"{SMOL}/tga/compare.json", "tga"),
    ("tail alignment", f"{SMOL}/tga_tail/compare.json", "tga"),
    ("ce: the same training, λ = 0", f"{SMOL}/tga/compare.json", "ce"),
    ("CLIP input filter (before + filter)", f"{SMOL}/tga/compare.json", "filter"),
]
ROUND2 = [
    ("before", f"{SMOL}/tga/compare.json", "before"),
    ("paper TGA at Algorithm 1's band (first round)", f"{SMOL}/tga/compare.json", "tga"),
    ("paper TGA at the caption-patching band", f"{SMOL}/tga_patching/compare.json", "tga"),
    ("paper's stage-2 optimisation, 150 steps", f"{SMOL}/tga_paper_defaults150/compare.json", "tga"),
    ("tail alignment (first round)", f"{SMOL}/tga_tail/compare.json", "tga"),
    ("tail alignment, centred", f"{SMOL}/tga_tail_centred/compare.json", "tga"),
]


ROW_LABELS = {
    "before": "before",
    "paper_tga": "paper TGA (preset, J = {27, 29})",
    "paper_tga_caption_band": "paper TGA at the caption-patching band (2–14)",
    "ce": "ce (λ = 0)",
    "refusal_ft": "refusal fine-tuning (same toxic rows → refusal)",
    "distill": "text-run response distillation (CE to its greedy answer)",
    "tail_last": "last-position tail (centred, 16–28)",
    "tail_centred": "centred tail (16–28)",
    "best": "**chosen on validation: per-position-centred tail (16–28)**",
    "design_pos_sum": "per-position-centred tail, λ = 1 summed over 16–28",
    "design_pos_mean4": "per-position-centred tail, λ = 4 averaged over 16–28",
    "design_pos_mean26": "per-position-centred tail, λ = 26 averaged over 16–28",
}
MAIN_COLS = (
    ("dsr_toxic", "image DSR, toxic images"),
    ("dsr_compositional", "image DSR, compositional"),
    ("over_refusal", "over-refusal, benign images"),
    ("task_acc", "task acc., benign images"),
    ("toxic_q_refusal", "refusal, toxic image + benign question"),
    ("toxic_q_task_acc", "task acc., toxic image + benign question"),
    ("recognition", "recognition"),
    ("text_dsr", "text DSR"),
)
SPLIT_COLS = (
    ("dsr_harmful_request", "harmful request"),
    ("dsr_describe", '"describe this image"'),
    ("dsr_toxic_held_out_scenes", "held-out scenes (alcohol, explosives)"),
    ("dsr_toxic_seen_scenes", "scenes seen in alignment"),
    ("dsr_toxic_held_out_phrasing", "held-out phrasings"),
    ("dsr_toxic_seen_phrasing", "seen phrasings"),
)


def mean_sd(s: dict, key: str) -> str:
    """``mean ± sd`` over seeds with the pooled Wilson interval; one run (no seeds): ``p [lo, hi]``."""
    m, sd, pooled = s["mean"].get(key), s["sd"].get(key), s["pooled"].get(key)
    if m is None:
        return "—"
    ci = pooled.get("ci") if pooled else None
    interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return f"{m:.3f} ± {sd:.3f}{interval}" if sd is not None else f"{m:.3f}{interval}"


def _rows_table(src: str, cols, order: list[str] | None = None) -> str:
    t = read(src)
    names = [n for n in (order or ROW_LABELS) if n in t["rows"]]
    names += [n for n in t["rows"] if n not in ROW_LABELS and order is None]
    rows = [
        [
            ROW_LABELS.get(n, n),
            str(len(t["rows"][n]["seeds"]) if t["rows"][n]["seeds"] != ["-"] else "—"),
            *(mean_sd(t["rows"][n], k) for k, _ in cols),
        ]
        for n in names
    ]
    return table(["row", "seeds", *(h for _, h in cols)], rows)


def smol_table_main(src: list[str]) -> str:
    return _rows_table(src[0], MAIN_COLS)


def smol_table_split(src: list[str]) -> str:
    return _rows_table(src[0], SPLIT_COLS)


def smol_table_scenes(src: list[str]) -> str:
    t = read(src[0])
    scenes = sorted({k.split(":", 1)[1] for k in next(iter(t["rows"].values()))["mean"] if k.startswith("dsr_scene:")})
    names = [n for n in ROW_LABELS if n in t["rows"]]
    rows = [[ROW_LABELS[n], *(f"{t['rows'][n]['mean'][f'dsr_scene:{s}']:.2f}" for s in scenes)] for n in names]
    return table(["row (mean over seeds)", *(s.replace("_", " ") for s in scenes)], rows)


def smol_paired(src: list[str]) -> str:
    t = read(src[0])
    p = t.get("paired")
    if not p:
        return "(no paired tests in this file)\n"
    rows = []
    for other, r in p["against"].items():
        seeds = "; ".join(
            f"seed {s}: +{v['first_only']} / −{v['second_only']}, p = {v['p']:.2g}" for s, v in r["per_seed"].items()
        )
        a = r["all_seeds"]
        rows.append(
            [ROW_LABELS.get(other, other), seeds, f"+{a['first_only']} / −{a['second_only']}, p = {a['p']:.2g}"]
        )
    return table(
        [
            f"{ROW_LABELS.get(p['best'], p['best'])} against",
            "per seed (toxic pairs refused only by it / only by the other; exact McNemar)",
            "all seeds' (seed, pair) items",
        ],
        rows,
    )


def smol_durability(src: list[str]) -> str:
    d = read(src[0])
    rows = []
    for r in d["rows"]:
        s = r["summary"]
        rows.append(
            [
                r["label"],
                str(r["steps"]),
                str(len(s["seeds"])),
                mean_sd(s, "dsr_toxic"),
                mean_sd(s, "over_refusal"),
                mean_sd(s, "task_acc"),
                mean_sd(s, "toxic_q_refusal"),
            ]
        )
    return table(
        [
            "fine-tuning of the aligned model",
            "steps",
            "seeds",
            "image DSR, toxic images",
            "over-refusal, benign images",
            "task acc., benign images",
            "refusal, toxic image + benign question",
        ],
        rows,
    )


def smol_defenses(src: list[str]) -> str:
    t = read(src[0])
    rows = [
        [
            n,
            mean_sd(r, "dsr_toxic"),
            mean_sd(r, "dsr_compositional"),
            mean_sd(r, "over_refusal"),
            mean_sd(r, "task_acc"),
            mean_sd(r, "toxic_q_refusal"),
            mean_sd(r, "toxic_q_task_acc"),
            mean_sd(r, "text_dsr"),
        ]
        for n, r in t["rows"].items()
    ]
    return table(
        [
            "defense (calibrated on validation)",
            "image DSR, toxic images",
            "image DSR, compositional",
            "over-refusal, benign images",
            "task acc., benign images",
            "refusal, toxic image + benign question",
            "task acc., toxic image + benign question",
            "text DSR",
        ],
        rows,
    )


README_ROWS = ["before", "paper_tga", "ce", "refusal_ft", "distill", "tail_last", "tail_centred", "best"]
README_COLS = (
    ("dsr_toxic", "image DSR, toxic images"),
    ("over_refusal", "over-refusal, benign images"),
    ("task_acc", "task acc., benign images"),
    ("toxic_q_refusal", "refusal, toxic image + benign question"),
    ("text_dsr", "text DSR"),
)


def readme_smol(src: list[str]) -> str:
    return _rows_table(src[0], README_COLS, README_ROWS)


BF16_METRICS = (("image_dsr", "n_harmful", "image DSR"), ("text_dsr", "n_harmful", "text DSR"),
                ("image_benign_refusal", "n_benign", "image over-refusal"),
                ("image_task_accuracy", "n_benign", "image task acc."),
                ("image_harmful_recognition", None, "image recognition"))


def smol_bf16(src: list[str]) -> str:
    """The same TGA run in float32 and in bf16 autocast (experiments/organism_smol/bf16.sh): each metric, the harmful
    pairs only one of them defends (exact McNemar), the final guide loss and the trained tensors' relative
    difference."""
    b = read(src[0])
    n = b["harmful_pairs"]
    rows = []
    for name, label in (("reference", "float32"), ("other", "bf16 autocast")):
        m, log = b["metrics"][name], b["final_log"][name]
        cells = [f"{m[k]:.3f}" if m.get(k) is not None else "—" for k, _, _ in BF16_METRICS]
        rows.append([label, *cells, f"{log.get('guide', float('nan')):.3f}"])
    head = [f"run ({n} harmful held-out pairs)", *(h for _, _, h in BF16_METRICS), "final guide loss"]
    note = (f"\nHarmful pairs defended by float32 only / bf16 only: {b['defended_by_reference_only']} / "
            f"{b['defended_by_other_only']} (exact McNemar p = {b['mcnemar_p']:.2g}); the trained tensors differ by "
            f"{b['max_relative_difference']:.1e} relative at most.\n")
    return table(head, rows) + note


TABLES: dict[str, tuple[list[str], Callable[[list[str]], str]]] = {
    "readme_smol_test": ([f"{TABLE}/test.json"], readme_smol),
    "smol_eval": ([f"{SMOL}/eval/metrics.json"], smol_eval),
    "smol_round1": (list(dict.fromkeys(p for _, p, _ in ROUND1)), lambda s: _compare_table(ROUND1)),
    "smol_round2": (list(dict.fromkeys(p for _, p, _ in ROUND2)), lambda s: _compare_table(ROUND2)),
    "smol_test": ([f"{TABLE}/test.json"], smol_table_main),
    "smol_test_split": ([f"{TABLE}/test.json"], smol_table_split),
    "smol_test_scenes": ([f"{TABLE}/test.json"], smol_table_scenes),
    "smol_test_paired": ([f"{TABLE}/test.json"], smol_paired),
    "smol_validation": ([f"{TABLE}/validation.json"], smol_table_main),
    "smol_validation_split": ([f"{TABLE}/validation.json"], smol_table_split),
    "smol_validation_scenes": ([f"{TABLE}/validation.json"], smol_table_scenes),
    "smol_durability": ([f"{TABLE}/durability.json"], smol_durability),
    "smol_defenses": ([f"{TABLE}/defenses.json"], smol_defenses),
    "smol_bf16": ([f"{SMOL}/bf16.json"], smol_bf16),
}
