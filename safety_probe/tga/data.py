"""TGA training data: LLaVA's conversation JSON plus the paper's ``image_caption`` and ``retrieved_caption``.

One file is a JSON list of entries::

    {"id": "00017", "image": "images/00017.png",
     "conversations": [{"from": "human", "value": "<image>\\nDescribe this image."},
                       {"from": "gpt", "value": "The image shows a red cup on a table."}],
     "image_caption": "a red cup on a table",
     "retrieved_caption": "two red cups on a table"}

``image`` is relative to the file's folder (or absolute). ``retrieved_caption`` may be left out and filled in
by retrieval (:mod:`safety_probe.retrieve`). Extra fields (``label``, ``scene``, ``kind``) are kept. Only the
first human/gpt exchange is used. Every problem raises :class:`InputError` in one line naming file and entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safety_probe.data.pairs import load_image, normalise_text, string_field
from safety_probe.errors import InputError
from safety_probe.io import read_json

IMAGE_PLACEHOLDER = "<image>"
KNOWN = {"id", "image", "conversations", "image_caption", "retrieved_caption"}


@dataclass(frozen=True)
class TGAExample:
    """One training image with its instruction, target response, caption C and retrieved text R."""

    id: str
    image: Path
    instruction: str
    response: str
    caption: str
    retrieved: str | None = None
    extra: dict = field(default_factory=dict, compare=False)


def _first_exchange(conv, where: str) -> tuple[str, str]:
    if not isinstance(conv, list) or len(conv) < 2:
        raise InputError(f"{where}: 'conversations' must be a list of at least two turns (human, gpt)")
    turns = []
    for k, (turn, who) in enumerate(zip(conv[:2], ("human", "gpt"))):
        if not isinstance(turn, dict) or turn.get("from") != who or not isinstance(turn.get("value"), str):
            raise InputError(f"{where}: conversations[{k}] must be {{\"from\": \"{who}\", \"value\": <string>}}")
        turns.append(turn["value"])
    human, gpt = turns
    if human.count(IMAGE_PLACEHOLDER) != 1:
        raise InputError(f"{where}: the human turn must contain '{IMAGE_PLACEHOLDER}' exactly once")
    instruction = human.replace(IMAGE_PLACEHOLDER, "").strip()
    if not instruction:
        raise InputError(f"{where}: the human turn has no instruction besides '{IMAGE_PLACEHOLDER}'")
    if not gpt.strip():
        raise InputError(f"{where}: the gpt turn is empty")
    return instruction, gpt.strip()


def load_tga_data(path: str | Path, check_images: bool = True, require_retrieved: bool = False) -> list[TGAExample]:
    """Read and validate a TGA data file (see the module docstring)."""
    path = Path(path)
    data = read_json(path, "TGA data file")
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: expected a non-empty JSON list of entries")
    out, seen = [], set()
    for i, obj in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object")
        if "id" not in obj or not isinstance(obj["id"], (str, int)):
            raise InputError(f"{where}: missing or non-string field 'id'")
        ex_id = str(obj["id"])
        where = f"{path}: entry {i} (id {ex_id})"
        if ex_id in seen:
            raise InputError(f"{where}: duplicate id")
        seen.add(ex_id)
        image = Path(string_field(obj, "image", where))
        image = image if image.is_absolute() else (path.parent / image).resolve()
        instruction, response = _first_exchange(obj.get("conversations"), where)
        caption = string_field(obj, "image_caption", where)
        retrieved = string_field(obj, "retrieved_caption", where, required=require_retrieved)
        if retrieved is not None:
            if normalise_text(retrieved) == normalise_text(caption):
                raise InputError(f"{where}: 'retrieved_caption' equals 'image_caption' (R must be a different text)")
        if check_images:
            try:
                load_image(image)
            except InputError as e:
                raise InputError(f"{where}: {e}") from None
        out.append(TGAExample(ex_id, image, instruction, response, caption, retrieved,
                              {k: v for k, v in obj.items() if k not in KNOWN}))
    return out


def entry(ex_id: str, image: str, instruction: str, response: str, caption: str, retrieved: str | None,
          **extra) -> dict:
    """One entry in the file format."""
    out = {"id": ex_id, "image": image,
           "conversations": [{"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{instruction}"},
                             {"from": "gpt", "value": response}],
           "image_caption": caption}
    if retrieved is not None:
        out["retrieved_caption"] = retrieved
    return {**out, **extra}
