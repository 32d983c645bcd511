"""The before/after run: TGA and its baselines trained, evaluated and compared on the same held-out pairs.

    >>> from safety_probe.compare import CompareConfig, run_compare
    >>> cfg = CompareConfig.of(data="tga.json", eval_pairs="heldout.jsonl", layers="runs/llava/layers.json",
    ...                        stage=1, baselines=["ce"])     # or CompareConfig(TGAConfig(TGAMethod(...)), data=...)
    >>> result = run_compare("runs/llava-base", cfg)         # load=partial(load_vlm, device="cuda", dtype="bfloat16")
    >>> result.rows["tga"]["overall"]["image_dsr"], result.rows["before"]["overall"]["image_dsr"]

:class:`CompareConfig` holds the TGA run's :class:`~safety_probe.tga.config.TGAConfig` (``cfg.tga``) beside its own
evaluation, baseline and defense options. Writes ``out/model`` (the TGA-aligned model, a Hugging Face folder
``load_vlm`` reads), ``out/compare.json`` (rows: method → metrics, each with the semantic shift at every block,
measured by :mod:`safety_probe.analysis.shift` exactly as ``probe-layers`` measures it), ``out/responses*.jsonl``
(judged responses), ``out/baselines/<name>/model`` and, for the inference-time defenses (``defenses``,
:mod:`safety_probe.defenses`, rows with their cost instead of a shift), ``out/defenses/<name>/state`` and
``responses.jsonl``. Everything it needs comes in through the config: the training data, the held-out pairs, the
CLIP and the filter's vocabulary; nothing has a built-in default. compare.json carries the run's key
(:func:`~safety_probe.core.resume.run_key`): a rerun with the same settings keeps its finished rows, one with other
settings starts afresh and says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from safety_probe.analysis.shift import semantic_shift
from safety_probe.compare.result import CompareResult
from safety_probe.core.checks import check_number, option_name
from safety_probe.core.errors import InputError
from safety_probe.core.files import check_input_path, check_out_dir, read_json, write_json, write_jsonl
from safety_probe.core.options import OptionTree
from safety_probe.core.resume import resumable, run_key
from safety_probe.data.pairs import Pair, load_pairs
from safety_probe.data.prompts import DEFAULT_PROMPTS, PromptSettings
from safety_probe.defenses import calibrate, method_name, parse_method
from safety_probe.defenses.base import DefenseOptions, check_calibration, parse_strength
from safety_probe.defenses.input_filter import filter_flags, filtered_metrics
from safety_probe.defenses.run import evaluate_defense
from safety_probe.eval.evaluate import evaluate
from safety_probe.eval.tables import benchmark_table
from safety_probe.models.clip import read_corpus
from safety_probe.models.layers import resolve_layers
from safety_probe.models.load import load_vlm
from safety_probe.models.vlm import VLM
from safety_probe.probe.record import record
from safety_probe.tga.config import TGAConfig
from safety_probe.tga.data import TGAExample, load_tga_data
from safety_probe.tga.retrieval import fill_retrieved
from safety_probe.tga.train import guide_only_rows, train

BASELINES = ("ce", "safety_ft", "filter")
PAPER = "Xu et al., Cross-Modal Safety Mechanism Transfer in LVLMs, ICLR 2025"

ModelLoader = Callable[[str], VLM]
"""Loads a model by name or folder (the model before alignment, and each trained model's folder) for training and
evaluation: :func:`~safety_probe.models.load.load_vlm` by default; the command loads by its model options."""


@dataclass
class CompareConfig(OptionTree):
    """TGA (paper §4) and its baselines, trained and compared on the same held-out pairs (compare.json)."""

    tga: TGAConfig = field(default_factory=TGAConfig)

    data: str | None = None
    """Training data: LLaVA conversation JSON with ``image_caption`` (and ``retrieved_caption``); see docs/tga.md."""

    out: str = "runs/tga"
    """Output folder: model/, compare.json, checkpoints/, baselines/."""

    eval_pairs: str | None = None
    """Held-out pairs.jsonl for the before/after comparison; without it evaluation is skipped."""

    clip: str | None = None
    """CLIP folder (a transformers CLIPModel): retrieves R for rows without ``retrieved_caption`` and runs the
    input-filter baseline."""

    corpus: str | None = None
    """Retrieval corpus for R: a text file, one text a line. Default: the training data's own captions."""

    baselines: list[str] = field(default_factory=list)
    """Baselines trained and evaluated beside TGA: ce (same alignment, no guide loss), safety_ft (alignment data
    plus refused toxic images, VLGuard-style; needs --safety-ft-data), filter (CLIP zero-shot input filter on the
    image; needs --clip, --filter-toxic, --filter-benign). Empty: none."""

    safety_ft_data: str | None = None
    """TGA-format JSON of toxic images answered by a refusal: the extra data of the safety_ft baseline."""

    filter_toxic: list[str] = field(default_factory=list)
    """Input filter: descriptors of toxic content (e.g. "gun", "knife"), scored by CLIP zero-shot."""

    filter_benign: list[str] = field(default_factory=list)
    """Input filter: descriptors of benign content, the alternatives the toxic ones compete with."""

    filter_templates: list[str] = field(default_factory=lambda: ["a photo of {}"])
    """Input filter: prompt templates ({} = descriptor) whose embeddings are averaged (CLIP's prompt ensembling)."""

    filter_threshold: float = 0.5
    """Input filter: refuse when the summed zero-shot probability of the toxic descriptors exceeds this."""

    eval_batch_size: int = 32
    """Batch size of generation in evaluation."""

    max_new_tokens: int = 24
    """Generated tokens per response in evaluation."""

    evaluate: bool = True
    """Evaluate before/after on --eval-pairs and record the shift (compare.json)."""

    defenses: list[str] = field(default_factory=list)
    """Inference-time defenses of the model before alignment, evaluated as rows beside TGA on --eval-pairs, each with
    its inference cost: refusal_steering[:add|ablate], shift_correction[:cmrm|shiftdc], hidden_detect[:cosine|logprob],
    self_check (docs/defenses.md); they are calibrated on --defense-calibration at the safety layers. Empty: none."""

    defense_calibration: str | None = None
    """Calibration pairs.jsonl of the defenses (labelled harmful/benign), distinct from --eval-pairs."""

    defense_strength: str = "auto"
    """Strength of refusal_steering and shift_correction: a number > 0, or auto (chosen on --defense-calibration)."""

    defense_caption_prompt: str | None = None
    """self_check's caption prompt (default: ECSO's query-aware one, docs/defenses.md)."""

    def validate(self, generated: bool = False) -> None:
        """Every option checked before any work: one-line InputError naming the option and what it allows.
        ``generated``: the training data, held-out pairs and safety_ft data are made by the caller (the organism)."""
        self.tga.validate()
        check_number(self, "filter_threshold", 0.0, 1.0)
        check_number(self, "eval_batch_size", 1)
        check_number(self, "max_new_tokens", 1)
        if not self.data and not generated:
            raise InputError("--data is required: a TGA data file (LLaVA conversation JSON with image_caption; docs/tga.md)")
        baselines = self.chosen_baselines()
        unknown = sorted(set(baselines) - set(BASELINES))
        if unknown:
            raise InputError(f"unknown --baselines {unknown}: choose from {', '.join(BASELINES)}")
        if "safety_ft" in baselines and not self.safety_ft_data and not generated:
            raise InputError("--baselines safety_ft needs --safety-ft-data (TGA-format JSON of refused toxic images)")
        if "filter" in baselines:
            if not self.clip:
                raise InputError("--baselines filter needs --clip (a CLIPModel folder)")
            if not self.filter_toxic or not self.filter_benign:
                raise InputError("--baselines filter needs --filter-toxic and --filter-benign (descriptor words)")
        check_out_dir(self.out)
        for name in ("data", "eval_pairs", "safety_ft_data", "corpus"):
            if getattr(self, name):
                check_input_path(getattr(self, name), f"{option_name(name)} file")
        if self.clip:
            check_input_path(self.clip, "--clip folder", folder=True)
        for spec in defense_specs(self):
            parse_method(spec)
        if defense_specs(self):
            if not generated or self.defense_calibration:
                check_calibration(self.defense_calibration, self.eval_pairs, "--defense-calibration")
            parse_strength(self.defense_strength)

    def chosen_baselines(self) -> list[str]:
        """The baselines named by ``--baselines`` (blank entries dropped)."""
        return [b for b in self.baselines if b.strip()]

    def key_settings(self) -> dict:
        """Every setting that changes compare.json's rows (for its run key): the TGA run's and the evaluation's.
        Adding a baseline or a defense keeps what was done."""
        own = {k: v for k, v in asdict(self).items() if k not in ("tga", "out", "baselines", "defenses")}
        return {"tga": self.tga.key_settings(), **own}


def _file_digest(path: str | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else None


def defense_specs(cfg: CompareConfig) -> list[str]:
    """The canonical names of the defenses asked for (blank entries dropped)."""
    return list(dict.fromkeys(method_name(d) for d in cfg.defenses if d.strip()))


def layer_shift(vlm: VLM, pairs: list[Pair], layers: list[int], prompts: PromptSettings = DEFAULT_PROMPTS,
                batch_size: int = 16) -> dict:
    """The semantic shift of :func:`safety_probe.analysis.shift.semantic_shift` at every block (all pairs), and its
    means over the safety ``layers`` (``mean_*``; ``mean_cos_matched_harmful`` over harmful pairs only)."""
    states = record(vlm, pairs, prompts=prompts, batch_size=batch_size, progress=False)
    tensors = {"image_mean": states.image_mean, "caption_mean": states.caption_mean}
    scores = semantic_shift(tensors, layers=states.layers, n_perm=0).scores  # compare.json keeps no CKA
    j = [states.layers.index(l) for l in layers]
    out: dict = {"layers": layers}
    for name in ("cos_matched", "cos_mismatched", "cos_centred"):
        if name not in scores:  # one evaluation pair has no mismatched or centred baseline
            continue
        s = scores[name]
        out[name] = {str(l): round(float(v), 5) for l, v in zip(s.layers, s.mean)}
        out[f"mean_{name}"] = round(float(s.per_pair[:, j].mean()), 5)
    harmful = [i for i, p in enumerate(pairs) if p.label == "harmful"]
    if harmful:
        out["mean_cos_matched_harmful"] = round(float(scores["cos_matched"].per_pair[harmful][:, j].mean()), 5)
    return out


def _partial(responses: Path) -> Path:
    """Where the judged batches of ``responses`` are kept until the run ends (a rerun resumes after them)."""
    return responses.with_name(f".{responses.stem}.partial.safetensors")


def _metrics(vlm: VLM, pairs: list[Pair], layers: list[int], cfg: CompareConfig,
             responses: Path) -> tuple[dict, list[dict]]:
    """Evaluation metrics and shift of one model; its judged responses are written to ``responses``."""
    prompts = cfg.tga.prompts
    result = evaluate(vlm, pairs, prompts=prompts, batch_size=cfg.eval_batch_size,
                      max_new_tokens=cfg.max_new_tokens, partial=_partial(responses), progress=False)
    write_jsonl(responses, result.rows)
    metrics = {**result.metrics, "benchmarks": benchmark_table(result.rows)}
    metrics["shift"] = layer_shift(vlm, pairs, layers, prompts)
    return metrics, result.rows


def defense_rows(cfg: CompareConfig, model: str, load: ModelLoader, pairs: list[Pair], layers: list[int], rows: dict,
                 save: Callable[[], dict], out: Path) -> None:
    """Calibrate each defense of ``cfg`` on ``model`` before alignment and add its row (metrics, cost, state)."""
    specs = [s for s in defense_specs(cfg) if s not in rows]
    if not specs:
        return
    vlm = load(model)
    calibration = load_pairs(cfg.defense_calibration)
    prompt = {"caption_prompt": cfg.defense_caption_prompt} if cfg.defense_caption_prompt else {}
    options = DefenseOptions(strength=cfg.defense_strength, prompts=cfg.tga.prompts,
                             batch_size=cfg.eval_batch_size, max_new_tokens=cfg.max_new_tokens, **prompt)
    for spec in specs:
        folder = out / "defenses" / spec.replace(":", "-")
        defense = calibrate(spec, vlm, calibration, layers, options)
        defense.state().save(folder / "state", calibration=str(cfg.defense_calibration))
        result = evaluate_defense(vlm, pairs, defense, options)
        write_jsonl(folder / "responses.jsonl", result.rows)
        rows[spec] = {"model": f"{model} + {spec}", "state": str(folder / "state"), **result.metrics,
                      "benchmarks": benchmark_table(result.rows)}
        save()


def run_compare(model: str, cfg: CompareConfig, load: ModelLoader = load_vlm,
                note: str | None = None) -> CompareResult:
    """Train TGA (and the baselines) on ``model`` (a name or folder), evaluate each against the model before, write
    ``compare.json`` (after every row, so a rerun resumes) and return it as a :class:`CompareResult`.

    ``load`` loads ``model`` and each trained model's folder (training takes the model where ``load`` puts it; under
    ``accelerate launch`` each process's own device). Evaluation runs when ``cfg.evaluate`` and ``cfg.eval_pairs``
    is given; otherwise only the models are trained and compare.json says why. ``note`` is recorded in compare.json
    (e.g. the preset applied).
    """
    cfg.validate()
    baselines = cfg.chosen_baselines()
    tga = cfg.tga
    out = Path(cfg.out)
    if tga.run.threads:
        torch.set_num_threads(tga.run.threads)
    examples = load_tga_data(cfg.data)  # every input is read and checked before the model loads
    safety = load_tga_data(cfg.safety_ft_data) if "safety_ft" in baselines else []
    pairs = load_pairs(cfg.eval_pairs) if cfg.evaluate and cfg.eval_pairs else None
    base = load(model)
    from accelerate import PartialState

    state = PartialState(cpu=base.device.type == "cpu")  # under `accelerate launch`: one per process, shared with train()
    main = state.is_main_process
    layers = resolve_layers(tga.method.layers, base.n_layers)
    notes = [note] if note else []
    if tga.method.retrieved_in_context:  # TGA and the ce baseline put R in the prompt
        examples = fill_retrieved(examples, cfg.clip, read_corpus(cfg.corpus) if cfg.corpus else None)
    if pairs is None:
        why = "--evaluate false" if not cfg.evaluate else "no --eval-pairs given"
        notes.append(f"evaluation skipped: {why} (the before/after comparison needs held-out pairs)")
        state.print(f"[tga] {notes[-1]}")
        if "filter" in baselines:
            notes.append("filter baseline skipped: it is an evaluation of the base model")
            baselines.remove("filter")
        if defense_specs(cfg):
            notes.append("defenses skipped: they are evaluations of the base model")
    out.mkdir(parents=True, exist_ok=True)
    if not main:
        pairs = None  # measurements run on the main process only
    compare_path = out / "compare.json"
    base_settings = base.run_settings()
    key = run_key(cfg.key_settings(), base_settings, layers, _file_digest(cfg.data),
                  _file_digest(cfg.eval_pairs), _file_digest(cfg.safety_ft_data))
    compare = read_json(compare_path, "compare.json") if compare_path.is_file() and tga.run.resume else {}
    if compare and not resumable(compare_path, compare.get("run_key") if isinstance(compare, dict) else None, key,
                                 "compare record"):
        compare = {}
    rows: dict = compare.get("rows", {})

    def save() -> dict:
        record = {"paper": PAPER, "model": base_settings, "config": asdict(cfg), "run_key": key,
                  "safety_layers": layers, "eval_pairs": len(pairs) if pairs else 0, "notes": notes, "rows": rows}
        if main:
            write_json(compare_path, record)
        return record

    base_rows: list[dict] = []
    if pairs is not None and ("before" not in rows or ("filter" in baselines and "filter" not in rows)):
        metrics, base_rows = _metrics(base, pairs, layers, cfg, out / "responses_before.jsonl")
        rows["before"] = {"model": str(model), **metrics}
        save()
    del base

    def run_method(name: str, out_dir: Path, train_examples: list[TGAExample],
                   guide_only_ids: frozenset[str] | None = None, **overrides) -> None:
        if name in rows and (out_dir / "model" / "config.json").is_file():
            return
        result = train(load(model), tga.replace(**overrides), train_examples, out_dir, guide_only_ids)
        if result.model_dir is None:  # interrupted on purpose (stop_after)
            return
        entry = {"model": str(result.model_dir), "weights_sha256": result.weights_hash, "steps": result.steps,
                 "final_log": result.log[-1] if result.log else None, "guide_only_rows": result.guide_only_rows,
                 "rows": result.rows, **overrides}
        if pairs is not None:
            metrics, _ = _metrics(load(str(result.model_dir)), pairs, layers, cfg, out_dir / "responses.jsonl")
            entry.update(metrics)
        rows[name] = entry
        save()

    run_method("tga", out, examples)
    if "ce" in baselines:
        run_method("ce", out / "baselines" / "ce", examples, guide_weight=0.0)
    if "safety_ft" in baselines:
        mixed = examples + safety  # guide-only rows come from the alignment data; the refusal rows stay supervised
        run_method("safety_ft", out / "baselines" / "safety_ft", mixed, guide_weight=0.0, retrieved_in_context=False,
                   guide_only_ids=guide_only_rows(examples, tga.method.guide_only_labels))
    if "filter" in baselines and pairs is not None and base_rows:
        flags = filter_flags(pairs, cfg.clip, cfg.filter_toxic, cfg.filter_benign, cfg.filter_templates,
                             cfg.filter_threshold)
        rows["filter"] = {"model": f"{model} + CLIP zero-shot input filter",
                          **filtered_metrics(base_rows, flags, tga.prompts)}
    if pairs is not None:
        defense_rows(cfg, model, load, pairs, layers, rows, save, out)
    result = CompareResult(save())
    if main:  # the judged batches are kept to the end: a rerun after a kill anywhere generates nothing again
        for responses in (out / "responses_before.jsonl", out / "responses.jsonl",
                          *(out / "baselines" / name / "responses.jsonl" for name in ("ce", "safety_ft"))):
            _partial(responses).unlink(missing_ok=True)
    return result
