"""The one resumable loop over batches of items: tensors and JSON rows per batch, checkpointed after each batch,
resumed into the same run only, split between processes under ``accelerate launch``.

    >>> def work(start, stop):                            # items [start, stop) -> what they produced
    ...     return Part({"mean": states[start:stop]}, [{"item": i} for i in range(start, stop)])
    >>> done = run_batched(len(pairs), 8, work, key=run_key(...), checkpoint="out/.partial.safetensors")
    >>> done.tensors["mean"].shape, len(done.rows)

Each tensor is concatenated along dim 0 over the batches in item order (its first dimension need not be the
number of items: a batch may give rows for some of its items only). A checkpoint holds every finished batch of
the run its key names; a rerun with the same key continues after them, one with another key starts afresh and says
so (:func:`~safety_probe.core.resume.resumable`). The caller removes the checkpoint once its results are written.

Progress is a tqdm bar with an ETA, ticking per batch by default; a :class:`Ticks` counts work in units of about
equal time (e.g. block runs, when some items cost much more than others) and lets ``work`` tick inside a batch:

    >>> ticks = Ticks(cost=lambda start, stop: 3 * (stop - start), unit="forward")
    >>> def work(start, stop):
    ...     for run in range(3):
    ...         forward(start, stop)
    ...         ticks.advance(stop - start)          # per forward, not per batch
    >>> run_batched(n, 8, work, key=key, ticks=ticks)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from safety_probe.core.errors import InputError
from safety_probe.core.files import read_tensors, write_tensors
from safety_probe.core.resume import resumable
from safety_probe.core.shards import batch_share, gather_shards, shard_path

if TYPE_CHECKING:
    from accelerate import PartialState


@dataclass
class Part:
    """What some items produced: ``tensors`` (name -> tensor, concatenated along dim 0) and ``rows`` (JSON objects)."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    done: int = 0
    """Items covered (for resuming)."""

    @classmethod
    def join(cls, parts: list[Part]) -> Part:
        """The parts one after the other."""
        names = dict.fromkeys(name for part in parts for name in part.tensors)
        tensors = {name: torch.cat([p.tensors[name] for p in parts if name in p.tensors]) for name in names}
        return cls(tensors, [row for p in parts for row in p.rows], sum(p.done for p in parts))

    def save(self, path: Path, key: str) -> None:
        """Write this part (tensors, rows, items covered, run key) to the safetensors file ``path`` atomically."""
        write_tensors(path, self.tensors, {"run_key": key, "rows": json.dumps(self.rows), "done": str(self.done)})

    @classmethod
    def load(cls, path: Path, what: str) -> tuple[Part, str | None]:
        """A part written by :meth:`save` and its run key; InputError naming ``what`` when unreadable."""
        tensors, metadata = read_tensors(path, what)
        try:
            part = cls(tensors, json.loads(metadata["rows"]), int(metadata["done"]))
        except (KeyError, ValueError):
            raise InputError(f"{path}: not a {what} (no rows or item count in its metadata)") from None
        return part, metadata.get("run_key")


class Ticks:
    """How :func:`run_batched` counts progress: ``cost(start, stop)`` units for the items ``[start, stop)`` (default:
    one per item), named ``unit``; ``work`` may :meth:`advance` the bar inside a batch, and each finished batch is
    settled to its cost. Units of about equal time keep the ETA honest when items differ in cost."""

    def __init__(self, cost: Callable[[int, int], int] | None = None, unit: str = "pair"):
        self.cost = cost or (lambda start, stop: stop - start)
        self.unit = unit
        self.bar: tqdm | None = None
        self._in_batch = 0

    def advance(self, n: int) -> None:
        """``n`` more units done inside the current batch."""
        self._in_batch += n
        if self.bar is not None:
            self.bar.update(n)

    def settle(self, start: int, stop: int) -> None:
        """The batch ``[start, stop)`` is done: the bar moves to the end of its cost."""
        if self.bar is not None:
            self.bar.update(max(self.cost(start, stop) - self._in_batch, 0))
        self._in_batch = 0


def _resume(checkpoint: Path, key: str, what: str) -> Part:
    """The finished batches in ``checkpoint`` when they belong to run ``key``; else nothing (said in one line)."""
    if not checkpoint.is_file():
        return Part()
    try:
        part, stored = Part.load(checkpoint, what)
    except InputError:
        stored, part = None, Part()
    return part if resumable(checkpoint, stored, key, what) else Part()


def run_batched(n_items: int, batch_size: int, work: Callable[[int, int], Part], *, key: str,
                checkpoint: str | Path | None = None, processes: PartialState | None = None, progress: bool = True,
                desc: str = "", what: str = "checkpoint", ticks: Ticks | None = None) -> Part:
    """Run ``work(start, stop)`` over the items in batches of ``batch_size`` and join what they produced, in item order.

    With ``checkpoint`` every finished batch is saved there and a rerun of the same ``key`` resumes after them. With
    ``processes`` (accelerate's state, several processes) each process runs a contiguous share of whole batches into
    its own shard beside ``checkpoint`` (required then) and every process returns the whole joined result. With
    ``progress`` (the main process only) a bar named ``desc`` counts the items, or ``ticks``' units.
    """
    if processes is not None and checkpoint is None:
        raise InputError("a run across several processes needs a checkpoint path (its shards are written beside it)")
    start, stop = batch_share(n_items, batch_size, processes)
    path = None if checkpoint is None else Path(checkpoint)
    if processes is not None:
        path = shard_path(path, processes.process_index, processes.num_processes)
    done = _resume(path, key, what) if path is not None else Part()
    parts = [done]
    show = progress and (processes is None or processes.is_main_process)
    ticks = ticks or Ticks()
    batches = [(i, min(i + batch_size, stop)) for i in range(start, stop, batch_size)]
    resumed = start + done.done
    ticks.bar = tqdm(total=sum(ticks.cost(a, b) for a, b in batches), desc=desc, unit=ticks.unit, disable=not show,
                     initial=sum(ticks.cost(a, b) for a, b in batches if b <= resumed))
    for i, end in (batch for batch in batches if batch[0] >= resumed):
        part = work(i, end)
        part.done = end - i
        parts.append(part)
        if path is not None:
            Part.join(parts).save(path, key)
        ticks.settle(i, end)
    ticks.bar.close()
    ticks.bar = None
    share = Part.join(parts)
    if path is not None and (processes is not None or share.done == 0):
        share.save(path, key)  # every shard exists, also an empty one
    if processes is None:
        return share
    shards = gather_shards(processes, checkpoint, lambda p: Part.load(p, what)[0])
    return Part.join(shards)
