"""The refusal token set K: the first tokens of the model's own refusals, or whole-word tokens of a word list.

    >>> k = refusal_tokens_from_responses(tokenizer, first_tokens, refused)   # from greedy text-run answers
    >>> k.ids                                                                 # {token id: token string}

Paper: Xu et al., ICLR 2025, §3 (the "sorry" tokens of Algorithm 1). K must come from the model itself: the
released code used Mistral's "▁sorry" and "▁I", and generic pieces such as "I" open answers as often as
refusals on other models.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Words whose whole-word token enters the fallback refusal set K when the model's own refusals are not
#: available (paper §3's "sorry" tokens). Openings such as "I" stay out: they open answers just as often.
DEFAULT_REFUSAL_WORDS: tuple[str, ...] = (
    "Sorry", "sorry", "cannot", "unable", "Unfortunately", "apologize", "Apologies", "apologies",
)

def refusal_token_ids(
    tokenizer, words: Sequence[str] = DEFAULT_REFUSAL_WORDS, extra_phrases: Sequence[str] = ()
) -> dict[int, str]:
    """Fallback refusal token set K: token id → token string, whole-word tokens of refusal words only.

    For each word (and the first word of each of ``extra_phrases``, e.g. the model's own refusal sentence) it
    takes the vocabulary entries for the word bare and with the SentencePiece ``▁`` / byte-level ``Ġ`` space
    marker, and the first sub-token of the word encoded with and without a leading space when that sub-token
    is the whole word. Fragments ("sor" of "sorry") never enter: they stand for far more than refusals.
    """
    vocab: Mapping[str, int] = tokenizer.get_vocab()
    unk = getattr(tokenizer, "unk_token_id", None)
    firsts = [phrase.split()[0].strip(",.!:;") for phrase in extra_phrases if phrase.strip()]
    ids: set[int] = set()
    for word in dict.fromkeys([*words, *firsts]):
        for text in (word, " " + word):
            first = _first_content_token(tokenizer, text)
            if first is not None and tokenizer.decode([first]).strip() == word:
                ids.add(first)
        ids.update(vocab[w] for w in (word, "▁" + word, "Ġ" + word) if w in vocab)
    ids.discard(unk)
    return {i: tokenizer.convert_ids_to_tokens(i) for i in sorted(ids)}


def _first_content_token(tokenizer, text: str) -> int | None:
    """First sub-token of ``text`` that is not a bare space marker (SentencePiece may emit a lone ``▁``)."""
    for i in tokenizer.encode(text, add_special_tokens=False):
        if tokenizer.decode([i]).strip():
            return int(i)
    return None


@dataclass(frozen=True)
class RefusalTokens:
    """The refusal token set K and where it came from.

    ``source``: ``"generated"`` (the first tokens of the model's own refusals) or ``"phrases"`` (the fallback
    word list). ``refusals`` / ``answers``: per token of K, how many refused / answered responses opened with it.
    """

    ids: dict[int, str]
    source: str
    refusals: dict[int, int] = field(default_factory=dict)
    answers: dict[int, int] = field(default_factory=dict)

    def summary(self) -> dict:
        """The ``refusal_tokens`` record of ``layers.json``."""
        return {"source": self.source,
                "tokens": {str(i): {"token": t, "opens_refusals": self.refusals.get(i, 0),
                                    "opens_answers": self.answers.get(i, 0)} for i, t in self.ids.items()}}


def refusal_tokens_from_responses(
    tokenizer, first_tokens: Sequence[int | None], refused: Sequence[bool], harmful: Sequence[bool] | None = None
) -> RefusalTokens | None:
    """K = the first generated tokens of the harmful requests' responses judged refusals; None when none refused.

    ``first_tokens[i]`` is response i's first generated token id (the token the logit lens at the last prompt
    position predicts), None for an empty response; ``harmful[i]`` (default all True) marks the clearly harmful
    requests K is drawn from. Answers (responses not refused, harmful or not) opening with a token of K are
    counted, so a token that opens answers as often as refusals is visible in ``layers.json``.
    """
    harmful = [True] * len(refused) if harmful is None else list(harmful)
    if not len(first_tokens) == len(refused) == len(harmful):
        raise ValueError(f"{len(first_tokens)} first tokens, {len(refused)} verdicts, {len(harmful)} labels")
    refusals = Counter(t for t, r, h in zip(first_tokens, refused, harmful) if r and h and t is not None)
    if not refusals:
        return None
    answers = Counter(t for t, r in zip(first_tokens, refused) if not r and t in refusals)
    ids = {i: tokenizer.convert_ids_to_tokens(i) for i in sorted(refusals)}
    return RefusalTokens(ids, "generated", dict(refusals), dict(answers))
