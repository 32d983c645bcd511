"""`safety-probe caption`: one-sentence captions of images by a VLM, resumable, merged into pairs."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from safety_probe.cli.options import ModelOptions, load_model
from safety_probe.cli.presets import is_organism
from safety_probe.core.checks import check_number, check_text
from safety_probe.core.errors import InputError
from safety_probe.core.files import check_input_path


@dataclass
class CaptionConfig(ModelOptions):
    """safety-probe caption: one-sentence captions of images (greedy, batched, resumable), optionally merged into
    a pairs file (docs/caption.md)."""

    images: str = ""
    """A folder of images (searched recursively, sorted by path, hidden files skipped) or a pairs JSONL file."""
    out: str = "captions.jsonl"
    """Captions JSONL, one row per image (config in OUT.run.json); a rerun with the same model and prompt captions
    only the images it lacks."""
    prompt: str | None = None
    """Caption prompt. Default: LLaVA-1.5's "Provide a one-sentence caption for the provided image."; with the
    organism, the instruction it was trained to answer with a description, "Describe this image."."""
    batch_size: int = 8
    """Images per generation batch."""
    max_new_tokens: int = 48
    """Generation length (a sentence); the caption is the generation's first sentence."""
    overwrite: bool = False
    """Caption every image again, also those --out already holds captions of with the same model and prompt (an --out
    written with another model or prompt is always started afresh, with a note)."""
    merge: str | None = None
    """Write the --images pairs file with the captions filled in to this path (pairs input only)."""
    replace_captions: bool = False
    """--merge: replace the captions the pairs already have (default: keep them)."""

    def validate(self) -> None:
        """Every option checked before any work: one line naming the option and what it allows."""
        from safety_probe.core.files import check_out_file

        if not self.images:
            raise InputError("--images is required: a folder of images or a pairs JSONL file")
        check_number(self, "batch_size", 1)
        check_number(self, "max_new_tokens", 1)
        check_text(self, "prompt")
        check_text(self, "out", required=True)
        check_out_file(self.out)
        if self.merge is not None:
            check_out_file(self.merge, "--merge")
            if Path(self.merge).resolve() in (Path(self.images).resolve(), Path(self.out).resolve()):
                raise InputError(f"--merge {self.merge} would overwrite --images or --out: give another file")
        images = Path(self.images)
        if not images.exists():
            raise InputError(f"--images: no such folder or pairs file: {images}")
        if self.merge and images.is_dir():
            raise InputError("--merge needs a pairs file as --images (a folder has no pairs to fill)")
        if not images.is_dir():
            check_input_path(images, "--images")
        super().validate()


def run_caption(cfg: CaptionConfig) -> Path:
    """Run `safety-probe caption` (holding the lock of its captions file); returns the captions file."""
    from safety_probe.core.lock import output_lock

    with output_lock(cfg.out, folder=False):
        return _run_caption(cfg)


def _run_caption(cfg: CaptionConfig) -> Path:
    from safety_probe.caption import DEFAULT_PROMPT, CaptionFile, caption_images, merge_captions, read_source
    from safety_probe.core.files import write_json
    from safety_probe.core.runinfo import run_info
    from safety_probe.data.pairs import write_pairs

    started = time.time()
    note = None
    if cfg.prompt is None and is_organism(cfg.model):
        from safety_probe.cli import presets

        cfg, note = replace(cfg, prompt=presets.caption_prompt()), presets.note(cfg.model, "caption prompt")
    cfg = replace(cfg, prompt=cfg.prompt or DEFAULT_PROMPT)
    source = read_source(cfg.images)
    store = CaptionFile(cfg.out, cfg.model, cfg.prompt, cfg.overwrite)
    run = caption_images(load_model(cfg), source, store, cfg.batch_size, cfg.max_new_tokens)
    for warning in run.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"captioned {run.generated} images ({run.skipped} already done) -> {cfg.out}")
    merged = None
    if cfg.merge:
        pairs = merge_captions(source, store.rows, cfg.replace_captions)
        merged = {"path": str(write_pairs(pairs, cfg.merge)), "uncaptioned": sum(p.caption is None for p in pairs)}
        if merged["uncaptioned"]:
            print(f"warning: {merged['uncaptioned']} of {len(pairs)} merged pairs have no caption", file=sys.stderr)
        print(f"pairs with captions -> {cfg.merge}")
    write_json(f"{cfg.out}.run.json", run_info(cfg, started, note=note, n_images=len(run.rows), generated=run.generated,
                                               skipped=run.skipped, empty=run.empty, refused=run.refused, merge=merged))
    return Path(cfg.out)
