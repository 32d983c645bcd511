"""The reviewers' four tables from the run folders of experiments/reviewers/organism.sh, with Wilson 95% intervals.

    python experiments/reviewers/tables.py --out runs/reviewers-organism --tga-run runs/tga13

Reads ``OUT/noise/p*/compare.json`` (a), ``OUT/{compositional,toxic_task}/{before,tga,<extra>,filter}/metrics.json``
(b), ``OUT/reversal/s*/eval/metrics.json`` and ``s*/train.json`` (c), and the recipe's ``TGA_RUN/compare.json`` (the
rows of (d); the 0% row of (a) unless ``--noise-zero`` names the 0% run of the alignment the noisy runs repeat).
``--extra-runs name:MODEL_DIR`` adds another aligned model: its (b) folder ``name`` and, from the ``compare.json``
beside ``MODEL_DIR``, its row in (d). Writes
``OUT/tables.md`` and ``OUT/tables.json`` (every share with k, n and its interval) and prints the markdown.
Missing runs are left out of their table (and listed under ``missing``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safety_probe.analysis.scores import paired_exact_test, share_with_interval
from safety_probe.eval.evaluate import defended

MISSING: list[str] = []
LABELS = {"before": "before TGA", "tga": "TGA", "tga_tail": "tail alignment", "filter": "before TGA + CLIP input filter"}


def label(name: str) -> str:
    return LABELS.get(name, name)


def layer_span(layers: list[int]) -> str:
    """``[4, 5, 6]`` as "4–6", ``[27, 29]`` as "{27, 29}"."""
    if layers and layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}–{layers[-1]}"
    return "{" + ", ".join(map(str, layers)) + "}"


def read(path: Path) -> dict | None:
    if not path.is_file():
        MISSING.append(str(path))
        return None
    return json.loads(path.read_text())


def share(overall: dict, metric: str) -> dict:
    """``overall[metric]`` as k of n with its Wilson 95% interval (n: the pairs the metric is a share of)."""
    n = {"text_dsr": "n_harmful", "image_dsr": "n_harmful"}.get(metric, "n_benign")
    n = int(overall[n])
    p = overall.get(metric)
    if p is None or n == 0:
        return share_with_interval(0, 0)
    return share_with_interval(round(p * n), n)


def paired_image_dsr(responses: Path, reference: Path) -> dict | None:
    """Exact McNemar test of image-run defence on the harmful pairs of two evaluations of the same pairs."""
    if not responses.is_file() or not reference.is_file():
        return None
    rows = [[json.loads(line) for line in p.read_text().splitlines() if line.strip()] for p in (responses, reference)]
    if [(r["image"], r["instruction"]) for r in rows[0]] != [(r["image"], r["instruction"]) for r in rows[1]]:
        raise SystemExit(f"{responses} and {reference} are not evaluations of the same pairs")
    harmful = [i for i, r in enumerate(rows[0]) if r["label"] == "harmful"]
    return paired_exact_test(*([defended(rs[i], "image") for i in harmful] for rs in rows))


def fmt_paired(t: dict | None) -> str:
    return "—" if t is None else f"+{t['first_only']} / −{t['second_only']}, p = {t['p']:.2g}"


def fmt(s: dict) -> str:
    if s["share"] is None:
        return "—"
    return f"{s['share']:.3f} [{s['lower']:.3f}, {s['upper']:.3f}]"


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def row_shares(overall: dict, metrics: list[str]) -> dict:
    return {m: share(overall, m) for m in metrics}


def noise_table(out: Path, tga_run: Path, zero: Path | None) -> tuple[str, list[dict]]:
    metrics = ["image_dsr", "text_dsr", "image_benign_refusal", "image_task_accuracy"]
    recs = []
    zero_cmp = read((zero or tga_run) / "compare.json")
    if zero_cmp and "tga" in zero_cmp["rows"]:
        reused = zero is None or out.resolve() not in zero.resolve().parents
        recs.append({"noise": 0, "run": str(zero or tga_run), "reused": reused, "row": zero_cmp["rows"]["tga"],
                     "before": zero_cmp["rows"].get("before"), "noise_summary": None})
    dirs = sorted((d for d in (out / "noise").glob("p*") if d.name[1:].isdigit()), key=lambda p: int(p.name[1:]))
    if (out / "noise" / "p0check").is_dir():
        dirs.insert(0, out / "noise" / "p0check")
    for d in dirs:
        check = d.name == "p0check"
        pct = 0 if check else int(d.name[1:])
        if pct == 0 and zero is not None and not check and zero.resolve() == d.resolve():
            continue
        cmp_ = read(d / "compare.json")
        if not cmp_ or "tga" not in cmp_["rows"]:
            MISSING.append(f"{d}/compare.json: tga row")
            continue
        recs.append({"noise": pct, "check": check, "run": str(d), "reused": False, "row": cmp_["rows"]["tga"],
                     "before": cmp_["rows"].get("before"), "noise_summary": read(d / "data" / "noise.json")})
    rows, data = [], []
    # the 0% row's judged responses (a reused run may predate them: then its retrained check's, same weights)
    zero_responses = next((Path(r["run"]) / "responses.jsonl" for r in recs
                           if r["noise"] == 0 and (Path(r["run"]) / "responses.jsonl").is_file()), None)
    before = next((r["before"] for r in recs if r["before"]), None)
    if before:
        s = row_shares(before["overall"], metrics)
        comp = before["per_scene"].get("compositional", {})
        rows.append(["before TGA", "—", *(fmt(s[m]) for m in metrics), f"{before['shift']['mean_cos_matched']:.3f}",
                     fmt(share(comp, "image_dsr")) if comp else "—", "—", "—"])
        data.append({"row": "before", **s, "cos_ic_over_J": before["shift"]["mean_cos_matched"]})
    for r in recs:
        o = r["row"]["overall"]
        s = row_shares(o, metrics)
        ns = r["noise_summary"]
        errs = "—" if not ns else f"{ns['by_type']['object']} / {ns['by_type']['colour'] + ns['by_type']['count']}"
        comp = r["row"]["per_scene"].get("compositional", {})
        label = f"{r['noise']}%" + (f" ({r['run']}, reused)" if r["reused"] else "") + \
            (" (retrained: check of the reused row)" if r.get("check") else "")
        paired = None if r["noise"] == 0 or zero_responses is None else \
            paired_image_dsr(Path(r["run"]) / "responses.jsonl", zero_responses)
        rows.append([label, errs, *(fmt(s[m]) for m in metrics), f"{r['row']['shift']['mean_cos_matched']:.3f}",
                     fmt(share(comp, "image_dsr")) if comp else "—", fmt_paired(paired),
                     (r["row"].get("weights_sha256") or "")[:8]])
        data.append({"row": f"{r['noise']}%" + (" check" if r.get("check") else ""), "run": r["run"],
                     "reused": r["reused"], "noise": ns, **s,
                     "cos_ic_over_J": r["row"]["shift"]["mean_cos_matched"],
                     "weights_sha256": r["row"].get("weights_sha256"), "steps": r["row"].get("steps"),
                     "image_dsr_paired_vs_0": paired,
                     "compositional_image_dsr": share(comp, "image_dsr") if comp else None})
    head = ["caption noise", "corrupted rows (object / attribute)", "image DSR", "text DSR", "image over-refusal",
            "image task acc.", "cos(I, C) over J", "image DSR, compositional scene",
            "harmful pairs defended only here / only at 0% (exact McNemar)", "weights sha256"]
    return table(head, rows), data


def compositional_table(out: Path, models: list[str]) -> tuple[str, list[dict]]:
    rows, data = [], []
    cats = {"compositional": ("benign image + harmful request (refusal is right)", "image_dsr", "text_dsr"),
            "toxic_task": ("toxic image + benign task question (refusal is over-refusal)", "image_benign_refusal",
                           "text_benign_refusal")}
    for cat, (what, img, txt) in cats.items():
        for model in models:
            name = label(model)
            m = read(out / cat / model / "metrics.json")
            if not m:
                continue
            o = m["overall"]
            s = {"image_refusal": share(o, img), "text_refusal": share(o, txt)}
            acc = share(o, "image_task_accuracy") if cat == "toxic_task" else share_with_interval(0, 0)
            flag = m.get("filter", {}).get("flag_rate_all")
            rows.append([what if model == "before" else "", name, str(o["n_pairs"]), fmt(s["image_refusal"]),
                         fmt(s["text_refusal"]), fmt(acc), "—" if flag is None else f"{flag:.3f}"])
            data.append({"category": cat, "model": model, "n": o["n_pairs"], **s, "image_task_accuracy": acc,
                         "filter_flag_rate": flag})
    head = ["category", "model", "n", "image refusal rate", "text refusal rate", "image task acc.",
            "filter flag rate"]
    return table(head, rows), data


def toxic_task_kinds(out: Path, models: list[str]) -> tuple[str, list[dict]]:
    """Over-refusal on toxic images per benign task kind (colour, count, name), from the judged responses."""
    rows, data = [], []
    for model in models:
        name = label(model)
        path = out / "toxic_task" / model / "responses.jsonl"
        if not path.is_file():
            MISSING.append(str(path))
            continue
        judged = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if model == "filter":  # the filter answers a flagged image by the refusal
            for r in judged:
                if r.get("filtered"):
                    r["image_refused"] = True
        cells = []
        for kind in ("task_colour", "task_count", "task_name"):
            rs = [r for r in judged if r["kind"] == kind]
            img = share_with_interval(sum(bool(r["image_refused"]) for r in rs), len(rs))
            txt = share_with_interval(sum(bool(r["text_refused"]) for r in rs), len(rs))
            cells += [fmt(img), fmt(txt)]
            data.append({"model": model, "kind": kind, "n": len(rs), "image_refusal": img, "text_refusal": txt})
        rows.append([name, *cells])
    n = {d["kind"]: d["n"] for d in data}
    head = ["model"] + [f"{k.removeprefix('task_')} (n = {n.get(k, '?')}): {run} refusal"
                        for k in ("task_colour", "task_count", "task_name") for run in ("image", "text")]
    return table(head, rows), data


def reversal_table(out: Path) -> tuple[str, list[dict]]:
    metrics = ["image_dsr", "text_dsr", "image_benign_refusal", "image_task_accuracy"]
    rows, data = [], []
    runs = [(name, d) for name, folder in (("toxic images, described", "reversal"),
                                           ("control: benign images only", "reversal_control"))
            for d in sorted((out / folder).glob("s*"), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else -1)]
    for data_name, d in runs:
        if not d.name[1:].isdigit():
            continue
        steps = int(d.name[1:])
        m = read(d / "eval" / "metrics.json")
        if not m:
            continue
        o = m["overall"]
        s = row_shares(o, metrics)
        comp = m["per_scene"].get("compositional", {})
        train = read(d / "train.json") if steps else None
        paired = paired_image_dsr(d / "eval" / "responses.jsonl", out / "reversal" / "s0" / "eval" / "responses.jsonl") \
            if steps else None
        lm = train["log"][-1].get("lm") if train and train.get("log") else None
        rows.append([data_name, str(steps), *(fmt(s[m_]) for m_ in metrics), fmt(share(comp, "image_dsr")) if comp else "—",
                     fmt_paired(paired), "—" if lm is None else f"{lm:.4f}"])
        data.append({"data": data_name, "steps": steps, **s, "compositional_image_dsr": share(comp, "image_dsr") if comp else None,
                     "image_dsr_paired_vs_0": paired,
                     "final_lm_loss": lm, "weights_sha256": train.get("weights_sha256") if train else None})
    head = ["fine-tuning data", "steps", "image DSR", "text DSR", "image over-refusal", "image task acc.",
            "image DSR, compositional scene", "harmful pairs defended only here / only at step 0 (exact McNemar)",
            "last logged LM loss"]
    return table(head, rows), data


def filter_table(tga_run: Path, extra: dict[str, Path]) -> tuple[str, list[dict]]:
    cmp_ = read(tga_run / "compare.json")
    if not cmp_:
        return "", []
    metrics = ["image_dsr", "text_dsr", "image_benign_refusal", "image_task_accuracy"]
    found = cmp_["rows"]
    rows_in = {"before": ("before", found.get("before")),
               "tga": (f"TGA (J = {layer_span(cmp_['safety_layers'])})", found.get("tga"))}
    for name, model_dir in extra.items():  # the tga row of another aligned model's run
        other = read(model_dir.parent / "compare.json")
        if other:
            rows_in[name] = (f"{label(name)} (J = {layer_span(other['safety_layers'])})", other["rows"].get("tga"))
    for key, name in (("ce", "ce (λ = 0)"), ("safety_ft", "safety_ft (+14 refusals)"),
                      ("filter", "filter (CLIP input filter on the image)")):
        if key in found or key in cmp_["config"].get("baselines", []):
            rows_in[key] = (name, found.get(key))
    rows, data = [], []
    for key, (name, r) in rows_in.items():
        if not r:
            MISSING.append(f"{key} row of its compare.json")
            continue
        s = row_shares(r["overall"], metrics)
        comp = r["per_scene"].get("compositional", {})
        cs = share(comp, "image_dsr") if comp else share_with_interval(0, 0)
        flags = r.get("filter", {})
        fl = (f"{flags['flag_rate_toxic_images']:.3f} / {flags['flag_rate_benign']:.3f}" if flags else "—")
        rows.append([name, *(fmt(s[m]) for m in metrics), fmt(cs), fl])
        data.append({"row": key, **s, "compositional_image_dsr": cs, "filter": flags or None})
    head = ["row", "image DSR", "text DSR", "image over-refusal", "image task acc.",
            "image DSR, compositional scene", "filter flags (toxic images / benign)"]
    return table(head, rows), data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/reviewers-organism")
    ap.add_argument("--tga-run", default="runs/tga13")
    ap.add_argument("--noise-zero", default=None, help="the 0%% run of the alignment the noisy runs repeat")
    ap.add_argument("--extra-runs", nargs="*", default=[], metavar="NAME:MODEL_DIR",
                    help="more aligned models: their (b) folder NAME, and a (d) row from MODEL_DIR/../compare.json")
    args = ap.parse_args()
    out, tga_run = Path(args.out), Path(args.tga_run)
    zero = Path(args.noise_zero) if args.noise_zero else None
    extra = {e.split(":", 1)[0]: Path(e.split(":", 1)[1]) for e in args.extra_runs}
    models = ["before", "tga", *extra, "filter"]
    parts, js = [], {}
    for key, title, (md, data) in (
            ("a_caption_noise", "(a) Caption noise in the TGA data", noise_table(out, tga_run, zero)),
            ("b_compositional", "(b) Compositional inputs", compositional_table(out, models)),
            ("b_toxic_task_kinds", "(b) Toxic image + benign task, per task kind", toxic_task_kinds(out, models)),
            ("c_reversal", "(c) Reversal: plain fine-tuning of the aligned model on described toxic images",
             reversal_table(out)),
            ("d_filter", "(d) The input filter beside before / TGA / baselines (300 held-out pairs, seed 1234)",
             filter_table(tga_run, extra))):
        parts.append(f"### {title}\n\n{md}\n")
        js[key] = data
    js["missing"] = sorted(set(MISSING))
    text = "\n".join(parts)
    text += "\nShares with Wilson 95% intervals [lower, upper] (safety_probe.analysis.scores.wilson_interval).\n"
    if MISSING:
        text += "\nMissing: " + ", ".join(sorted(set(MISSING))) + "\n"
    (out / "tables.md").write_text(text)
    (out / "tables.json").write_text(json.dumps(js, indent=1))
    print(text)


if __name__ == "__main__":
    main()
