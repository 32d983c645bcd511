"""The retrieved related text R of TGA's training rows (paper §4: the nearest text to the image under a retrieval
model, its own caption excluded), filled in where the data lack it.

    >>> examples = fill_retrieved(examples, "models/clip", corpus=read_corpus("captions.txt"))
"""

from __future__ import annotations

from dataclasses import replace

from safety_probe.core.errors import InputError
from safety_probe.data.pairs import load_image
from safety_probe.models.clip import Retriever
from safety_probe.tga.data import TGAExample


def fill_retrieved(examples: list[TGAExample], clip: str | Retriever | None, corpus: list[str] | None = None
                   ) -> list[TGAExample]:
    """Image rows without ``retrieved`` get the nearest text of ``corpus`` under CLIP, own caption excluded.

    ``corpus`` defaults to the data set's own captions; without a CLIP it is an error naming ``--clip``.
    Text-only rows need no R.
    """
    missing = [i for i, ex in enumerate(examples) if ex.image is not None and not ex.retrieved]
    if not missing:
        return examples
    if clip is None:
        raise InputError(f"{len(missing)} training rows have no 'retrieved_caption': pass --clip to retrieve R "
                         "(or --retrieved-in-context false)")
    corpus = corpus or list(dict.fromkeys(ex.caption for ex in examples if ex.caption))
    retriever = clip if isinstance(clip, Retriever) else Retriever(clip)
    found = retriever.retrieve([load_image(examples[i].image) for i in missing],
                               [examples[i].caption or "" for i in missing], corpus)  # "": nothing to exclude
    out = list(examples)
    for i, r in zip(missing, found):
        out[i] = replace(examples[i], retrieved=r[0])
    return out
