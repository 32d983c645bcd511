"""One hook primitive over decoder blocks: read their outputs, edit their inputs or outputs, stop early.

    >>> with Trace(vlm.layers, [3, 5], stop=True) as trace:       # the forward ends after block 5
    ...     vlm.model(**batch.inputs)
    >>> trace.outputs[5].shape                                     # [batch, seq, d_model]

    >>> def to_caption(layer, hidden):                             # patching: return the new output
    ...     return hidden + mask * (target - image_mean)
    >>> with Trace(vlm.layers, [4], edit_output=to_caption, retain=False):
    ...     logits = vlm.model(**batch.inputs).logits

    >>> with start_at(vlm.layers, 4, states):                     # blocks 0-4 skipped: block 4 "outputs" states
    ...     vlm.model(**batch.inputs)                              # only blocks 5.. compute

Every hook is removed when the ``with`` block exits, also when it exits by an exception; the
:class:`StopForward` that ``stop`` raises inside the forward is swallowed there. Outputs keep their autograd
graph unless the forward runs under ``torch.no_grad()``. Layer l = output of block l (0-based) =
TransformerLens ``blocks.{l}.hook_resid_post``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType

import torch
from torch import nn

Edit = Callable[[int, torch.Tensor], "torch.Tensor | None"]


class StopForward(Exception):
    """Raised inside a forward pass after the last block a :class:`Trace` needs; :class:`Trace` swallows it."""


class Trace:
    """Forward hooks on ``blocks[l]`` for l in ``layers``, registered on enter and removed on exit (or :meth:`close`).

    ``retain``: keep each block's output in ``outputs[l]`` (``[batch, seq, d_model]``). ``edit_output(l, h)``
    / ``edit_input(l, h)``: called with a block's output / input hidden states; a returned tensor replaces them
    (None keeps them). ``stop``: raise :class:`StopForward` after the deepest of ``layers`` (or after block
    ``stop`` when an int), so nothing above it runs. ``part``: which element of a module that returns a tuple is
    read and edited (0: the hidden states; 1 of an attention module under eager attention: its weights).
    """

    def __init__(self, blocks: Sequence[nn.Module] | Mapping[int, nn.Module], layers: Iterable[int], *, retain: bool = True,
                 edit_output: Edit | None = None, edit_input: Edit | None = None, stop: bool | int = False,
                 part: int = 0):
        self.blocks = blocks
        self.layers = sorted({int(v) for v in layers})
        self.retain, self.edit_output, self.edit_input, self.part = retain, edit_output, edit_input, part
        if stop is True:
            self.stop_after = self.layers[-1] if self.layers else None
        else:
            self.stop_after = None if stop is False else int(stop)
        self.outputs: dict[int, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> Trace:
        try:
            hooked = set(self.layers) | ({self.stop_after} if self.stop_after is not None else set())
            for layer in sorted(hooked):
                block = self.blocks[layer]
                if self.edit_input is not None and layer in self.layers:
                    self._handles.append(block.register_forward_pre_hook(self._pre_hook(layer), with_kwargs=True))
                wanted = layer in self.layers
                if (wanted and (self.retain or self.edit_output is not None)) or layer == self.stop_after:
                    self._handles.append(block.register_forward_hook(self._hook(layer, wanted)))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)

    def close(self) -> None:
        """Remove every hook (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pre_hook(self, layer: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            new = self.edit_input(layer, hidden)
            if new is None:
                return None
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}
        return hook

    def _hook(self, layer: int, wanted: bool):
        def hook(module, args, output):
            hidden = output[self.part] if isinstance(output, tuple) else output
            if wanted and self.edit_output is not None:
                new = self.edit_output(layer, hidden)
                if new is not None:
                    hidden = new
                    if isinstance(output, tuple):
                        output = (*output[:self.part], new, *output[self.part + 1:])
                    else:
                        output = new
            if wanted and self.retain:
                self.outputs[layer] = hidden
            if layer == self.stop_after:
                raise StopForward(layer)
            return output
        return hook


class _Given(nn.Module):
    """A stand-in for a decoder block: returns ``value`` (or its input when None) whatever it is called with."""

    def __init__(self, value: torch.Tensor | None = None):
        super().__init__()
        self.value = value

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states if self.value is None else self.value.to(hidden_states.device, hidden_states.dtype)


@contextmanager
def start_at(blocks: nn.ModuleList, layer: int, states: torch.Tensor) -> Iterator[None]:
    """Run the forwards in the block from block ``layer + 1`` on, with ``states`` ``[B, T, d]`` as block ``layer``'s
    output: blocks ``0..layer`` are swapped for stand-ins that compute nothing (decoder blocks return their hidden
    states in transformers 5), and put back on exit, also by an exception. Patching at block ``layer`` then costs
    the blocks above it only; the states below are unchanged by construction, so the caller passes them patched."""
    saved = [blocks[i] for i in range(layer + 1)]
    try:
        for i in range(layer):
            blocks[i] = _Given()
        blocks[layer] = _Given(states)
        yield
    finally:
        for i, block in enumerate(saved):
            blocks[i] = block
