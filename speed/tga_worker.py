"""Times TGA training runs for :mod:`speed.tga_step`, under whichever safety_probe ``PYTHONPATH`` puts first.

Run as a script (``python speed/tga_worker.py``), never imported by the package: it reads one JSON request a line
on stdin — ``{"model": folder, "data": tga.json, "options": {flat TGAConfig options}, "out": folder}`` — loads the
model afresh, trains with those options and writes ``{"seconds": wall time of train(), "steps": ..., "log": last
log row}`` as one line on stdout (training's own output goes to stderr). It speaks to both TGAConfig layouts: the flat one of the code before issue 25
and the nested one built by ``TGAConfig.of``. One accelerate mixed-precision setting per process (accelerate keeps
it for the process), so the caller starts one worker per setting.
"""

from __future__ import annotations

import json
import shutil
import sys
import time


def main() -> None:
    import torch
    import transformers

    from safety_probe.tga.config import TGAConfig
    from safety_probe.tga.data import load_tga_data
    from safety_probe.tga.train import train

    try:
        from safety_probe.models.load import load_vlm
    except ImportError:  # the layout before the stage packages
        from safety_probe.models.vlm import load_vlm

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    replies, sys.stdout = sys.stdout, sys.stderr  # training prints its progress; stdout carries the replies only
    examples = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["data"] not in examples:
            examples[request["data"]] = load_tga_data(request["data"])
        options = request["options"]
        cfg = TGAConfig.of(**options) if hasattr(TGAConfig, "of") else TGAConfig(**options)
        vlm = load_vlm(request["model"], device="cpu")
        shutil.rmtree(request["out"], ignore_errors=True)
        start = time.perf_counter()
        result = train(vlm, cfg, examples[request["data"]], request["out"])
        seconds = time.perf_counter() - start
        shutil.rmtree(request["out"], ignore_errors=True)
        print(json.dumps({"seconds": seconds, "steps": result.steps, "log": result.log[-1]}), file=replies, flush=True)


if __name__ == "__main__":
    main()
