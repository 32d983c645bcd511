"""Hand-set weights of a loaded tiny model, so tests know the right answer: blocks that change nothing, one
block that writes a fixed direction, and a bigram chain that makes greedy decoding spell a chosen text.

    >>> vlm = load_vlm(build_tiny_vlm("llava", d, num_hidden_layers=6))     # doctest: +SKIP
    >>> silence_blocks(vlm)                                                 # every block: output = input
    >>> write_direction(vlm, 2, vector)                                     # block 2 adds `vector` everywhere
    >>> spell(vlm, vlm.tokenizer.encode("I'm sorry.", add_special_tokens=False), after=last_prompt_token)

All edits are in place on Llama-style blocks (``self_attn.o_proj``, ``mlp.down_proj``) with an untied unembedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from safety_probe.models.vlm import VLM


@torch.no_grad()
def silence_blocks(vlm: VLM, blocks: Sequence[int] | None = None) -> None:
    """Zero the attention and MLP output projections of ``blocks`` (default all): each block's output equals its input."""
    for b in range(vlm.n_layers) if blocks is None else blocks:
        layer = vlm.layers[b]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()


@torch.no_grad()
def write_direction(vlm: VLM, block: int, vector: torch.Tensor) -> None:
    """Make block ``block`` add ``vector`` ``[d_model]`` to the residual stream at every position and nothing else."""
    layer = vlm.layers[block]
    layer.self_attn.o_proj.weight.zero_()
    old = layer.mlp.down_proj
    new = nn.Linear(old.in_features, old.out_features, bias=True, dtype=old.weight.dtype, device=old.weight.device)
    new.weight.zero_()
    new.bias.copy_(vector.to(new.bias))
    layer.mlp.down_proj = new


def orthonormal(d: int, k: int, seed: int = 0) -> torch.Tensor:
    """``k`` orthonormal vectors ``[k, d]`` (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=gen))
    return q.T.contiguous()


@torch.no_grad()
def spell(vlm: VLM, tokens: Sequence[int], after: int, gain: float = 4.0, seed: int = 0) -> None:
    """A bigram chain: with every block silenced, greedy decoding after token ``after`` yields ``tokens`` then EOS.

    Each chain token gets its own orthonormal embedding and the unembedding row of its successor points along
    it, so the final norm's output at a chain token has its successor as the clear top-1.
    """
    chain = [after, *tokens]
    if len(set(chain)) != len(chain):
        raise ValueError("the chain's tokens (and the token after which it starts) must be distinct")
    eos = vlm.tokenizer.eos_token_id
    embed, unembed = vlm.model.get_input_embeddings().weight, vlm.unembed.weight
    if embed.data_ptr() == unembed.data_ptr():
        raise ValueError("spell needs an untied unembedding")
    q = orthonormal(vlm.d_model, len(chain), seed).to(embed)
    for i, token in enumerate(chain):
        embed[token] = q[i]
        successor = chain[i + 1] if i + 1 < len(chain) else eos
        unembed[successor] = gain * q[i]
