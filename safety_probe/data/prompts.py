"""How the two runs of a pair are prompted: chat messages, the text run's template, and the one carrier of prompt
settings (:class:`PromptSettings`) that encoding, recording, evaluation and training take."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from safety_probe.core.checks import check_choice
from safety_probe.core.errors import InputError

DEFAULT_INSTRUCTION = "Describe this image."

REFUSAL = "Sorry, I cannot help you."
"""The refusal the paper's system prompt asks for (Xu et al. 2025, §1): a model's own refusal phrase by default."""


TEXT_TEMPLATES = ("caption", "scene")
"""Text-run templates. ``caption``: "{caption}\n{instruction}". ``scene`` (the released code's kind): the caption
stated as the scene, "{instruction}\nScene: {caption}", so an instruction about "this image" reads as a request
about the described scene rather than about a missing picture."""


def check_text_template(template: str) -> str:
    """``template`` if it is one of :data:`TEXT_TEMPLATES`, else InputError naming the choices."""
    if template not in TEXT_TEMPLATES:
        raise InputError(f"unknown text template {template!r}: choose one of {', '.join(TEXT_TEMPLATES)}")
    return template


TEXT_RUNS = ("caption", "query")
"""What the text run sends in place of the image. ``caption``: the caption and the instruction, in the text template
(the paper's run). ``query``: the pair's ``text_query``, the benchmark's own text-only version of image +
instruction, as the whole user text; probing then pools the query's tokens where it pools the caption's."""


TEXT_SPANS = {"caption": "caption tokens", "query": "text_query tokens"}
"""Per text run, the tokens its pooled state (``caption_mean``, attention mass, patching source) is read over."""


def _with_system(user: dict, system_prompt: str | None) -> list[dict]:
    if not system_prompt:
        return [user]
    return [{"role": "system", "content": [{"type": "text", "text": system_prompt}]}, user]


def image_messages(instruction: str, system_prompt: str | None = None) -> list[dict]:
    """One user turn with content [image, instruction] (the vision run)."""
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}
    return _with_system(user, system_prompt)


def text_prompt_body(caption: str, instruction: str, template: str = "caption") -> str:
    """The user text of the text run (see :data:`TEXT_TEMPLATES`): the caption in place of the image."""
    if check_text_template(template) == "scene":
        return f"{instruction}\nScene: {caption}"
    return f"{caption}\n{instruction}"


def user_text_messages(text: str, system_prompt: str | None = None) -> list[dict]:
    """One user turn with text content only."""
    return _with_system({"role": "user", "content": [{"type": "text", "text": text}]}, system_prompt)


def text_messages(caption: str, instruction: str, system_prompt: str | None = None,
                  template: str = "caption") -> list[dict]:
    """One user turn whose only content is :func:`text_prompt_body` (the text run)."""
    return user_text_messages(text_prompt_body(caption, instruction, template), system_prompt)


PADDING_SIDES = ("left", "right")


@dataclass(frozen=True)
class PromptSettings:
    """How both runs of a pair are prompted: given whole to encoding, recording, evaluation and training (a result
    depends only on what its function was given) and recorded with every result.

        >>> prompts = PromptSettings(system_prompt=None, text_template="caption", text_run="caption")
        >>> batch = vlm.encode(pairs, "text", prompts)
    """

    system_prompt: str | None = None
    """System prompt put before both runs' prompts (default: none, i.e. the chat template's own default if it has
    one)."""
    text_template: str = "caption"
    """Text run: caption ("{caption}\\n{instruction}") or scene ("{instruction}\\nScene: {caption}", the released
    code's kind)."""
    text_run: str = "caption"
    """What the text run sends: caption (the caption in --text-template, the paper's run) or query (each pair's
    text_query, the benchmark's own text-only question, as the whole user text; its tokens are then the pooled span)."""
    padding_side: str = "left"
    """Padding side of batched prompts: left or right (pooling follows the attention mask either way; generation
    always pads left)."""

    def __post_init__(self) -> None:
        for name, choices in (("text_template", TEXT_TEMPLATES), ("text_run", TEXT_RUNS),
                              ("padding_side", PADDING_SIDES)):
            check_choice(self, name, choices)

    def settings(self) -> dict:
        """The settings as a JSON-able dict (for run keys and records)."""
        return asdict(self)


DEFAULT_PROMPTS = PromptSettings()
"""No system prompt, the caption text run in the caption template, left padding."""
