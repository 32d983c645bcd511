"""TGA training data: LLaVA's conversation JSON plus the paper's ``image_caption`` and ``retrieved_caption``.

One file is a JSON list of entries::

    {"id": "00017", "image": "images/00017.png",
     "conversations": [{"from": "human", "value": "<image>\\nDescribe this image."},
                       {"from": "gpt", "value": "The image shows a red cup on a table."}],
     "image_caption": "a red cup on a table",
     "retrieved_caption": "two red cups on a table"}

``image`` is relative to the file's folder (or absolute). As in LLaVA's mix665k, a row may hold several
human/gpt exchanges (``<image>`` in the first human turn only; every gpt turn is trained) and a row without
``image`` is text-only (answer loss only). ``image_caption`` is needed by the guide term only: an image row
without it trains on its answers alone. ``retrieved_caption`` may be left out and filled in by retrieval
(:mod:`safety_probe.models.clip`). Extra fields (``label``, ``scene``, ``kind``) are kept. Every problem raises
:class:`InputError` in one line naming file and entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safety_probe.core.errors import InputError
from safety_probe.core.files import read_json, resolve
from safety_probe.data.pairs import load_image, normalise_text, string_field

IMAGE_PLACEHOLDER = "<image>"
KNOWN = {"id", "image", "conversations", "image_caption", "retrieved_caption"}
ROW_KINDS = ("image_single_turn", "image_multi_turn", "text_only")


@dataclass(frozen=True)
class TGAExample:
    """One training row: its first exchange (instruction, response) and ``followups``; for an image row the
    image, its caption C (None: no guide term) and the retrieved text R. ``image=None``: a text-only row."""

    id: str
    image: Path | None
    instruction: str
    response: str
    caption: str | None
    retrieved: str | None = None
    extra: dict = field(default_factory=dict, compare=False)
    followups: tuple[tuple[str, str], ...] = ()
    """Later (human, gpt) exchanges of a multi-turn row."""

    @property
    def turns(self) -> tuple[tuple[str, str], ...]:
        """Every (human, gpt) exchange, the first one's human text without the image placeholder."""
        return ((self.instruction, self.response), *self.followups)

    @property
    def guided(self) -> bool:
        """Whether the row gets the guide term: an image with its caption."""
        return self.image is not None and self.caption is not None

    @property
    def kind(self) -> str:
        """One of :data:`ROW_KINDS`."""
        if self.image is None:
            return "text_only"
        return "image_multi_turn" if self.followups else "image_single_turn"


def _exchanges(conv, where: str, has_image: bool) -> list[tuple[str, str]]:
    """(human, gpt) pairs of a conversation; the image placeholder removed from the first human turn."""
    if not isinstance(conv, list) or len(conv) < 2 or len(conv) % 2:
        raise InputError(f"{where}: 'conversations' must be a list of human/gpt turns in pairs (at least two)")
    texts = []
    for k, turn in enumerate(conv):
        who = ("human", "gpt")[k % 2]
        if not isinstance(turn, dict) or turn.get("from") != who or not isinstance(turn.get("value"), str):
            raise InputError(f"{where}: conversations[{k}] must be {{\"from\": \"{who}\", \"value\": <string>}}")
        value = turn["value"]
        wanted = int(has_image and k == 0)
        if value.count(IMAGE_PLACEHOLDER) != wanted:
            place = "the first human turn must contain '{0}' exactly once" if wanted else (
                "'{0}' may appear in the first human turn only" if has_image else "a row without 'image' has no '{0}'")
            raise InputError(f"{where}: conversations[{k}]: {place.format(IMAGE_PLACEHOLDER)}")
        value = value.replace(IMAGE_PLACEHOLDER, "").strip()
        if not value:
            extra = f" besides '{IMAGE_PLACEHOLDER}'" if wanted else ""
            raise InputError(f"{where}: conversations[{k}] ({who}) is empty{extra}")
        texts.append(value)
    return list(zip(texts[::2], texts[1::2]))


def row_counts(examples: list[TGAExample]) -> dict[str, int]:
    """Rows of each kind in :data:`ROW_KINDS`, and ``guided``: the image rows with a caption (guide term)."""
    counts = {kind: sum(ex.kind == kind for ex in examples) for kind in ROW_KINDS}
    return {**counts, "guided": sum(ex.guided for ex in examples)}


def load_tga_data(path: str | Path, check_images: bool = True, require_retrieved: bool = False) -> list[TGAExample]:
    """Read and validate a TGA data file (see the module docstring); :func:`row_counts` tells its kinds of rows.

    ``require_retrieved``: every image row must carry ``retrieved_caption``.
    """
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
        has_image = "image" in obj
        turns = _exchanges(obj.get("conversations"), where, has_image)
        image = caption = retrieved = None
        if has_image:
            image = Path(string_field(obj, "image", where))
            image = image if image.is_absolute() else resolve(path.parent / image, f"{where}: image")
            caption = string_field(obj, "image_caption", where, required=False)
            retrieved = string_field(obj, "retrieved_caption", where, required=require_retrieved)
            if retrieved is not None and caption is not None and normalise_text(retrieved) == normalise_text(caption):
                raise InputError(f"{where}: 'retrieved_caption' equals 'image_caption' (R must be a different text)")
            if check_images:
                try:
                    load_image(image)
                except InputError as e:
                    raise InputError(f"{where}: {e}") from None
        (instruction, response), *followups = turns
        out.append(TGAExample(ex_id, image, instruction, response, caption, retrieved,
                              {k: v for k, v in obj.items() if k not in KNOWN}, tuple(followups)))
    return out


def entry(ex_id: str, image: str, instruction: str, response: str, caption: str, retrieved: str | None,
          **extra) -> dict:
    """One single-turn image entry in the file format."""
    out = {"id": ex_id, "image": image,
           "conversations": [{"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{instruction}"},
                             {"from": "gpt", "value": response}],
           "image_caption": caption}
    if retrieved is not None:
        out["retrieved_caption"] = retrieved
    return {**out, **extra}
