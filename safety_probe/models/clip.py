"""Image → related text with a CLIP-style model (TGA's retrieved text R, paper §4), and CLIP zero-shot scores.

    >>> r = Retriever("models/clip-vit-large-patch14-336")   # any transformers CLIPModel folder
    >>> r.retrieve([image], ["a red cup on a table"], corpus)[0]
    ['two red cups on a table']                           # nearest corpus text that is not the caption itself

The paper retrieved with BEiT-3 from ~1.16M captions plus ~5K toxic texts; any ``transformers.CLIPModel``
folder (model + processor) works here. The image's own caption is always excluded (compared after trimming
spaces, case and a final full stop), so R is a *related* text, never the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from safety_probe.core.errors import InputError
from safety_probe.core.files import read_text
from safety_probe.data.pairs import normalise_text


def read_corpus(path: str | Path) -> list[str]:
    """A retrieval corpus: a UTF-8 text file, one text a line (blank lines skipped, duplicates kept once)."""
    texts = [t.strip() for t in read_text(path, "corpus file").splitlines() if t.strip()]
    if len(texts) < 2:
        raise InputError(f"{path}: a retrieval corpus needs at least 2 texts")
    return list(dict.fromkeys(texts))


class Retriever:
    """A CLIP model and processor loaded from a local folder; embeddings are L2-normalised."""

    def __init__(self, path: str | Path, *, device: str = "cpu", batch_size: int = 256):
        from transformers import AutoProcessor, CLIPModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise InputError(f"no CLIP model at {path} (expected a transformers CLIPModel folder)")
        self.path = path
        self.model = CLIPModel.from_pretrained(str(path), use_safetensors=True).to(device).eval()
        self.processor = AutoProcessor.from_pretrained(str(path))
        self.device = device
        self.batch_size = batch_size
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}

    @staticmethod
    def _features(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, d]`` normalised text embeddings (cached per corpus)."""
        key = tuple(texts)
        if key in self._cache:
            return self._cache[key]
        tok = self.processor.tokenizer
        parts = []
        for i in range(0, len(texts), self.batch_size):
            enc = tok(list(texts[i:i + self.batch_size]), padding=True, truncation=True, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            parts.append(self._features(self.model.get_text_features(**enc)).float())
        emb = torch.nn.functional.normalize(torch.cat(parts), dim=-1).cpu()
        self._cache[key] = emb
        return emb

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``[N, d]`` normalised image embeddings."""
        parts = []
        for i in range(0, len(images), self.batch_size):
            px = self.processor.image_processor(images=[im.convert("RGB") for im in images[i:i + self.batch_size]],
                                                return_tensors="pt")["pixel_values"].to(self.device)
            parts.append(self._features(self.model.get_image_features(pixel_values=px)).float())
        return torch.nn.functional.normalize(torch.cat(parts), dim=-1).cpu()

    def retrieve(self, images: Sequence[Image.Image], captions: Sequence[str], corpus: Sequence[str],
                 k: int = 1) -> list[list[str]]:
        """For each image, the ``k`` corpus texts most similar to it, its own caption excluded."""
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        corpus = list(dict.fromkeys(corpus))
        if len(corpus) < k + 1:
            raise InputError(f"retrieval corpus too small ({len(corpus)} texts) for k={k} with the caption excluded")
        sims = self.embed_images(images) @ self.embed_texts(corpus).T  # [N, M]
        norm = [normalise_text(t) for t in corpus]
        out = []
        for i, caption in enumerate(captions):
            own = normalise_text(caption)
            row = sims[i].clone()
            for j, t in enumerate(norm):
                if t == own:
                    row[j] = float("-inf")
            top = torch.topk(row, k).indices.tolist()
            out.append([corpus[j] for j in top])
        return out

    def zero_shot(self, images: Sequence[Image.Image], labels: Sequence[str],
                  templates: Sequence[str] = ("{}",)) -> torch.Tensor:
        """``[N, L]`` softmax over ``labels`` with the model's logit scale (CLIP zero-shot classification);
        each label's embedding is the normalised mean over ``templates`` (CLIP's prompt ensembling)."""
        texts = [t.format(label) for label in labels for t in templates]
        label_emb = self.embed_texts(texts).view(len(labels), len(templates), -1).mean(1)
        sims = self.embed_images(images) @ torch.nn.functional.normalize(label_emb, dim=-1).T
        scale = self.model.logit_scale.exp().item()
        return torch.softmax(scale * sims, dim=-1)
