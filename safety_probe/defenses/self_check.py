"""Self-check: the model judges its own answer to an image and, when it finds it unsafe, answers again from a
caption of the image it writes itself, in text alone, where its text safety mechanism works.

After ECSO: Gou, Chen, Liu, Hong, Xu, Li, Yeung, Kwok, Zhang, *Eyes Closed, Safety On: Protecting Multimodal LLMs via
Image-to-Text Transformation*, ECCV 2024 (arXiv 2403.09572). Steps, image run only:

1. answer the image and the instruction as usual;
2. harm-aware check: the model reads (instruction, answer) in the text-only ``judge_prompt``; a reply that refuses
   (keyword judge with the model's refusal sentence) or opens with "yes" marks the answer unsafe;
3. for an unsafe answer, query-aware image-to-text: the model describes the image under ``caption_prompt``; the
   caption is the description's first sentence;
4. the final answer is the text run of (caption, instruction): the image is gone.

Nothing is fitted. Calibration records, on the calibration split, how often the check marks the answers of harmful
and of benign pairs unsafe. The text run has no image and is answered as usual.
"""

from __future__ import annotations

from dataclasses import replace

from tqdm.auto import tqdm

from safety_probe.analysis.scores import share_with_interval
from safety_probe.caption import first_sentence
from safety_probe.core.errors import InputError
from safety_probe.data.pairs import Pair
from safety_probe.data.prompts import PromptSettings
from safety_probe.defenses.base import Defense, DefenseOptions, DefenseState, no_info, settings_of
from safety_probe.models.generate import generate
from safety_probe.models.vlm import VLM, Run
from safety_probe.probe.refusal import is_refusal

MODES: tuple[str, ...] = ()


def judge_pair(pair: Pair, answer: str, template: str) -> Pair:
    """The text run that asks the model about its ``answer``: ``template`` filled in, its last line as the
    instruction and the lines above as the text in place of the image, so the default text template renders the
    filled-in prompt exactly."""
    head, _, question = template.format(instruction=pair.instruction, response=answer).rpartition("\n")
    return Pair(pair.image, caption=head, instruction=question)


class SelfCheck(Defense):
    """ECSO's answer → check → caption → text-only answer (see the module docstring).

    State: no tensors; settings ``judge_prompt``, ``caption_prompt``, ``refusal_phrase``.
    """

    def __init__(self, state: DefenseState):
        super().__init__(state)
        self.judge_prompt: str = state.settings["judge_prompt"]
        self.caption_prompt: str = state.settings["caption_prompt"]
        self.refusal: str = state.settings["refusal_phrase"]

    def unsafe(self, vlm: VLM, pairs: list[Pair], answers: list[str], prompts: PromptSettings,
               max_new_tokens: int) -> list[bool]:
        """The model's verdict on each of its ``answers``: it refuses the judge prompt, or its reply opens with "yes"."""
        checks = [judge_pair(p, a, self.judge_prompt) for p, a in zip(pairs, answers)]
        replies = generate(vlm, checks, "text", prompts, max_new_tokens)
        return [is_refusal(r, (self.refusal,)) or r.strip().lower().startswith("yes") for r in replies]

    def __call__(self, vlm: VLM, pairs: list[Pair], run: Run, prompts: PromptSettings,
                 max_new_tokens: int) -> list[tuple[str, dict]]:
        answers = generate(vlm, pairs, run, prompts, max_new_tokens)
        if run == "text":
            return no_info(answers)
        unsafe = self.unsafe(vlm, pairs, answers, prompts, max_new_tokens)
        infos = [{"unsafe": u, "first_answer": a} for u, a in zip(unsafe, answers)]
        flagged = [i for i, u in enumerate(unsafe) if u]
        if flagged:
            # The caption prompt may name the instruction ({instruction}); the organism's has no placeholder.
            asks = [replace(pairs[i], instruction=self.caption_prompt.format(instruction=pairs[i].instruction))
                    for i in flagged]
            captions = {i: first_sentence(c) for i, c in
                        zip(flagged, generate(vlm, asks, "image", prompts, max_new_tokens))}
            for i in flagged:
                infos[i]["caption"] = captions[i]
            described = [i for i in flagged if captions[i]]  # no description: nothing to answer from, answer kept
            if described:
                texts = [replace(pairs[i], caption=captions[i]) for i in described]
                for i, answer in zip(described, generate(vlm, texts, "text", prompts, max_new_tokens)):
                    answers[i] = answer
        return list(zip(answers, infos))

    def report(self, rows: list[dict]) -> dict:
        """How often the check marked the image run's answers unsafe, harmful and benign pairs apart."""
        return {"unsafe_rate": {label: share_with_interval(sum(r["image_defense"]["unsafe"] for r in rows
                                                               if r["label"] == label),
                                                           sum(r["label"] == label for r in rows))
                                for label in ("harmful", "benign")}}


def calibrate(vlm: VLM, pairs: list[Pair], layers: list[int], mode: str | None, options: DefenseOptions) -> SelfCheck:
    """Record the prompts, and the check's verdicts on the calibration split's image-run answers."""
    settings = settings_of(options, "judge_prompt", "caption_prompt", "refusal_phrase")
    try:
        probe = Pair(pairs[0].image, caption=None)
        framed = judge_pair(probe, "", options.judge_prompt).caption
        options.caption_prompt.format(instruction="")
    except (KeyError, IndexError, ValueError) as e:
        raise InputError(f"--judge-prompt / --caption-prompt: bad placeholder ({e}); use {{instruction}}, "
                         "{response}") from None
    if not framed:
        raise InputError("--judge-prompt needs text before its last line (the question), e.g. the {response}")
    defense = SelfCheck(DefenseState("self_check", layers, {}, settings))
    verdicts: list[bool] = []
    with tqdm(total=len(pairs), desc="calibrate: self-check", unit="pair") as bar:
        for i in range(0, len(pairs), options.batch_size):
            chunk = pairs[i:i + options.batch_size]
            answers = generate(vlm, chunk, "image", options.prompts, options.max_new_tokens)
            verdicts += defense.unsafe(vlm, chunk, answers, options.prompts, options.max_new_tokens)
            bar.update(len(chunk))
    settings["calibration"] = {label: share_with_interval(sum(v for v, p in zip(verdicts, pairs) if p.label == label),
                                                          sum(p.label == label for p in pairs))
                               for label in ("harmful", "benign")}
    return SelfCheck(DefenseState("self_check", layers, {}, settings))


DEFENSE = SelfCheck
