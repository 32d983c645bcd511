"""``run_tga``: TGA and its baselines trained, evaluated and compared in one harness.

    >>> from safety_probe.tga import TGAConfig, run_tga
    >>> out = run_tga(TGAConfig(model="organism", layers="runs/locate/layers.json", stage=2, lr=1e-4))
    >>> json.loads((out / "compare.json").read_text())["rows"]["tga"]["overall"]["image_dsr"]

Writes ``out/model`` (the TGA-aligned model, a Hugging Face folder ``load_vlm`` reads), ``out/compare.json``
(rows: method → metrics, each with the semantic shift at every block), ``out/responses*.jsonl`` (judged
responses), ``out/figures/tga_*``, ``out/baselines/<name>/model``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch

from safety_probe.data.pairs import Pair, load_pairs
from safety_probe.errors import InputError
from safety_probe.io import write_json
from safety_probe.models.vlm import VLM, load_vlm
from safety_probe.tga.config import METHODS, TGAConfig
from safety_probe.tga.data import TGAExample, load_tga_data, write_tga_data
from safety_probe.tga.train import guide_only_rows, resolve_layers, train


# Input-filter descriptors: the toxic scenes' nouns and everyday objects (the world's vocabulary; for real
# images pass your own lists to `filter_flags`).
def _world_descriptors() -> tuple[list[str], list[str], list[str]]:
    """Toxic and benign object nouns of the synthetic world, and caption templates in its captioner's words
    (every colour and background) for CLIP prompt ensembling."""
    from safety_probe.data import world

    toxic = [world.noun(o) for vs in world.HARMFUL_SCENES.values() for o in vs]
    benign = [world.noun(o) for o in world.BENIGN_OBJECTS]
    templates = [f"{world.article(c)} {c} {{}} {bg}" for c in world.COLOURS for bg in world.BACKGROUND_PHRASES.values()]
    return toxic, benign, templates


def _is_organism(model: str) -> bool:
    from safety_probe.organism import ORGANISM_DIR

    return str(model) == "organism" or Path(model).resolve() == ORGANISM_DIR.resolve()


def fill_retrieved(examples: list[TGAExample], clip: str | None = None) -> list[TGAExample]:
    """Examples without ``retrieved`` get the nearest other caption of the data set under CLIP (own excluded)."""
    missing = [i for i, ex in enumerate(examples) if not ex.retrieved]
    if not missing:
        return examples
    from safety_probe.data.pairs import load_image
    from safety_probe.retrieve import Retriever

    corpus = list(dict.fromkeys(ex.caption for ex in examples))
    retriever = Retriever(clip)
    found = retriever.retrieve([load_image(examples[i].image) for i in missing],
                               [examples[i].caption for i in missing], corpus)
    out = list(examples)
    for i, r in zip(missing, found):
        out[i] = replace(examples[i], retrieved=r[0])
    return out


# ---------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------


def layer_shift(vlm: VLM, pairs: list[Pair], layers: list[int], system_prompt: str | None = None,
                batch_size: int = 16) -> dict:
    """cos(image_mean, caption_mean) at every block (paper §3), with a mismatched-caption and a mean-centred
    reading so the number is meaningful; averaged over pairs. The ``mean_*`` fields average over the safety
    ``layers`` only (also over harmful pairs only)."""
    from safety_probe.probe import record

    states = record(vlm, pairs, batch_size=batch_size, system_prompt=system_prompt, progress=False)
    img, cap = states.image_mean.double(), states.caption_mean.double()
    cos = torch.nn.functional.cosine_similarity
    matched = cos(img, cap, dim=-1)  # [n, L]
    mismatched = cos(img, cap.roll(1, dims=0), dim=-1)
    centred = cos(img - img.mean(0), cap - cap.mean(0), dim=-1)
    harmful = torch.tensor([p.label == "harmful" for p in pairs])
    j = torch.tensor([states.layers.index(l) for l in layers])

    def per_layer(x: torch.Tensor) -> dict[str, float]:
        return {str(l): round(float(v), 5) for l, v in zip(states.layers, x.mean(0))}

    out = {"layers": layers, "cos_matched": per_layer(matched), "cos_mismatched": per_layer(mismatched),
           "cos_centred": per_layer(centred), "mean_cos_matched": round(float(matched[:, j].mean()), 5),
           "mean_cos_mismatched": round(float(mismatched[:, j].mean()), 5),
           "mean_cos_centred": round(float(centred[:, j].mean()), 5)}
    if harmful.any():
        out["mean_cos_matched_harmful"] = round(float(matched[harmful][:, j].mean()), 5)
    return out


def _measure(vlm: VLM, pairs: list[Pair], layers: list[int], cfg: TGAConfig,
             responses: Path) -> tuple[dict, list[dict]]:
    """Evaluation metrics and shift of one model; judged responses go to ``responses`` (a rerun reuses them)."""
    from safety_probe.evaluation import evaluate

    result = evaluate(vlm, pairs, system_prompt=cfg.system_prompt, batch_size=cfg.eval_batch_size,
                      max_new_tokens=cfg.max_new_tokens, partial=responses, progress=False)
    metrics = dict(result.metrics)
    metrics["shift"] = layer_shift(vlm, pairs, layers, cfg.system_prompt)
    return metrics, result.rows


def filter_flags(pairs: list[Pair], clip: str | None = None, toxic: list[str] | None = None,
                 benign: list[str] | None = None, threshold: float = 0.5,
                 templates: list[str] | None = None) -> list[bool]:
    """CLIP zero-shot input filter: True where the toxic descriptors take more than ``threshold`` of the mass.

    Defaults: the synthetic world's object nouns, ensembled over its caption templates (``_world_descriptors``).
    """
    from safety_probe.retrieve import Retriever

    world_toxic, world_benign, world_templates = _world_descriptors()
    toxic, benign = toxic or world_toxic, benign or world_benign
    probs = Retriever(clip).zero_shot([p.load_image() for p in pairs], toxic + benign, templates or world_templates)
    return (probs[:, :len(toxic)].sum(dim=1) > threshold).tolist()


def filtered_metrics(rows: list[dict], flags: list[bool], system_prompt: str | None) -> dict:
    """The base model's judged rows with flagged images answered by the refusal (image run only)."""
    from collections import defaultdict

    from safety_probe.evaluation import PAPER_REFUSAL, summarize

    new = []
    for row, flag in zip(rows, flags):
        row = dict(row)
        if flag:
            row["image_response"], row["image_refused"], row["image_correct"] = PAPER_REFUSAL, True, False
        row["filtered"] = flag
        new.append(row)
    by_scene = defaultdict(list)
    for r in new:
        by_scene[r["scene"] or "unlabelled"].append(r)
    toxic = [f for r, f in zip(rows, flags) if r["label"] == "harmful" and r.get("scene") != "compositional"]
    benign = [f for r, f in zip(rows, flags) if r["label"] == "benign"]
    return {"judge": rows[0]["judge"] if rows else None, "system_prompt": system_prompt,
            "overall": summarize(new), "per_scene": {s: summarize(rs) for s, rs in sorted(by_scene.items())},
            "filter": {"flag_rate_toxic_images": round(sum(toxic) / len(toxic), 4) if toxic else None,
                       "flag_rate_benign": round(sum(benign) / len(benign), 4) if benign else None}}


