"""Data-parallel runs under ``accelerate launch``: whole batches split between processes, shards merged in order.

    >>> start, stop = batch_share(len(pairs), batch_size=8, processes=state)   # this process's pairs
    >>> ...                                                                  # work, writing shard_path(...)
    >>> parts = gather_shards(state, checkpoint, read)                        # every shard, in pair order

Each process takes a contiguous run of the single-process run's batches (accelerate's
``split_between_processes`` over the batch starts), so every batch is the same batch, padded the same way, as in
one process, and the merged result is bit-identical to a single-process run on the same hardware. Shards are
plain files beside the given path (a filesystem every process sees); the main process removes them after every
process has read them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from accelerate import PartialState

T = TypeVar("T")


def batch_share(n_items: int, batch_size: int, processes: PartialState | None) -> tuple[int, int]:
    """The ``[start, stop)`` items of this process: whole batches of ``batch_size``, contiguous, in rank order
    (all items without ``processes``; an empty range where there are fewer batches than processes)."""
    if processes is None:
        return 0, n_items
    with processes.split_between_processes(list(range(0, n_items, batch_size))) as starts:
        return (starts[0], min(starts[-1] + batch_size, n_items)) if starts else (n_items, n_items)


def shard_path(path: str | Path, rank: int, world: int) -> Path:
    """The shard of process ``rank`` of ``world`` beside ``path``: ``x.partial.jsonl`` -> ``x.partial.rank1of2.jsonl``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}of{world}{path.suffix}")


def gather_shards(processes: PartialState, path: str | Path, read: Callable[[Path], T]) -> list[T]:
    """Once every process has written its shard of ``path``: every shard read with ``read``, in rank order; the
    main process then removes them (after all processes have read them)."""
    world = processes.num_processes
    shards = [shard_path(path, rank, world) for rank in range(world)]
    processes.wait_for_everyone()
    parts = [read(shard) for shard in shards]
    processes.wait_for_everyone()
    if processes.is_main_process:
        for shard in shards:
            shard.unlink(missing_ok=True)
    return parts
