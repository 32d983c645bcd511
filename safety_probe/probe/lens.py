"""Read the model at each block: the logit lens at the last prompt position, kept as a compact trace, and the last
token's attention on a span.

    >>> trace = lens_trace(vlm, states.caption_last, pool_ids=[5, 17], top=50)   # what every locator reads
    >>> trace.pool_logprob.shape                                                  # [n, L, 2]

The lens of block l is p_l = softmax(W_U · norm(h_l)) with the model's final norm and unembedding (at the last
block it is the model's own next-token distribution). A :class:`LensTrace` keeps of it exactly what the locators of
:mod:`safety_probe.analysis.locate` read — the log-probabilities of a pool of candidate refusal tokens, the most
probable tokens of each block with their rise from the block below, and the argmaxes the paper's and the released
code's rules take over the whole vocabulary — so the safety layers can be chosen again, with another K or other
settings, without the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch

from safety_probe.models.hooks import Trace
from safety_probe.models.vlm import VLM

#: Tokens of the largest probability gain p_l − p_{l−1} kept per block (the released code reads its top 5).
GAIN_TOP = 5


@torch.no_grad()
def lens_logprobs(vlm: VLM, hidden: torch.Tensor) -> torch.Tensor:
    """Log-softmax of the logit lens ``[..., vocab]`` of block outputs ``[..., d_model]``, on the CPU."""
    return torch.log_softmax(vlm.logit_lens(hidden), dim=-1).cpu()


def iter_lens_logprobs(vlm: VLM, hidden: torch.Tensor, chunk: int = 8) -> Iterator[torch.Tensor]:
    """:func:`lens_logprobs` of ``[n, L, d]`` over chunks of pairs, so ``n * L * vocab`` never sits in memory at once."""
    for i in range(0, hidden.shape[0], chunk):
        yield lens_logprobs(vlm, hidden[i:i + chunk])


@dataclass
class LensTrace:
    """What the logit lens at the last prompt position says after every block, for n runs.

    ``pool_ids`` ``[P]``: candidate refusal tokens; ``pool_logprob`` ``[n, L, P]`` their log p_l. ``top_ids``
    ``[n, L, C]``: the C most probable tokens of p_l, descending; ``top_logprob`` / ``top_prev_logprob``
    ``[n, L, C]``: their log p_l and log p_{l−1} (block 0: its own, a rise of 0). ``rise_argmax`` ``[n, L]``: the
    token of the largest log p_l − log p_{l−1} over the whole vocabulary (the paper's Algorithm 1; block 0: -1).
    ``gain_top_ids`` ``[n, L, G]``: the G tokens of the largest p_l − p_{l−1} (the released code's; block 0: -1).
    """

    pool_ids: torch.Tensor
    pool_logprob: torch.Tensor
    top_ids: torch.Tensor
    top_logprob: torch.Tensor
    top_prev_logprob: torch.Tensor
    rise_argmax: torch.Tensor
    gain_top_ids: torch.Tensor

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every tensor by name (for saving)."""
        return {prefix + f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str = "") -> LensTrace:
        """The trace :meth:`tensors` wrote."""
        return cls(**{f.name: tensors[prefix + f.name] for f in fields(cls)})

    def subset(self, index: Sequence[int]) -> LensTrace:
        """The rows of the runs at ``index``."""
        idx = torch.as_tensor(list(index), dtype=torch.long)
        return LensTrace(self.pool_ids, *(getattr(self, f.name)[idx] for f in fields(self)[1:]))

    def pool_columns(self, ids: Sequence[int]) -> list[int]:
        """Positions of token ``ids`` in the pool; a token outside it is a ValueError."""
        where = {int(t): i for i, t in enumerate(self.pool_ids.tolist())}
        missing = [i for i in ids if int(i) not in where]
        if missing:
            raise ValueError(f"tokens {missing} are not in the measured pool")
        return [where[int(i)] for i in ids]


@torch.no_grad()
def lens_trace(vlm: VLM, last: torch.Tensor, pool_ids: Sequence[int], top: int = 50, chunk: int = 8) -> LensTrace:
    """The :class:`LensTrace` of last-position states ``[n, L, d]`` (all blocks from 0), with the ``top`` most probable
    tokens of each block and the ``pool_ids`` tokens."""
    parts = [trace_of(lp, pool_ids, top) for lp in iter_lens_logprobs(vlm, last, chunk)]
    return LensTrace(parts[0].pool_ids, *(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(LensTrace)[1:]))


def trace_of(logprobs: torch.Tensor, pool_ids: Sequence[int], top: int = 50) -> LensTrace:
    """The :class:`LensTrace` of lens log-probs ``[n, L, V]`` (blocks consecutive from 0)."""
    lp = torch.as_tensor(logprobs).float()
    if lp.ndim != 3:
        raise ValueError(f"lens log-probs must be [n_runs, n_layers, vocab], got shape {tuple(lp.shape)}")
    pool = torch.as_tensor(sorted({int(i) for i in pool_ids}), dtype=torch.long)
    n, n_layers, vocab = lp.shape
    if pool.numel() and (int(pool.min()) < 0 or int(pool.max()) >= vocab):
        raise ValueError(f"pool token ids must lie in [0, {vocab})")
    top = min(top, vocab)
    top_lp, top_ids = lp.topk(top, dim=-1)
    prev = torch.cat([lp[:, :1], lp[:, :-1]], dim=1)  # block 0 is its own predecessor: no rise
    top_prev = prev.gather(-1, top_ids)
    rise_argmax = torch.full((n, n_layers), -1, dtype=torch.long)
    gain_top = torch.full((n, n_layers, min(GAIN_TOP, vocab)), -1, dtype=torch.long)
    for layer in range(1, n_layers):  # one [n, V] slice at a time
        rise_argmax[:, layer] = (lp[:, layer] - lp[:, layer - 1]).argmax(-1)
        gain = lp[:, layer].exp() - lp[:, layer - 1].exp()
        gain_top[:, layer] = gain.topk(gain_top.shape[-1], dim=-1).indices
    return LensTrace(pool, lp[..., pool], top_ids, top_lp, top_prev, rise_argmax, gain_top)


@contextmanager
def eager_attention(vlm: VLM) -> Iterator[None]:
    """Run the block with the eager attention kernel (the one that computes attention weights), then restore."""
    previous = vlm.model.config._attn_implementation
    if previous == "eager":
        yield
        return
    vlm.model.set_attn_implementation("eager")
    try:
        yield
    finally:
        vlm.model.set_attn_implementation(previous)


def attention_on(vlm: VLM, span: torch.Tensor, last_index: torch.Tensor) -> tuple[Trace, dict[int, torch.Tensor]]:
    """A :class:`~safety_probe.models.hooks.Trace` on every block's attention module and the dict it fills: per block,
    the last prompt token's attention ``[B, H, T, T]`` → ``[B]`` mass on ``span`` ``[B, T]``, mean over heads (needs
    :func:`eager_attention` around the forward). Only the prompt's forward is read: in generation, the later calls
    (one new token each) are not."""
    mass: dict[int, torch.Tensor] = {}

    def read(layer: int, weights: torch.Tensor) -> None:
        if weights is None:
            raise RuntimeError("attention weights are only computed by the eager kernel (use eager_attention)")
        if weights.shape[-2] != span.shape[1] or layer in mass:
            return
        where, last = span.to(weights.device), last_index.to(weights.device)
        rows = torch.arange(len(last), device=weights.device)
        mass[layer] = (weights[rows, :, last, :].float() * where.float()[:, None, :]).sum(-1).mean(-1).cpu()

    modules = [layer.self_attn for layer in vlm.layers]
    return Trace(modules, range(vlm.n_layers), retain=False, edit_output=read, part=1), mass
