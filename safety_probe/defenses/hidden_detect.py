"""HiddenDetect: flag an input from the refusal evidence the logit lens reads in the safety layers, before any
token is generated, and answer a flagged input with the model's refusal sentence.

Jiang, Gao, Zhu, Zhang, Yu, *HiddenDetect: Detecting Jailbreak Attacks against Large Vision-Language Models via
Monitoring Hidden States*, ACL 2025 (arXiv 2502.14744). The score of an input is a mean over the chosen (safety)
layers l of the refusal evidence in the logit lens of block l's output at the last prompt token:

* ``cosine`` (the paper's): cos(W_U·norm(h_l), 1_K), with the refusal vector 1_K, the indicator of the refusal
  tokens K over the vocabulary;
* ``logprob``: log of the lens probability of K (what probe-layers reads as P(refusal)).

K is drawn from the model's own refusals of the calibration split's harmful text runs (their first tokens), or from
the refusal word list when it refuses none. Each run (image, text) has its threshold, the largest that flags at most
``max_fpr`` of the calibration split's benign pairs; the test pairs never set it. The paper integrates the score
over its most safety-aware layers; here those are the located safety layers.

The score is read by hooks during the prefill of the ordinary generation pass, so a defended answer costs one pass;
flagged rows are answered by the refusal.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from safety_probe.analysis.scores import auroc_with_interval, share_with_interval
from safety_probe.core.errors import InputError
from safety_probe.data.pairs import Pair
from safety_probe.data.prompts import PromptSettings
from safety_probe.defenses.base import Defense, DefenseOptions, DefenseState, calibration_states, split_labels
from safety_probe.models.generate import generate_encoded
from safety_probe.models.hooks import Trace
from safety_probe.models.vlm import VLM, Run
from safety_probe.probe.refusal import (
    RefusalTokens,
    choose_refusal_tokens,
    fallback_refusal_tokens,
    refusal_logprob,
    text_run_responses,
    token_names,
    token_texts,
)

MODES = ("cosine", "logprob")
RUNS: tuple[Run, ...] = ("image", "text")


@torch.no_grad()
def refusal_vector(vlm: VLM, ids: list[int]) -> torch.Tensor:
    """``[vocab]`` float: 1 at the refusal tokens ``ids``, 0 elsewhere (HiddenDetect's refusal vector)."""
    vocab = vlm.logit_lens(torch.zeros(1, vlm.d_model, device=vlm.device)).shape[-1]
    vector = torch.zeros(vocab)
    vector[ids] = 1.0
    return vector


@torch.no_grad()
def lens_scores(vlm: VLM, last: torch.Tensor, vector: torch.Tensor, mode: str) -> torch.Tensor:
    """``[n]`` scores of last-prompt-token states ``[n, L, d]``, averaged over L: cos(logit lens, refusal vector)
    (``cosine``) or the lens log-probability of the refusal tokens (``logprob``)."""
    logits = vlm.logit_lens(last.to(vlm.device))  # [n, L, vocab]
    vector = vector.to(logits.device)
    if mode == "cosine":
        per_layer = torch.nn.functional.cosine_similarity(logits, vector, dim=-1)
    else:
        per_layer = refusal_logprob(torch.log_softmax(logits, dim=-1), vector.nonzero().flatten().tolist())
    return per_layer.mean(-1).cpu()


def fpr_threshold(benign: np.ndarray, max_fpr: float) -> float:
    """The smallest benign score s such that flagging scores > s flags at most ``max_fpr`` of ``benign``."""
    ordered = np.sort(np.asarray(benign, dtype=np.float64))
    return float(ordered[math.ceil((1.0 - max_fpr) * len(ordered)) - 1])


class HiddenDetect(Defense):
    """Scores both runs in the generation pass and answers the refusal where the score exceeds the run's threshold.

    State: ``refusal_vector`` ``[vocab]``; settings ``mode``, ``thresholds`` (run → float), ``refusal_phrase``,
    ``tokens`` (K).
    """

    def __init__(self, state: DefenseState):
        super().__init__(state)
        self.mode: str = state.settings["mode"]
        self.vector = state.tensors["refusal_vector"]
        self.thresholds: dict[str, float] = state.settings["thresholds"]
        self.refusal: str = state.settings["refusal_phrase"]

    def __call__(self, vlm: VLM, pairs: list[Pair], run: Run, prompts: PromptSettings,
                 max_new_tokens: int) -> list[tuple[str, dict]]:
        batch = vlm.encode(pairs, run, prompts, padding_side="left")
        rows = torch.arange(len(pairs), device=batch.last_index.device)
        prompt_len = batch.inputs["input_ids"].shape[1]
        last: dict[int, torch.Tensor] = {}

        def read(layer: int, hidden: torch.Tensor) -> None:
            if hidden.shape[1] == prompt_len:  # the prefill: later forwards are the generated tokens
                last[layer] = hidden[rows, batch.last_index].detach()

        with Trace(vlm.layers, self.layers, retain=False, edit_output=read):
            answers = generate_encoded(vlm, batch, max_new_tokens)
        scores = lens_scores(vlm, torch.stack([last[l] for l in self.layers], dim=1), self.vector, self.mode).tolist()
        threshold = self.thresholds[run]
        return [(self.refusal if s > threshold else text, {"score": round(s, 6), "flagged": s > threshold})
                for (text, _), s in zip(answers, scores)]

    def report(self, rows: list[dict]) -> dict:
        """Per run: AUROC of the score, harmful against benign test pairs, with its 95% bootstrap interval; the
        flag rates of harmful and benign pairs (Wilson intervals)."""
        out: dict = {"auroc": {}, "flag_rate": {}}
        for run in RUNS:
            by_label = {label: [r[f"{run}_defense"] for r in rows if r["label"] == label] for label in ("harmful", "benign")}
            out["auroc"][run] = auroc_with_interval(np.array([d["score"] for d in by_label["harmful"]]),
                                                    np.array([d["score"] for d in by_label["benign"]]))
            out["flag_rate"][run] = {label: share_with_interval(sum(d["flagged"] for d in ds), len(ds))
                                     for label, ds in by_label.items()}
        return out


def refusal_tokens(vlm: VLM, pairs: list[Pair], harmful: list[int], options: DefenseOptions) -> RefusalTokens:
    """K from the model's own refusals of the calibration split's harmful text runs, else the fallback word list."""
    responses = text_run_responses(vlm, pairs, harmful, options.prompts, options.phrases(), options.batch_size)
    ids = {t for row in responses.token_ids for t in row[:1]}
    k, _ = choose_refusal_tokens(responses, [True] * len(harmful), fallback_refusal_tokens(vlm.tokenizer,
                                 options.phrases()), token_names(vlm.tokenizer, ids), token_texts(vlm.tokenizer, ids))
    return k


def calibrate(vlm: VLM, pairs: list[Pair], layers: list[int], mode: str, options: DefenseOptions) -> HiddenDetect:
    """K, the refusal vector and each run's threshold from the calibration pairs alone."""
    harmful, benign = split_labels(pairs, "hidden_detect")
    tokens = refusal_tokens(vlm, pairs, harmful, options)
    if not tokens.ids:
        raise InputError(f"{vlm.name}: no refusal tokens found (the model refused no calibration text run and the "
                         "word list has no whole-word token); give --refusal-phrase in the model's own words")
    vector = refusal_vector(vlm, sorted(tokens.ids))
    states = calibration_states(vlm, pairs, layers, options)
    thresholds, calibration = {}, {}
    for run, last in (("image", states.image_last), ("text", states.caption_last)):
        scores = lens_scores(vlm, last, vector, mode).numpy()
        thresholds[run] = fpr_threshold(scores[benign], options.max_fpr)
        calibration[run] = {"auroc": auroc_with_interval(scores[harmful], scores[benign]),
                            "flag_rate_harmful": round(float((scores[harmful] > thresholds[run]).mean()), 4),
                            "flag_rate_benign": round(float((scores[benign] > thresholds[run]).mean()), 4)}
    settings = {"mode": mode, "thresholds": thresholds, "max_fpr": options.max_fpr,
                "refusal_phrase": options.refusal_phrase, "tokens": tokens.summary(), "calibration": calibration,
                "n_harmful": len(harmful), "n_benign": len(benign)}
    return HiddenDetect(DefenseState(f"hidden_detect:{mode}", layers, {"refusal_vector": vector}, settings))


DEFENSE = HiddenDetect
