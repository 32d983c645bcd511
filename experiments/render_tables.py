"""Render every results table of README.md and docs/ from the committed result files, or check that they are.

    python experiments/render_tables.py            # rewrite each marked table in place
    python experiments/render_tables.py --check    # re-render, fail on any difference (make docs-check)

A results table in a document sits between a marker naming its renderer and sources and an end marker:

    <!-- rendered from experiments/organism_smol/results/eval/metrics.json by experiments/render_tables.py: smol_eval -->
    | ... the table ... |
    <!-- end -->

The renderer (a function of :data:`TABLES`) reads only its sources, which are committed result files; the marker line
itself is rewritten from the registry, so a table always names the files it came from. ``--check`` names every table
and source it checked, and every document and table that differs.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.demo.tables import demo_layers, demo_tga  # noqa: E402
from experiments.locate.table import separation_table  # noqa: E402
from experiments.markdown import read, span, table, wilson  # noqa: E402

DOCS = ("README.md", "docs/organism-smol.md", "docs/tga.md", "docs/reviewers.md", "docs/defenses.md", "docs/science.md")
MARK = re.compile(r"<!-- rendered from (?P<src>.*?) by experiments/render_tables\.py: (?P<name>[\w-]+) -->\n"
                  r"(?P<body>.*?)<!-- end -->", re.S)

SMOL = "experiments/organism_smol/results"
TABLE = f"{SMOL}/table"
REVIEWERS = "experiments/reviewers/results"


# ---------------------------------------------------------------------------------------------------------
# organism-smol: the first measurements (seed 9090 and seed 1234 pairs)
# ---------------------------------------------------------------------------------------------------------

EVAL_COLS = (("text_dsr", "n_harmful"), ("image_dsr", "n_harmful"), ("text_benign_refusal", "n_benign"),
             ("image_benign_refusal", "n_benign"), ("text_task_accuracy", "n_benign"),
             ("image_task_accuracy", "n_benign"))


def smol_eval(src: list[str]) -> str:
    m = read(src[0])
    rows = []
    for name, o in {"overall": m["overall"], **m["per_scene"]}.items():
        rec = o.get("image_harmful_recognition")
        rows.append([name.replace("_", " "), f"{o['n_harmful']} / {o['n_benign']}",
                     *(wilson(o.get(k), o.get(n)) for k, n in EVAL_COLS), "" if rec is None else f"{rec:.3f}"])
    return table(["", "n (harmful / benign)", "text DSR", "image DSR", "text over-refusal", "image over-refusal",
                  "text task acc.", "image task acc.", "image recognition"], rows)


def _compare_row(name: str, r: dict, layers: str, before_shift: float | None) -> list[str]:
    o = r["overall"]
    shift = r.get("shift", {}).get("mean_cos_matched")
    cos = f"{before_shift:.2f} → {shift:.2f}" if shift is not None and before_shift is not None and name != "before" \
        else ""
    rec = o.get("image_harmful_recognition")
    return [name, layers, wilson(o["image_dsr"], o["n_harmful"]), wilson(o["text_dsr"], o["n_harmful"]),
            wilson(o["image_benign_refusal"], o["n_benign"]), wilson(o["image_task_accuracy"], o["n_benign"]),
            "" if rec is None else f"{rec:.3f}", cos]


def _compare_table(spec: list[tuple[str, str, str]]) -> str:
    """Rows (label, compare.json, row key): before from the first file; cos(I, C) over its J before → after."""
    rows = []
    for label, path, key in spec:
        c = read(path)
        r = c["rows"][key]
        before = c["rows"]["before"].get("shift", {}).get("mean_cos_matched")
        layers = "—" if key in ("before", "ce", "filter") else span(c["safety_layers"])
        rows.append(_compare_row(label, r, layers, before if key not in ("ce", "filter") else None))
    return table(["row", "J", "image DSR", "text DSR", "image over-refusal", "image task acc.", "image recognition",
                  "cos(I, C) over J before → after (image-token means)"], rows)


ROUND1 = [("before", f"{SMOL}/tga/compare.json", "before"),
          ("paper TGA (image-token means)", f"{SMOL}/tga/compare.json", "tga"),
          ("tail alignment", f"{SMOL}/tga_tail/compare.json", "tga"),
          ("ce: the same training, λ = 0", f"{SMOL}/tga/compare.json", "ce"),
          ("CLIP input filter (before + filter)", f"{SMOL}/tga/compare.json", "filter")]
ROUND2 = [("before", f"{SMOL}/tga/compare.json", "before"),
          ("paper TGA at Algorithm 1's band (first round)", f"{SMOL}/tga/compare.json", "tga"),
          ("paper TGA at the caption-patching band", f"{SMOL}/tga_patching/compare.json", "tga"),
          ("paper's stage-2 optimisation, 150 steps", f"{SMOL}/tga_paper_defaults150/compare.json", "tga"),
          ("tail alignment (first round)", f"{SMOL}/tga_tail/compare.json", "tga"),
          ("tail alignment, centred", f"{SMOL}/tga_tail_centred/compare.json", "tga")]


# ---------------------------------------------------------------------------------------------------------
# organism-smol: the decisive table (experiments/organism_smol/table, scored by its score.py)
# ---------------------------------------------------------------------------------------------------------

ROW_LABELS = {
    "before": "before", "paper_tga": "paper TGA (preset, J = {27, 29})",
    "paper_tga_caption_band": "paper TGA at the caption-patching band (2–14)", "ce": "ce (λ = 0)",
    "refusal_ft": "refusal fine-tuning (same toxic rows → refusal)",
    "distill": "text-run response distillation (CE to its greedy answer)",
    "tail_last": "last-position tail (centred, 16–28)", "tail_centred": "centred tail (16–28)",
    "best": "**best: per-position-centred tail (16–28)**",
    "design_pos_sum": "per-position-centred tail, λ = 1 summed over 16–28",
    "design_pos_mean4": "per-position-centred tail, λ = 4 averaged over 16–28",
    "design_pos_mean26": "per-position-centred tail, λ = 26 averaged over 16–28",
}
MAIN_COLS = (("dsr_toxic", "image DSR, toxic images"), ("dsr_compositional", "image DSR, compositional"),
             ("over_refusal", "over-refusal, benign images"), ("task_acc", "task acc., benign images"),
             ("toxic_q_refusal", "refusal, toxic image + benign question"),
             ("toxic_q_task_acc", "task acc., toxic image + benign question"), ("recognition", "recognition"),
             ("text_dsr", "text DSR"))
SPLIT_COLS = (("dsr_harmful_request", "harmful request"), ("dsr_describe", "\"describe this image\""),
              ("dsr_toxic_held_out_scenes", "held-out scenes (alcohol, explosives)"),
              ("dsr_toxic_seen_scenes", "scenes seen in alignment"),
              ("dsr_toxic_held_out_phrasing", "held-out phrasings"), ("dsr_toxic_seen_phrasing", "seen phrasings"))


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
    rows = [[ROW_LABELS.get(n, n), str(len(t["rows"][n]["seeds"]) if t["rows"][n]["seeds"] != ["-"] else "—"),
             *(mean_sd(t["rows"][n], k) for k, _ in cols)] for n in names]
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
        seeds = "; ".join(f"seed {s}: +{v['first_only']} / −{v['second_only']}, p = {v['p']:.2g}"
                          for s, v in r["per_seed"].items())
        a = r["all_seeds"]
        rows.append([ROW_LABELS.get(other, other), seeds, f"+{a['first_only']} / −{a['second_only']}, p = {a['p']:.2g}"])
    return table([f"{ROW_LABELS.get(p['best'], p['best'])} against", "per seed (toxic pairs refused only by it / only by "
                  "the other; exact McNemar)", "all seeds' (seed, pair) items"], rows)


def smol_durability(src: list[str]) -> str:
    d = read(src[0])
    rows = []
    for r in d["rows"]:
        s = r["summary"]
        rows.append([r["label"], str(r["steps"]), str(len(s["seeds"])), mean_sd(s, "dsr_toxic"),
                     mean_sd(s, "over_refusal"), mean_sd(s, "task_acc"), mean_sd(s, "toxic_q_refusal")])
    return table(["fine-tuning of the aligned model", "steps", "seeds", "image DSR, toxic images",
                  "over-refusal, benign images", "task acc., benign images", "refusal, toxic image + benign question"],
                 rows)


def smol_defenses(src: list[str]) -> str:
    t = read(src[0])
    rows = [[n, mean_sd(r, "dsr_toxic"), mean_sd(r, "dsr_compositional"), mean_sd(r, "over_refusal"),
             mean_sd(r, "task_acc"), mean_sd(r, "toxic_q_refusal"), mean_sd(r, "toxic_q_task_acc"),
             mean_sd(r, "text_dsr")] for n, r in t["rows"].items()]
    return table(["defense (calibrated on validation)", "image DSR, toxic images", "image DSR, compositional",
                  "over-refusal, benign images", "task acc., benign images", "refusal, toxic image + benign question",
                  "task acc., toxic image + benign question", "text DSR"], rows)


# ---------------------------------------------------------------------------------------------------------
# The reviewers' tables (experiments/reviewers/tables.py's records)
# ---------------------------------------------------------------------------------------------------------

def fmt(s: dict | None) -> str:
    if not s or s.get("share") is None:
        return "—"
    return f"{s['share']:.3f} [{s['lower']:.3f}, {s['upper']:.3f}]"


def fmt_paired(t: dict | None) -> str:
    return "—" if t is None else f"+{t['first_only']} / −{t['second_only']}, p = {t['p']:.2g}"


REV_METRICS = ("image_dsr", "text_dsr", "image_benign_refusal", "image_task_accuracy")


def reviewers_noise(src: list[str]) -> str:
    rows = []
    for r in read(src[0])["a_caption_noise"]:
        if r["row"] == "before":
            rows.append(["before alignment", "—", *(fmt(r[m]) for m in REV_METRICS), f"{r['cos_ic_over_J']:.3f}",
                         fmt(r.get("compositional_image_dsr")), "—"])
            continue
        ns = r.get("noise")
        errs = "—" if not ns else f"{ns['by_type']['object']:,} / {ns['by_type']['colour'] + ns['by_type']['count']:,}"
        label = r["row"] + (f" (`{r['run']}`, reused)" if r.get("reused") else "")
        rows.append([label, errs, *(fmt(r[m]) for m in REV_METRICS), f"{r['cos_ic_over_J']:.3f}",
                     fmt(r.get("compositional_image_dsr")), fmt_paired(r.get("image_dsr_paired_vs_0"))])
    return table(["caption noise", "corrupted rows (object / attribute)", "image DSR", "text DSR", "image over-refusal",
                  "image task acc.", "cos(I, C) over J", "image DSR, compositional scene",
                  "harmful pairs defended only here / only at 0% (exact McNemar)"], rows)


REV_LABELS = {"before": "before", "tga": "TGA", "tga_tail": "tail alignment", "filter": "before + CLIP input filter"}


def reviewers_compositional(src: list[str]) -> str:
    cats = {"compositional": "benign image + harmful request (refusal is right)",
            "toxic_task": "toxic image + benign task (refusal is over-refusal)"}
    rows = []
    for r in read(src[0])["b_compositional"]:
        first = r["model"] == "before"
        rows.append([cats[r["category"]] if first else "", REV_LABELS.get(r["model"], r["model"]), str(r["n"]),
                     fmt(r["image_refusal"]), fmt(r["text_refusal"]), fmt(r["image_task_accuracy"]),
                     "—" if r.get("filter_flag_rate") is None else f"{r['filter_flag_rate']:.3f}"])
    return table(["category", "model", "n", "image refusal rate", "text refusal rate", "image task acc.",
                  "filter flag rate"], rows)


def reviewers_task_kinds(src: list[str]) -> str:
    recs = read(src[0])["b_toxic_task_kinds"]
    kinds = ("task_colour", "task_count", "task_name")
    n = {r["kind"]: r["n"] for r in recs}
    rows = []
    for model in dict.fromkeys(r["model"] for r in recs):
        cells = []
        for k in kinds:
            r = next(x for x in recs if x["model"] == model and x["kind"] == k)
            cells += [fmt(r["image_refusal"]), fmt(r["text_refusal"])]
        rows.append([REV_LABELS.get(model, model), *cells])
    head = ["model"] + [f"{k.removeprefix('task_')}{f' (n = {n[k]})' if run == 'image' else ''}, {run}"
                        for k in kinds for run in ("image", "text")]
    return table(head, rows)


def reviewers_reversal(src: list[str]) -> str:
    rows = []
    for r in read(src[0])["c_reversal"]:
        rows.append([r["data"], str(r["steps"]), *(fmt(r[m]) for m in REV_METRICS),
                     fmt(r.get("compositional_image_dsr")), fmt_paired(r.get("image_dsr_paired_vs_0"))])
    return table(["fine-tuning data", "steps", "image DSR", "text DSR", "image over-refusal", "image task acc.",
                  "image DSR, compositional scene", "harmful pairs defended only here / only at step 0 (exact McNemar)"],
                 rows)


def reviewers_filter(src: list[str]) -> str:
    names = {"before": "before", "tga": "TGA", "tga_tail": "tail alignment", "ce": "ce (λ = 0)",
             "safety_ft": "safety_ft (+14 refused toxic images)", "filter": "filter (CLIP input filter)"}
    rows = []
    for r in read(src[0])["d_filter"]:
        f = r.get("filter")
        rows.append([names.get(r["row"], r["row"]), *(fmt(r[m]) for m in REV_METRICS),
                     fmt(r.get("compositional_image_dsr")),
                     f"{f['flag_rate_toxic_images']:.3f} / {f['flag_rate_benign']:.3f}" if f else "—"])
    return table(["row", "image DSR", "text DSR", "image over-refusal", "image task acc.",
                  "image DSR, compositional scene", "filter flags (toxic images / benign)"], rows)


# ---------------------------------------------------------------------------------------------------------
# docs/tga.md and docs/defenses.md (the first organism)
# ---------------------------------------------------------------------------------------------------------

def tga_recipe(src: list[str]) -> str:
    located, far, ft400 = (read(p) for p in src)
    rows = []

    def add(name: str, r: dict, span_note: str = "") -> None:
        o, sh = r["overall"], r.get("shift") or {}
        cos = "—" if "mean_cos_matched" not in sh else \
            f"{sh['mean_cos_matched']:.3f}{span_note} ({sh['mean_cos_mismatched']:.3f})"
        rows.append([name, f"{o['text_dsr']:.3f}", f"{o['image_dsr']:.3f}", f"{o['image_benign_refusal']:.3f}",
                     f"{o['image_task_accuracy']:.3f}", cos,
                     f"{sh['mean_cos_centred']:.3f}" if "mean_cos_centred" in sh else "—"])

    J = span(located["safety_layers"])
    add("before", located["rows"]["before"])
    add(f"**TGA, J = {J} (located)**", located["rows"]["tga"])
    add("ce (the same run, λ = 0)", located["rows"]["ce"])
    add("safety_ft (+14 refused toxic images, CE)", located["rows"]["safety_ft"])
    add("safety_ft with 400 refused toxic images (`results/safety_ft_400`)", ft400["rows"]["safety_ft"])
    add("filter (CLIP zero-shot on the image)", located["rows"]["filter"])
    add(f"TGA, J = {span(far['safety_layers'])} (far)", far["rows"]["tga"], f" over {span(far['safety_layers'])}")
    return table(["row", "text DSR", "image DSR", "image over-refusal", "image task acc.",
                  "cos(I, C) over J (mismatched)", "centred"], rows)


ABLATION_WHAT = {"paper_prompt": "R in the prompt (the paper's prompt)",
                 "toxic_described": "toxic rows also trained on their description (answer loss)",
                 "released_code_form": "exp form with the released code's annealing (measured when this form summed "
                                       "over J; it now averages, 1/5 of that weight at J = 3–7)",
                 "stage2": "stage 2 (projector + LM), lr 3e-5, frozen caption target",
                 "stage2_paper_lr": "stage 2 at the paper's lr 2e-6, frozen caption target"}


def tga_ablation(src: list[str]) -> str:
    located = read(src[0])
    rows = []
    o, sh = located["rows"]["tga"]["overall"], located["rows"]["tga"]["shift"]
    rows.append(["recipe", "(above)", f"{o['text_dsr']:.3f}", f"{o['image_dsr']:.3f}",
                 f"{o['image_benign_refusal']:.3f}", f"{o['image_task_accuracy']:.3f}", f"{sh['mean_cos_matched']:.3f}"])
    for r in read(src[1]):
        if r["method"] != "tga":
            continue
        rows.append([r["run"], ABLATION_WHAT.get(r["run"], ""), *(f"{float(r[k]):.3f}" for k in
                     ("text_dsr", "image_dsr", "image_benign_refusal", "image_task_accuracy", "cos_over_layers"))])
    return table(["run", "what changes", "text DSR", "image DSR", "image over-refusal", "image task acc.",
                  "cos over J"], rows)


DEFENSE_LABELS = {"before": "before", "tga": "**TGA, J = 4–6** (stage 1, trained)", "ce": "ce (λ = 0)",
                  "safety_ft": "safety_ft (+14 refused toxic images)", "filter": "filter (CLIP zero-shot on the image)",
                  "refusal_steering-add": "refusal_steering:add",
                  "refusal_steering-ablate": "refusal_steering:ablate (control)",
                  "shift_correction-cmrm": "shift_correction:cmrm (image tokens)",
                  "shift_correction-cmrm-after": "shift_correction:cmrm, `--positions after`",
                  "shift_correction-shiftdc": "shift_correction:shiftdc", "hidden_detect-cosine": "hidden_detect:cosine",
                  "hidden_detect-logprob": "hidden_detect:logprob", "self_check": "self_check"}


def defenses_rows(src: list[str]) -> str:
    """The trained rows of the comparison run (compare.json: no inference cost), then each defense (summary.csv: the
    cost ratio measured by experiments/defenses/organism.sh)."""
    rows = []
    for key, r in read(src[0])["rows"].items():
        if key not in ("before", "tga", "ce", "safety_ft", "filter"):
            continue
        o = r["overall"]
        rows.append([DEFENSE_LABELS[key], *(f"{o[k]:.3f}" for k in ("text_dsr", "image_dsr", "image_benign_refusal",
                     "text_benign_refusal", "image_task_accuracy", "text_task_accuracy")), "—",
                     "not timed (+ a CLIP forward)" if key == "filter" else "1"])
    for r in read(src[1]):
        if r["row"].startswith("before"):
            continue

        def f(k: str, r: dict = r) -> str:
            return "—" if r.get(k) in (None, "") else f"{float(r[k]):.3f}"
        rows.append([DEFENSE_LABELS.get(r["row"], r["row"]), f("text_dsr"), f("image_dsr"), f("image_benign_refusal"),
                     f("text_benign_refusal"), f("image_task_accuracy"), f("text_task_accuracy"),
                     "—" if not r.get("strength") else f"{float(r['strength']):g}", f"{float(r['cost_ratio']):.2f}"])
    return table(["row", "text DSR", "image DSR", "image over-refusal", "text over-refusal", "image task acc.",
                  "text task acc.", "α", "inference cost (× plain)"], rows)


# ---------------------------------------------------------------------------------------------------------
# README: the headline numbers of both organisms
# ---------------------------------------------------------------------------------------------------------

def readme_organisms(src: list[str]) -> str:
    first = read(src[0])["eval"]  # the build's own evaluation (held-out pairs of seed 1234)
    rows = []
    o = first["overall"]
    rows.append(["organism (`docs/organism.md`), before", f"{o['n_harmful']} / {o['n_benign']}",
                 wilson(o["text_dsr"], o["n_harmful"]), wilson(o["image_dsr"], o["n_harmful"]),
                 wilson(o["image_benign_refusal"], o["n_benign"]), wilson(o["image_task_accuracy"], o["n_benign"]),
                 f"{o['image_harmful_recognition']:.3f}"])
    smol = read(src[1])["overall"]
    rows.append(["organism-smol (`docs/organism-smol.md`), before", f"{smol['n_harmful']} / {smol['n_benign']}",
                 wilson(smol["text_dsr"], smol["n_harmful"]), wilson(smol["image_dsr"], smol["n_harmful"]),
                 wilson(smol["image_benign_refusal"], smol["n_benign"]),
                 wilson(smol["image_task_accuracy"], smol["n_benign"]), f"{smol['image_harmful_recognition']:.3f}"])
    return table(["model, held-out pairs", "n (harmful / benign)", "text DSR", "image DSR", "image over-refusal",
                  "image task acc.", "image recognition"], rows)


README_ROWS = ["before", "paper_tga", "ce", "refusal_ft", "distill", "tail_centred", "best"]
README_COLS = (("dsr_toxic", "image DSR, toxic images"), ("over_refusal", "over-refusal, benign images"),
               ("task_acc", "task acc., benign images"), ("toxic_q_refusal", "refusal, toxic image + benign question"),
               ("text_dsr", "text DSR"))


def readme_smol(src: list[str]) -> str:
    return _rows_table(src[0], README_COLS, README_ROWS)


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
    "smol_validation_interim": ([f"{TABLE}/validation-interim.json"], smol_table_main),
    "smol_validation_interim_split": ([f"{TABLE}/validation-interim.json"], smol_table_split),
    "smol_validation_interim_scenes": ([f"{TABLE}/validation-interim.json"], smol_table_scenes),
    "smol_validation_split": ([f"{TABLE}/validation.json"], smol_table_split),
    "smol_durability": ([f"{TABLE}/durability.json"], smol_durability),
    "smol_defenses": ([f"{TABLE}/defenses.json"], smol_defenses),
    **{f"reviewers_{org.replace('-', '_')}_{part}": ([f"{REVIEWERS}/{org}/tables.json"], fn)
       for org in ("organism", "organism-smol")
       for part, fn in (("noise", reviewers_noise), ("compositional", reviewers_compositional),
                        ("task_kinds", reviewers_task_kinds), ("reversal", reviewers_reversal),
                        ("filter", reviewers_filter))},
    "tga_recipe": (["experiments/tga/results/located/compare.json", "experiments/tga/results/far/compare.json",
                    "experiments/tga/results/safety_ft_400/compare.json"], tga_recipe),
    "tga_ablation": (["experiments/tga/results/located/compare.json", "experiments/tga/results/ablation/summary.csv"],
                     tga_ablation),
    "defenses_organism": (["experiments/defenses/results/compare/compare.json",
                           "experiments/defenses/results/summary.csv"], defenses_rows),
    "readme_organisms": (["safety_probe/organism/weights/build_metrics.json", f"{SMOL}/eval/metrics.json"],
                         readme_organisms),
    "locate_separation": (["experiments/locate/results/separation.json"], separation_table),
    "demo_layers": (["figures/demo/layers.csv", "figures/demo/layers.json"], demo_layers),
    "demo_tga": (["experiments/demo/results/tga/compare.json"], demo_tga),
}


def render_block(name: str) -> str:
    if name not in TABLES:
        raise SystemExit(f"unknown table {name!r} (experiments/render_tables.py TABLES)")
    sources, fn = TABLES[name]
    return (f"<!-- rendered from {', '.join(sources)} by experiments/render_tables.py: {name} -->\n"
            f"{fn(sources)}<!-- end -->")


def render_text(text: str, found: list[str]) -> str:
    def sub(m: re.Match) -> str:
        found.append(m["name"])
        return render_block(m["name"])

    return MARK.sub(sub, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail on any difference instead of rewriting")
    ap.add_argument("docs", nargs="*", default=list(DOCS))
    args = ap.parse_args()
    bad = []
    for doc in args.docs:
        path = ROOT / doc
        text = path.read_text()
        found: list[str] = []
        new = render_text(text, found)
        for name in found:
            print(f"{doc}: {name} <- {', '.join(TABLES[name][0])}")
        if not found:
            print(f"{doc}: no rendered tables")
        if new != text:
            if args.check:
                old_blocks = {m["name"]: m.group(0) for m in MARK.finditer(text)}
                differ = [n for n in found if old_blocks.get(n) != render_block(n)]
                bad.append(f"{doc}: {', '.join(differ) or 'markers'} differ from their sources")
            else:
                path.write_text(new)
                print(f"{doc}: rewritten")
    if bad:
        print("\n".join(["docs-check FAILED:", *bad, "run `python experiments/render_tables.py` and review the diff"]))
        raise SystemExit(1)
    if args.check:
        print("docs-check: every rendered table matches its sources")


if __name__ == "__main__":
    main()
