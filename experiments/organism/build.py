"""Build the model organism: ``python experiments/organism/build.py --seed 0 --out safety_probe/organism/weights``.

Trains the CLIP tower and the tiny LLaVA from scratch (see docs/organism.md), saves both Hugging Face folders
under ``--out``, evaluates on held-out pairs and writes ``--out/build_metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from safety_probe.analysis.analyze import analyze
from safety_probe.core.files import write_json
from safety_probe.data.pairs import load_pairs
from safety_probe.eval.evaluate import evaluate
from safety_probe.models.load import load_vlm
from safety_probe.organism import world
from safety_probe.organism.train import Config, build
from safety_probe.probe.record import record


def heldout_report(model_dir: Path, pairs_dir: Path, seed: int, n: int) -> dict:
    """DSR / over-refusal / task accuracy and the located safety layers of the saved organism, measured by the
    toolkit itself on ``n`` fresh pairs of world seed ``seed`` (never trained on)."""
    pairs = load_pairs(world.write_pairs(seed, n, pairs_dir))
    vlm = load_vlm(model_dir)
    metrics = evaluate(vlm, pairs, batch_size=50, progress=False).metrics
    layers = analyze(vlm, pairs, record(vlm, pairs, progress=False), progress=False).summary()
    keep = ("safety_layers", "refusal_tokens", "support", "text_run_refusal", "notes", "warnings")
    return {"eval": metrics, "layers": {k: layers[k] for k in keep}
            | {"algorithm1_share_found": layers["algorithm1"]["share_found"],
               "algorithm1_benign_false_positive": layers["algorithm1"]["benign_false_positive"],
               "scores": layers["scores"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("safety_probe/organism/weights"))
    ap.add_argument("--eval-n", type=int, default=400, help="held-out pairs to evaluate (0 = skip)")
    ap.add_argument("--eval-seed", type=int, default=1234)
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="save/load each stage's result here (development only: edits to a stage need a fresh dir)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every step count (smoke tests)")
    ap.add_argument("--pool-scale", type=float, default=1.0, help="multiply the image pool size (smoke tests)")
    ap.add_argument("--report-only", action="store_true",
                    help="measure the held-out report of the build already in --out and update its build_metrics.json")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a Config field (repeatable), e.g. --set pool_spread=1.0")
    args = ap.parse_args()
    if args.report_only:
        path = args.out / "build_metrics.json"
        metrics = json.loads(path.read_text())
        with tempfile.TemporaryDirectory() as tmp:
            metrics |= heldout_report(args.out / "llava", Path(tmp), args.eval_seed, args.eval_n)
        write_json(path, metrics)
        print(json.dumps(metrics["layers"]["safety_layers"]), json.dumps(metrics["eval"]["overall"]))
        return
    cfg = Config(seed=args.seed)
    for item in args.set:
        key, _, value = item.partition("=")
        if not hasattr(cfg, key):
            raise SystemExit(f"--set {item}: Config has no field {key!r}")
        kind = type(getattr(cfg, key))
        if kind is bool and value.lower() not in ("true", "false", "1", "0"):
            raise SystemExit(f"--set {item}: {key} takes true or false")
        setattr(cfg, key, value.lower() in ("true", "1") if kind is bool else kind(value))
    if args.scale != 1.0:
        for k in ("lm_steps", "clip_steps", "proj_steps", "sft_steps"):
            setattr(cfg, k, max(2, int(getattr(cfg, k) * args.scale)))
    cfg.pool_toxic = int(cfg.pool_toxic * args.pool_scale)
    cfg.pool_benign = int(cfg.pool_benign * args.pool_scale)
    t = time.time()
    metrics = build(args.out, cfg=cfg, cache_dir=args.cache_dir)
    if args.eval_n:
        t_eval = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            metrics |= heldout_report(args.out / "llava", Path(tmp), args.eval_seed, args.eval_n)
        metrics["times_s"]["eval"] = time.time() - t_eval
    metrics["times_s"]["wall"] = time.time() - t
    write_json(args.out / "build_metrics.json", metrics)
    for key in ("eval", "layers", "times_s"):
        print(json.dumps(metrics.get(key), default=str))


if __name__ == "__main__":
    main()
