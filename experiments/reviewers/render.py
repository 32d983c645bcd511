"""The reviewers' tables of docs/reviewers.md, from experiments/reviewers/tables.py's records (caption noise,
compositional requests, toxic images asked benign tasks, reversal, the CLIP filter); registered in
experiments/render_tables.py."""

from __future__ import annotations

from collections.abc import Callable

from experiments.markdown import read, table

REVIEWERS = "experiments/reviewers/results"


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
            rows.append(
                [
                    "before alignment",
                    "—",
                    *(fmt(r[m]) for m in REV_METRICS),
                    f"{r['cos_ic_over_J']:.3f}",
                    fmt(r.get("compositional_image_dsr")),
                    "—",
                ]
            )
            continue
        ns = r.get("noise")
        errs = "—" if not ns else f"{ns['by_type']['object']:,} / {ns['by_type']['colour'] + ns['by_type']['count']:,}"
        label = r["row"] + (f" (`{r['run']}`, reused)" if r.get("reused") else "")
        rows.append(
            [
                label,
                errs,
                *(fmt(r[m]) for m in REV_METRICS),
                f"{r['cos_ic_over_J']:.3f}",
                fmt(r.get("compositional_image_dsr")),
                fmt_paired(r.get("image_dsr_paired_vs_0")),
            ]
        )
    return table(
        [
            "caption noise",
            "corrupted rows (object / attribute)",
            "image DSR",
            "text DSR",
            "image over-refusal",
            "image task acc.",
            "cos(I, C) over J",
            "image DSR, compositional scene",
            "harmful pairs defended only here / only at 0% (exact McNemar)",
        ],
        rows,
    )


REV_LABELS = {"before": "before", "tga": "TGA", "tga_tail": "tail alignment", "filter": "before + CLIP input filter"}


def reviewers_compositional(src: list[str]) -> str:
    cats = {
        "compositional": "benign image + harmful request (refusal is right)",
        "toxic_task": "toxic image + benign task (refusal is over-refusal)",
    }
    rows = []
    for r in read(src[0])["b_compositional"]:
        first = r["model"] == "before"
        rows.append(
            [
                cats[r["category"]] if first else "",
                REV_LABELS.get(r["model"], r["model"]),
                str(r["n"]),
                fmt(r["image_refusal"]),
                fmt(r["text_refusal"]),
                fmt(r["image_task_accuracy"]),
                "—" if r.get("filter_flag_rate") is None else f"{r['filter_flag_rate']:.3f}",
            ]
        )
    return table(
        ["category", "model", "n", "image refusal rate", "text refusal rate", "image task acc.", "filter flag rate"],
        rows,
    )


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
    head = ["model"] + [
        f"{k.removeprefix('task_')}{f' (n = {n[k]})' if run == 'image' else ''}, {run}"
        for k in kinds
        for run in ("image", "text")
    ]
    return table(head, rows)


def reviewers_reversal(src: list[str]) -> str:
    rows = []
    for r in read(src[0])["c_reversal"]:
        rows.append(
            [
                r["data"],
                str(r["steps"]),
                *(fmt(r[m]) for m in REV_METRICS),
                fmt(r.get("compositional_image_dsr")),
                fmt_paired(r.get("image_dsr_paired_vs_0")),
            ]
        )
    return table(
        [
            "fine-tuning data",
            "steps",
            "image DSR",
            "text DSR",
            "image over-refusal",
            "image task acc.",
            "image DSR, compositional scene",
            "harmful pairs defended only here / only at step 0 (exact McNemar)",
        ],
        rows,
    )


def reviewers_filter(src: list[str]) -> str:
    names = {
        "before": "before",
        "tga": "TGA",
        "tga_tail": "tail alignment",
        "ce": "ce (λ = 0)",
        "safety_ft": "safety_ft (+14 refused toxic images)",
        "filter": "filter (CLIP input filter)",
    }
    rows = []
    for r in read(src[0])["d_filter"]:
        f = r.get("filter")
        rows.append(
            [
                names.get(r["row"], r["row"]),
                *(fmt(r[m]) for m in REV_METRICS),
                fmt(r.get("compositional_image_dsr")),
                f"{f['flag_rate_toxic_images']:.3f} / {f['flag_rate_benign']:.3f}" if f else "—",
            ]
        )
    return table(
        [
            "row",
            "image DSR",
            "text DSR",
            "image over-refusal",
            "image task acc.",
            "image DSR, compositional scene",
            "filter flags (toxic images / benign)",
        ],
        rows,
    )


TABLES: dict[str, tuple[list[str], Callable[[list[str]], str]]] = {
    f"reviewers_{org.replace('-', '_')}_{part}": ([f"{REVIEWERS}/{org}/tables.json"], fn)
    for org in ("organism", "organism-smol")
    for part, fn in (
        ("noise", reviewers_noise),
        ("compositional", reviewers_compositional),
        ("task_kinds", reviewers_task_kinds),
        ("reversal", reviewers_reversal),
        ("filter", reviewers_filter),
    )
}
