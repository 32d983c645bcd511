"""`safety-probe data organism | convert`: pairs from the organism's world or from a benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simple_parsing import field as option

from safety_probe.cli.presets import ORGANISM
from safety_probe.core.checks import check_number, check_text
from safety_probe.core.errors import InputError


@dataclass
class DataConfig:
    """safety-probe data organism | convert: render the organism's held-out pairs, or convert a benchmark to pairs."""

    world: str = option(default=ORGANISM, positional=True, nargs="?")
    """What to do: organism (render pairs of its synthetic world) or convert (a benchmark to a pairs file)."""
    seed: int = 1234
    """organism: random seed; seeds the organism was trained on are listed in docs/organism.md."""
    n: int = 400
    """organism: number of pairs."""
    out: str = "data/organism"
    """organism: output folder (images/ and pairs.jsonl). convert: the pairs file to write."""
    harmful_share: float = 0.5
    """organism: share of harmful pairs."""
    format: str = "auto"
    """convert: the benchmark's format (mmsafetybench, figstep, vlguard, hades, jailbreakv, mossbench, siuo,
    spavl, imagefolder) or auto (recognised from its layout); docs/datasets/."""
    root: str = ""
    """convert: the benchmark's local folder, in its published layout."""
    split: str | None = None
    """convert: the benchmark's split or subset, where it has several (docs/datasets/<format>.md)."""
    harmful_classes: list[str] | None = None
    """convert, imagefolder: the class folders that are harmful (default: all but benign/normal/safe/...)."""


    def validate(self) -> None:
        """Every option checked before any work: one line naming the option and what it allows."""
        from safety_probe.core.files import check_input_path, check_out_dir, check_out_file
        from safety_probe.data.benchmarks import get_reader

        if self.world not in (ORGANISM, "convert"):
            raise InputError(f"unknown data command {self.world!r}: use 'organism' or 'convert'")
        check_text(self, "out", required=True)
        if self.world == "convert":
            if self.format != "auto":
                get_reader(self.format)  # an unknown name: one line listing the known ones
            if not self.root:
                raise InputError("--root is required: the benchmark's local folder")
            check_input_path(self.root, "--root", folder=True)
            check_out_file(self.out)
            return
        check_number(self, "seed", 0, 2**32 - 1)
        check_number(self, "n", 1)
        check_number(self, "harmful_share", 0.0, 1.0)
        check_out_dir(self.out)


def make_data(cfg: DataConfig) -> Path:
    """Run `safety-probe data` (holding the lock of its output); returns the pairs file."""
    from safety_probe.core.lock import output_lock

    if cfg.world == "convert":
        from safety_probe.data.benchmarks import convert

        with output_lock(cfg.out, folder=False):
            options = {"harmful_classes": cfg.harmful_classes} if cfg.harmful_classes else {}
            path = convert(cfg.format, cfg.root, cfg.out, cfg.split, **options)
        print(f"wrote {sum(1 for line in path.read_text(encoding='utf-8').splitlines() if line.strip())} pairs -> {path}")
        return path
    from safety_probe.organism import world

    with output_lock(cfg.out):
        path = world.write_pairs(seed=cfg.seed, n=cfg.n, out_dir=Path(cfg.out), harmful_share=cfg.harmful_share)
    print(f"wrote {cfg.n} pairs -> {path}")
    return path
