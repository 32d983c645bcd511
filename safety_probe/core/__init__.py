"""Foundations every stage uses: one-line errors and option checks (``errors``, ``checks``), atomic files and checked
reads (``files``), the lock of an output folder (``lock``), the one run key and resume policy (``resume``), the one
resumable batch loop (``batches``), process shards (``shards``) and the run record (``runinfo``)."""