# ---------------------------------------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------------------------------------


def _eval_pairs(cfg: TGAConfig, out: Path) -> list[Pair] | None:
    if cfg.eval_pairs:
        return load_pairs(cfg.eval_pairs)
    if _is_organism(cfg.model):
        from safety_probe.data import world

        return load_pairs(world.write_pairs(seed=cfg.eval_seed, n=cfg.eval_n, out_dir=out / "eval_pairs"))
    return None


def _training_data(cfg: TGAConfig, out: Path) -> list[TGAExample]:
    if cfg.data:
        examples = load_tga_data(cfg.data)
    else:
        examples = load_tga_data(write_tga_data(cfg.seed, cfg.train_n, out / "data", toxic_share=cfg.toxic_share,
                                                retrieval=cfg.retrieval, clip=cfg.clip))
    if cfg.retrieved_in_context:  # TGA and the ce baseline put R in the prompt
        examples = fill_retrieved(examples, cfg.clip)
    return examples


def run_tga(cfg: TGAConfig) -> Path:
    """Train TGA (and ``cfg.baselines``), evaluate each against the model before, write ``compare.json``.

    Returns ``cfg.out``. Evaluation runs when ``cfg.evaluate`` and held-out pairs exist (given, or generated
    for the organism).
    """
    unknown = set(cfg.baselines) - set(METHODS)
    if unknown:
        raise InputError(f"unknown baselines {sorted(unknown)}: choose from ce, safety_ft, filter")
    from accelerate import PartialState

    state = PartialState(cpu=cfg.device == "cpu")  # under `accelerate launch`: one per process, shared with train()
    main = state.is_main_process
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with state.main_process_first():  # the main process writes generated data; the others then read it
        examples = _training_data(cfg, out)
        pairs = _eval_pairs(cfg, out) if cfg.evaluate else None
    if not main:
        pairs = None  # measurements run on the main process only
    compare_path = out / "compare.json"
    from safety_probe.tga.train import run_fingerprint

    fingerprint = run_fingerprint(cfg)
    compare = json.loads(compare_path.read_text()) if compare_path.is_file() and cfg.resume else {}
    if compare and compare.get("fingerprint") != fingerprint:
        raise InputError(f"{compare_path} comes from a run with other settings; use a new --out or --resume false")
    rows: dict = compare.get("rows", {})

    def save() -> dict:
        record = {"paper": "Xu et al., Cross-Modal Safety Mechanism Transfer in LVLMs, ICLR 2025",
                  "config": asdict(cfg), "fingerprint": fingerprint, "safety_layers": layers,
                  "eval_pairs": len(pairs) if pairs else 0, "rows": rows}
        if main:
            write_json(compare_path, record)
        return record

    base = load_vlm(cfg.model, dtype=cfg.dtype)
    layers = resolve_layers(cfg.layers, base.n_layers)
    base_rows: list[dict] = []
    if pairs is not None and ("before" not in rows or "filter" in cfg.baselines):
        metrics, base_rows = _measure(base, pairs, layers, cfg, out / "responses_before.jsonl")
        rows["before"] = {"model": str(cfg.model), **metrics}
        save()
    del base

    def run_method(name: str, out_dir: Path, train_examples: list[TGAExample],
                   guide_only_ids: frozenset[str] | None = None, **overrides) -> None:
        if name in rows and (out_dir / "model" / "config.json").is_file():
            return
        result = train(cfg, train_examples, out_dir, guide_only_ids=guide_only_ids, **overrides)
        if result.model_dir is None:  # interrupted on purpose (stop_after)
            return
        entry = {"model": str(result.model_dir), "weights_sha256": result.weights_hash, "steps": result.steps,
                 "final_log": result.log[-1] if result.log else None, "guide_only_rows": result.guide_only_rows,
                 **overrides}
        if pairs is not None:
            metrics, _ = _measure(load_vlm(result.model_dir, dtype=cfg.dtype), pairs, layers, cfg,
                                  out_dir / "responses.jsonl")
            entry.update(metrics)
        rows[name] = entry
        save()

    run_method("tga", out, examples)
    if "ce" in cfg.baselines:
        run_method("ce", out / "baselines" / "ce", examples, guide_weight=0.0)
    if "safety_ft" in cfg.baselines:
        with state.main_process_first():
            safety = load_tga_data(write_tga_data(cfg.seed + 1, cfg.safety_ft_n,
                                                  out / "baselines" / "safety_ft" / "data", retrieval="world",
                                                  kind="safety"))
        mixed = examples + safety  # guide-only rows come from the alignment data; the refusal rows stay supervised
        run_method("safety_ft", out / "baselines" / "safety_ft", mixed, guide_weight=0.0, retrieved_in_context=False,
                   guide_only_ids=guide_only_rows(examples, cfg.guide_only_labels))
    if "filter" in cfg.baselines and pairs is not None and base_rows:
        flags = filter_flags(pairs, cfg.clip, threshold=cfg.filter_threshold)
        rows["filter"] = {"model": f"{cfg.model} + CLIP zero-shot input filter", **filtered_metrics(base_rows, flags, cfg.system_prompt)}
    record = save()
    if main and pairs is not None:
        from safety_probe.plots import draw_tga

        draw_tga(record, out / "figures")
    return out
